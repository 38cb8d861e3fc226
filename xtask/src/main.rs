//! `cargo xtask`: set-up, test runners and the demo. Every verb that builds
//! runs `setup` first, so a fresh machine needs nothing else.
mod aptlock;
mod bench;
mod build;
mod conformance;
mod package;
mod setup;
mod timing;
mod vm;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "agent-guard developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need, if missing: llvm-22-dev,
    /// bpf-linker (LLVM 22), nightly rust-src, chromium and chromium-driver,
    /// bpftool, systemd and init-system-helpers, cargo-deb, and the
    /// published OCSF and ECS definitions events are checked against. If
    /// another apt or dpkg run holds the package lock, it says who and waits
    /// (up to 15 minutes).
    ///
    /// Example: sudo cargo xtask setup
    #[command(verbatim_doc_comment)]
    Setup,
    /// Set up, then run every test tier: unit tests, privileged tests on this
    /// kernel, and the privileged tests inside a QEMU guest with BPF LSM.
    ///
    /// Example: sudo cargo xtask test
    #[command(verbatim_doc_comment)]
    Test(build::TestArgs),
    /// Set up, build, and start the daemon with the embedded default policy
    /// plus a demo agent: connects and deletes allowed and denied, and one
    /// delete held until you approve or deny it (denied after 60 s).
    ///
    /// Example: sudo cargo xtask run
    #[command(verbatim_doc_comment)]
    Run(build::RunArgs),
    /// Set up, build the release binary, and make the Debian package
    /// target/debian/agent-guard_<version>_amd64.deb: the binary, the
    /// systemd unit (enabled on install, not started), the default policy
    /// as /etc/agent-guard/policy.toml (a conffile), and the docs.
    ///
    /// Examples:
    ///   sudo cargo xtask deb
    ///   sudo apt-get install ./target/debian/agent-guard_*_amd64.deb
    #[command(verbatim_doc_comment)]
    Deb(package::DebArgs),
    /// Set up, build the release binary, and install it from source:
    /// /usr/local/bin/agent-guard, the unit in /etc/systemd/system (enabled,
    /// not started), /etc/agent-guard/policy.toml unless one exists, and
    /// the state directory. Refused while the package is installed.
    ///
    /// Examples:
    ///   sudo cargo xtask install
    ///   sudo cargo xtask install --root /tmp/image-root
    #[command(verbatim_doc_comment)]
    Install(package::InstallArgs),
    /// Boot Debian kernels under QEMU (TCG) with BPF LSM active and run the
    /// privileged tests inside.
    ///
    /// Example: sudo cargo xtask vm-test --all-kernels
    #[command(verbatim_doc_comment)]
    VmTest(vm::VmTestArgs),
    /// Set up, build release binaries, and measure what the guard costs
    /// against no guard: unlink and connect latency, event throughput, the
    /// approval round trip, daemon memory, per-hook kernel time and what an
    /// agent budget adds to it. Prints a table and writes
    /// target/bench/results.json. Takes a few minutes.
    ///
    /// Examples:
    ///   sudo cargo xtask bench --rounds 5
    ///   sudo cargo xtask bench --op unlink --latency-only   (supervised deletes only)
    #[command(verbatim_doc_comment)]
    Bench(bench::BenchArgs),
    /// A benchmark workload (run by `bench` inside agents; not for humans).
    #[command(hide = true)]
    BenchWorker(bench::worker::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<()> = match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Test(args) => build::test(&args),
        Cmd::Run(args) => build::run(&args),
        Cmd::Deb(args) => package::deb(&args),
        Cmd::Install(args) => package::install(&args),
        Cmd::VmTest(args) => setup::setup().and_then(|()| vm::vm_test(&args)),
        Cmd::Bench(args) => bench::bench(&args),
        Cmd::BenchWorker(args) => bench::worker::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
