//! `agent-guard daemon`
use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};

use super::args::DaemonArgs;
use crate::daemon;

pub fn run(args: DaemonArgs, socket: Option<PathBuf>) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(daemon::run(daemon::Options {
        policy_path: args.policy,
        socket,
        state_dir: args.state_dir,
        demo: args.demo,
        format: crate::policy::sink::Format::parse(&args.format)
            .context("--format takes v1 or ecs")?,
        chain_key: args.chain_key,
    }))?;
    Ok(ExitCode::SUCCESS)
}
