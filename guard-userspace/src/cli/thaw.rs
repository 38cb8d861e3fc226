//! `agent-guard thaw NAME`: back to the policy's mode.
use std::{path::Path, process::ExitCode};

use anyhow::Result;

use super::args::ModeArgs;

pub fn run(args: ModeArgs, socket: &Path) -> Result<ExitCode> {
    super::freeze::run(args, false, socket)
}
