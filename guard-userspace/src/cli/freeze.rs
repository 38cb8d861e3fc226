//! `agent-guard freeze NAME`: hold everything not explicitly allowed.
use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, Result};

use super::args::ModeArgs;
use crate::control::{Client, Request};

/// Shared with `thaw` (`freeze` false).
pub fn run(args: ModeArgs, freeze: bool, socket: &Path) -> Result<ExitCode> {
    let reply = Client::connect(socket)?
        .call(Request::SetMode {
            agent: args.agent.clone(),
            freeze,
            reason: args.reason,
        })
        .with_context(|| {
            format!(
                "{} agent {}",
                if freeze { "freezing" } else { "thawing" },
                args.agent
            )
        })?;
    let mode = reply
        .data
        .get("mode")
        .and_then(|m| m.as_str())
        .unwrap_or("?");
    println!("agent {}: mode {mode}", args.agent);
    Ok(ExitCode::SUCCESS)
}
