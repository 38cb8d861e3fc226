//! `agent-guard grants`: live scoped approvals.
use std::{path::Path, process::ExitCode};

use anyhow::Result;
use serde_json::Value;

use super::args::GrantsArgs;
use crate::control::{Client, Request};

pub fn run(args: GrantsArgs, socket: &Path) -> Result<ExitCode> {
    let reply = Client::connect(socket)?.call(Request::Grants {})?;
    let grants = reply
        .data
        .get("grants")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    if args.json {
        println!("{grants}");
        return Ok(ExitCode::SUCCESS);
    }
    let list = grants.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        println!("no live grants");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>5} {:<14} {:<40} {:>8} {:<16}",
        "ID", "AGENT", "SCOPE", "LEFT", "BY"
    );
    for g in list {
        let scope = &g["scope"];
        let what = match scope["kind"].as_str() {
            Some("subtree") => format!("subtree {}", scope["path"].as_str().unwrap_or("?")),
            Some("destination") => format!(
                "destination {}:{}",
                scope["address"].as_str().unwrap_or("?"),
                scope["port"]
            ),
            Some(k) => k.to_owned(),
            None => "?".into(),
        };
        println!(
            "{:>5} {:<14} {:<40} {:>7}s {:<16}",
            g["id"],
            g["agent"].as_str().unwrap_or("?"),
            what,
            g["left_secs"].as_u64().unwrap_or(0),
            g["by"].as_str().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}
