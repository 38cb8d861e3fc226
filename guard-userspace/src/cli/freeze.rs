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
    // In force, but not recorded for a restarted daemon: say so, and fail
    // the command so that a script notices.
    if let Some(warning) = reply.data.get("warning").and_then(|w| w.as_str()) {
        eprintln!("agent-guard: warning: {warning}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
