//! Idempotent installation of the BPF toolchain. Each step checks first and
//! only installs what is missing, so `setup` is cheap to run every time.
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::aptlock;

/// LLVM major version that bpf-linker must be built against: it has to match
/// the LLVM inside the nightly rustc that compiles the eBPF crate.
const LLVM_MAJOR: u32 = 22;
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Builds the Debian package (`cargo xtask deb`).
const CARGO_DEB_VERSION: &str = "3.8.0";

pub fn setup() -> Result<()> {
    ensure_root_for_install()?;
    ensure_nightly_rust_src()?;
    ensure_bpf_linker()?;
    // The web approval page's browser test drives real headless Chromium;
    // the rogue-agent tests detach links with bpftool, as an agent would.
    apt_install(&["chromium", "chromium-driver", "bpftool"])?;
    // Every event of the privileged suite is checked against OCSF's and
    // ECS's published definitions.
    crate::conformance::install()?;
    // The package and its test: `systemd-analyze verify` checks the unit,
    // deb-systemd-helper (init-system-helpers) enables it on install.
    apt_install(&["systemd", "init-system-helpers"])?;
    ensure_cargo_deb()?;
    Ok(())
}

/// Runs a command, streaming its output, and fails with the command line.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout if it succeeded.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// PATH for the agents the privileged tests start, on the host and in the
/// QEMU guest's chroot: the real bin folder of python3 first, then the
/// caller's PATH, then the standard folders. A version manager's shim
/// (pyenv here) is a bash script that forks a dozen helpers before the real
/// interpreter, and each of them looks up the user: glibc then probes for an
/// nscd socket with unix connects. Tests that count or freeze an agent's
/// calls would meet those, so agents start the interpreter itself.
pub fn agent_path() -> String {
    let python = output(Command::new("python3").args([
        "-c",
        "import os, sys; print(os.path.dirname(os.path.realpath(sys.executable)))",
    ]));
    let host = std::env::var("PATH").unwrap_or_default();
    let standard = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut dirs: Vec<&str> = Vec::new();
    for dir in python
        .iter()
        .map(|p| p.trim())
        .chain(host.split(':'))
        .chain(standard.split(':'))
    {
        if !dir.is_empty() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.join(":")
}

fn ensure_root_for_install() -> Result<()> {
    // Installing apt packages needs root; so do the privileged tests. Say so
    // up front instead of failing half-way.
    if !nix_is_root() {
        bail!("cargo xtask needs root (apt-get install, loading eBPF); run it with sudo");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// Installs Debian packages that are not installed yet. `apt-get update`
/// runs once, only when something is missing.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {} with apt-get", missing.join(" "));
    apt_get(&["update", "-q"])?;
    apt_get(
        &["install", "-y", "-q", "--no-install-recommends"]
            .into_iter()
            .chain(missing)
            .collect::<Vec<_>>(),
    )
}

/// apt-get, after another package manager run (an unattended upgrade, a
/// second setup) has let go of its locks: waits, and says so, rather than
/// failing. apt's own lock timeout covers a run that starts in between.
fn apt_get(args: &[&str]) -> Result<()> {
    aptlock::wait_free(aptlock::APT_LOCKS, aptlock::LOCK_WAIT, |s| eprintln!("{s}"))?;
    run(Command::new("apt-get")
        .arg("-o")
        .arg(format!(
            "DPkg::Lock::Timeout={}",
            aptlock::LOCK_WAIT.as_secs()
        ))
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// cargo-deb, which `cargo xtask deb` builds the package with.
fn ensure_cargo_deb() -> Result<()> {
    if output(Command::new("cargo-deb").arg("--version"))
        .is_some_and(|v| v.contains(CARGO_DEB_VERSION))
    {
        return Ok(());
    }
    eprintln!("setup: building cargo-deb {CARGO_DEB_VERSION} (a minute or two)");
    run(Command::new("cargo").args([
        "install",
        "--locked",
        "--force",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
    ]))
}

/// What the eBPF crate needs of the nightly toolchain: rust-src to build
/// core for the BPF target, clippy to lint it (.ci/run).
const NIGHTLY_COMPONENTS: [&str; 2] = ["rust-src", "clippy"];

fn ensure_nightly_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    let Some(list) = installed else {
        eprintln!("setup: installing the nightly toolchain with rust-src and clippy");
        let mut cmd = Command::new("rustup");
        cmd.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
        for c in NIGHTLY_COMPONENTS {
            cmd.args(["--component", c]);
        }
        return run(&mut cmd);
    };
    for c in NIGHTLY_COMPONENTS {
        if !list.lines().any(|l| l.starts_with(c)) {
            eprintln!("setup: adding {c} to the nightly toolchain");
            run(Command::new("rustup").args(["component", "add", c, "--toolchain", "nightly"]))?;
        }
    }
    Ok(())
}

fn ensure_bpf_linker() -> Result<()> {
    let llvm_prefix = format!("/usr/lib/llvm-{LLVM_MAJOR}");
    if let Some(version) = output(Command::new("bpf-linker").arg("--version")) {
        if version.contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
        eprintln!(
            "setup: bpf-linker is {}, want {BPF_LINKER_VERSION}",
            version.trim()
        );
    }
    apt_install(&[&format!("llvm-{LLVM_MAJOR}-dev")])?;
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (about a minute)"
    );
    // The default feature targets a newer LLVM and would pick up Debian's
    // LLVM 14; select the matching one explicitly.
    run(Command::new("cargo")
        .args([
            "install",
            "--locked",
            "--force",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{LLVM_MAJOR}"))
        .env("LLVM_PREFIX", &llvm_prefix))
}
