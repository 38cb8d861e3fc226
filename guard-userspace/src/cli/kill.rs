//! `agent-guard kill ID | --agent NAME`
use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, Result};

use super::args::KillArgs;
use crate::control::{Client, Request};

pub fn run(args: KillArgs, socket: &Path) -> Result<ExitCode> {
    let what = match (&args.id, &args.agent) {
        (Some(id), None) => format!("hold {id}"),
        (None, Some(agent)) => format!("agent {agent}"),
        _ => anyhow::bail!("give a hold id or --agent NAME (one of them)"),
    };
    let reply = Client::connect(socket)?
        .call(Request::Kill {
            hold: args.id,
            agent: args.agent,
        })
        .with_context(|| format!("killing {what}"))?;
    let cgroup = reply
        .data
        .get("cgroup")
        .and_then(|c| c.as_str())
        .unwrap_or("?");
    println!("killed {what} (every process in {cgroup})");
    Ok(ExitCode::SUCCESS)
}
