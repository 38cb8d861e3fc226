//! `agent-guard revoke GRANT_ID`: end a grant early.
use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, Result};

use super::args::RevokeArgs;
use crate::control::{Client, Request};

pub fn run(args: RevokeArgs, socket: &Path) -> Result<ExitCode> {
    Client::connect(socket)?
        .call(Request::Revoke { id: args.id })
        .with_context(|| format!("revoking grant {}", args.id))?;
    println!("revoked grant {}: calls it covered are held again", args.id);
    Ok(ExitCode::SUCCESS)
}
