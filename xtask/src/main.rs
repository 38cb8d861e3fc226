//! `cargo xtask`: set-up, test runners and the demo. Every verb that builds
//! runs `setup` first, so a fresh machine needs nothing else.
mod bench;
mod build;
mod conformance;
mod setup;
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
    /// bpf-linker (LLVM 22), nightly rust-src, Chromium, and the published
    /// OCSF and ECS definitions events are checked against.
    Setup,
    /// Set up, then run every test tier: unit tests, privileged tests on this
    /// kernel, and the privileged tests inside a QEMU guest with BPF LSM.
    ///
    /// Example: sudo cargo xtask test
    Test(build::TestArgs),
    /// Set up, build, and start the daemon with the embedded default policy
    /// plus a demo agent that makes one allowed and one denied connect.
    ///
    /// Example: sudo cargo xtask run
    Run(build::RunArgs),
    /// Boot Debian kernels under QEMU (TCG) with BPF LSM active and run the
    /// privileged tests inside.
    ///
    /// Example: sudo cargo xtask vm-test --all-kernels
    VmTest(vm::VmTestArgs),
    /// Set up, build release binaries, and measure what the guard costs
    /// against no guard: unlink and connect latency, event throughput, the
    /// approval round trip, daemon memory and per-hook kernel time. Prints a
    /// table and writes target/bench/results.json. Takes a few minutes.
    ///
    /// Example: sudo cargo xtask bench --rounds 5
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
