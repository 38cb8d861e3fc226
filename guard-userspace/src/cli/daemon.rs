//! `agent-guard daemon`
use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};

use super::args::DaemonArgs;
use crate::daemon;

pub fn run(args: DaemonArgs, socket: Option<PathBuf>) -> Result<ExitCode> {
    // Before the runtime starts its threads, which inherit the mask: stop
    // and reload signals are read, with their sender, from a signalfd.
    daemon::block_signals()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let format =
        crate::policy::sink::Format::parse(&args.format).context("--format takes v1 or ecs")?;
    let result = runtime.block_on(daemon::run(daemon::Options {
        policy_path: args.policy,
        socket,
        state_dir: args.state_dir,
        demo: args.demo,
        format,
        chain_key: args.chain_key,
    }));
    // Blocking work still running (a session's cgroup clean-up, a sink
    // writer) gets a moment to finish; the daemon does not wait forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result?;
    Ok(ExitCode::SUCCESS)
}
