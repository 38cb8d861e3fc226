//! Building the daemon and the test binaries, and the `test`/`run` verbs.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{conformance, package, setup, timing::Stages, vm};

#[derive(clap::Args, Default)]
pub struct TestArgs {
    /// Skip the QEMU tier (the LSM backend then goes untested: CI never sets this).
    #[arg(long)]
    pub no_vm: bool,
    /// Skip the fuzz tier's timed run (its corpus still replays in tier 1;
    /// CI never sets this).
    #[arg(long)]
    pub no_fuzz: bool,
    /// Only run privileged tests whose name contains this filter.
    pub filter: Option<String>,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Start only the daemon, without the demo agent.
    #[arg(long)]
    pub no_demo: bool,
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Builds `agent-guard` (debug) and returns its absolute path.
pub fn build_daemon() -> Result<PathBuf> {
    eprintln!("xtask: building agent-guard");
    setup::run(cargo().args([
        "build",
        "--package",
        "guard-userspace",
        "--bin",
        "agent-guard",
    ]))?;
    let bin = workspace_root().join("target/debug/agent-guard");
    if !bin.exists() {
        bail!("built agent-guard but {} is missing", bin.display());
    }
    Ok(bin)
}

/// Builds the privileged test binaries and returns their paths, from cargo's
/// own JSON messages rather than guessing hashed file names.
pub fn build_privileged_tests() -> Result<Vec<PathBuf>> {
    eprintln!("xtask: building the privileged tests");
    let out = cargo()
        .args([
            "test",
            "--package",
            "agent-guard-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the privileged tests failed");
    }
    let mut bins = Vec::new();
    for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let msg: serde_json::Value = serde_json::from_slice(line).context("cargo JSON message")?;
        if msg["reason"] == "compiler-artifact" && msg["profile"]["test"] == true {
            if let Some(exe) = msg["executable"].as_str() {
                bins.push(PathBuf::from(exe));
            }
        }
    }
    if bins.is_empty() {
        bail!("cargo built no privileged test binaries");
    }
    Ok(bins)
}

/// How long the fuzz tier runs each target.
const FUZZ_SECS: u64 = 60;

pub fn test(args: &TestArgs) -> Result<()> {
    let mut stages = Stages::new();
    let result = test_stages(args, &mut stages);
    stages.summary();
    result
}

fn test_stages(args: &TestArgs, stages: &mut Stages) -> Result<()> {
    stages.start("setup and build");
    setup::setup()?;
    let bin = build_daemon()?;
    let definitions = conformance::prepare(&bin)?;

    stages.start("tier 1, unit tests (with building them)");
    eprintln!("xtask: tier 1, unit tests");
    setup::run(cargo().args(["test"]))?;

    if args.no_fuzz {
        eprintln!(
            "xtask: --no-fuzz: the timed fuzz run was NOT done (the corpus replayed in tier 1)"
        );
    } else {
        // What strangers can send: control protocol, web requests, policy
        // parser, kernel-record decoder (guard-userspace/tests/fuzz.rs).
        stages.start("fuzz tier");
        eprintln!(
            "xtask: fuzzing what strangers can send, {FUZZ_SECS} s per target, two at a time"
        );
        setup::run(
            cargo()
                .args(["test", "--package", "guard-userspace", "--test", "fuzz"])
                .args(["--", "--test-threads", "2", "--nocapture"])
                .env("AGENT_GUARD_FUZZ_SECS", FUZZ_SECS.to_string()),
        )?;
    }

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = kernel.trim();
    stages.start("tier 2, privileged tests on the host (with building them)");
    eprintln!("xtask: tier 2, privileged tests on this kernel ({kernel})");
    let skip_log = workspace_root().join("target/privileged-skips.txt");
    let _ = std::fs::remove_file(&skip_log);
    // The Debian package for tests/tests/package.rs, packed from the dev
    // build made above: the packaging is what is under test, and a release
    // build would add minutes to every run (`cargo xtask deb` makes that).
    let deb = package::build_deb("dev")?;
    let mut cmd = cargo();
    // Every binary runs even after one fails, so one CI run names every
    // failing test.
    cmd.args(["test", "--no-fail-fast", "--package", "agent-guard-tests"])
        .env("AGENT_GUARD_BIN", &bin)
        .env("AGENT_GUARD_CONFORMANCE", &definitions)
        .env("AGENT_GUARD_DEB", &deb)
        .env("AGENT_GUARD_SKIP_LOG", &skip_log);
    // Agents the tests start inherit this environment. Without HOME every
    // python3 and git among them calls getpwuid, and glibc probes for an
    // nscd socket: unix connects that tests counting an agent's calls
    // would count too. The QEMU tier's guest sets HOME=/root; so does this
    // tier when the caller (a CI runner) has none. Budgets are tested
    // without HOME on purpose (budgets.rs).
    if std::env::var_os("HOME").is_none() {
        cmd.env("HOME", "/root");
    }
    // For the same reason, agents run python3 itself, not a version
    // manager's shim (setup::agent_path).
    cmd.env("PATH", setup::agent_path());
    if let Some(filter) = &args.filter {
        cmd.args(["--", filter]);
    }
    setup::run(&mut cmd)?;
    // libtest hides a passing test's output, so say here what did not run.
    match std::fs::read_to_string(&skip_log) {
        Ok(skips) if !skips.trim().is_empty() => {
            eprintln!("xtask: tier 2 on {kernel}: these tests did not apply to this kernel:");
            for line in skips.lines() {
                eprintln!("xtask:   skipped {line}");
            }
        }
        _ => eprintln!("xtask: tier 2 on {kernel}: every privileged test ran"),
    }

    stages.finish();
    if args.no_vm {
        eprintln!("xtask: --no-vm: the QEMU tier (BPF LSM backend) was NOT run");
        return Ok(());
    }
    stages.start("tier 3, privileged tests in QEMU");
    eprintln!("xtask: tier 3, privileged tests in a QEMU guest with BPF LSM");
    vm::vm_test(&vm::VmTestArgs {
        filter: args.filter.clone(),
        ..vm::VmTestArgs::default()
    })
}

pub fn run(args: &RunArgs) -> Result<()> {
    setup::setup()?;
    let bin = build_daemon()?;
    let mut cmd = Command::new(&bin);
    cmd.arg("daemon");
    if !args.no_demo {
        cmd.arg("--demo");
    }
    eprintln!("xtask: starting {} (Ctrl-C stops it)", bin.display());
    let status = cmd.status().context("starting agent-guard")?;
    if !status.success() {
        bail!("agent-guard daemon exited with {status}");
    }
    Ok(())
}
