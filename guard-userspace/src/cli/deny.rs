//! `agent-guard deny ID`: fail one held call with EPERM.
use std::{path::Path, process::ExitCode};

use anyhow::Result;

use super::args::DenyArgs;

pub fn run(args: DenyArgs, socket: &Path) -> Result<ExitCode> {
    super::decide(
        socket,
        &args.id,
        false,
        args.reason,
        super::Scope {
            kind: None,
            for_secs: None,
            path: None,
        },
    )?;
    println!("denied {}", args.id);
    Ok(ExitCode::SUCCESS)
}
