//! agent-guard: the daemon and its CLI (a thin entry over the library).

use std::process::ExitCode;

use clap::Parser as _;

use guard_userspace::{
    cli::{
        self,
        args::{Cli, Command},
    },
    control,
};

fn main() -> ExitCode {
    // Logs go to stderr; stdout is reserved for event lines.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGENT_GUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Daemon(_) | Command::Run(_)) {
        // A listing piped into `head` ends quietly, as other tools do,
        // instead of panicking on EPIPE. The daemon (whose stdout sinks
        // count a closed pipe as a failure) and `run` (whose launcher must
        // outlive its output) keep Rust's default of ignoring SIGPIPE.
        // SAFETY: single-threaded here, before anything else runs; SIG_DFL
        // installs no handler.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    let socket = cli.socket.clone();
    let client_socket = || {
        socket
            .clone()
            .unwrap_or_else(|| control::DEFAULT_SOCKET.into())
    };
    let result = match cli.command {
        Command::Daemon(args) => cli::daemon::run(args, socket.clone()),
        Command::Run(args) => cli::run::run(args, &client_socket()),
        Command::Policy(cmd) => cli::policy::run(cmd),
        Command::Discover(args) => cli::discover::run(args),
        Command::Review(args) => cli::review::run(args),
        Command::Doctor { policy } => cli::doctor::run(policy.as_deref()),
        Command::Pending(args) => cli::pending::run(args, &client_socket()),
        Command::Approve(args) => cli::approve::run(args, &client_socket()),
        Command::Deny(args) => cli::deny::run(args, &client_socket()),
        Command::Kill(args) => cli::kill::run(args, &client_socket()),
        Command::Grants(args) => cli::grants::run(args, &client_socket()),
        Command::Events(args) => cli::events::run(args, &client_socket()),
        Command::Revoke(args) => cli::revoke::run(args, &client_socket()),
        Command::Reload(args) => cli::reload::run(args, &client_socket()),
        Command::Agents(args) => cli::agents::run(args, &client_socket()),
        Command::Freeze(args) => cli::freeze::run(args, true, &client_socket()),
        Command::Thaw(args) => cli::thaw::run(args, &client_socket()),
        Command::Status(args) => cli::status::run(args, &client_socket()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agent-guard: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
