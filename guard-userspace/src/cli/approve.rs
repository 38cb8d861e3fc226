//! `agent-guard approve ID`: let one held call proceed.
use std::{path::Path, process::ExitCode};

use anyhow::Result;

use super::args::ApproveArgs;

pub fn run(args: ApproveArgs, socket: &Path) -> Result<ExitCode> {
    super::decide(socket, &args.id, true, args.reason)?;
    println!("approved {}", args.id);
    Ok(ExitCode::SUCCESS)
}
