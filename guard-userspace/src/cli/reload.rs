//! `agent-guard reload [--force]`: swap in the policy file, atomically.
use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, Result};

use super::args::ReloadArgs;
use crate::control::{Client, Request};

pub fn run(args: ReloadArgs, socket: &Path) -> Result<ExitCode> {
    let reply = Client::connect(socket)?
        .call(Request::Reload { force: args.force })
        .context("reloading the policy; the previous policy stays in force")?;
    let list = |k: &str| -> String {
        let names: Vec<&str> = reply
            .data
            .get("diff")
            .and_then(|d| d.get(k))
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
            .unwrap_or_default();
        if names.is_empty() {
            "-".into()
        } else {
            names.join(", ")
        }
    };
    println!(
        "policy reloaded ({})\n  added:   {}\n  removed: {}\n  changed: {}",
        reply
            .data
            .get("digest")
            .and_then(|d| d.as_str())
            .unwrap_or("?"),
        list("added"),
        list("removed"),
        list("changed"),
    );
    Ok(ExitCode::SUCCESS)
}
