//! Installing agent-guard: the Debian package (`cargo xtask deb`, built by
//! cargo-deb from `[package.metadata.deb]` in guard-userspace/Cargo.toml)
//! and the from-source route (`cargo xtask install`), which puts the same
//! files in the places a local install uses.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{build, setup};

#[derive(clap::Args, Default)]
pub struct DebArgs {
    /// Package the binary of this cargo profile. The default, release, is
    /// what to ship; `cargo xtask test` packages the dev build it has
    /// already made, to test the packaging without a second build. Any
    /// other profile's package goes to target/debian/PROFILE/.
    #[arg(long, default_value = "release", value_name = "PROFILE")]
    pub profile: String,
}

#[derive(clap::Args, Default)]
pub struct InstallArgs {
    /// Install below this directory instead of / (a staging root, e.g. for
    /// an image build): the unit is enabled there with `systemctl --root`.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Install the binary of this cargo profile (release is what to run;
    /// the tests install the dev build they already have).
    #[arg(long, default_value = "release", value_name = "PROFILE")]
    pub profile: String,
}

/// The systemd unit as shipped; its ExecStart names the package's binary.
const UNIT: &str = "deploy/agent-guard.service";
const PACKAGED_BIN: &str = "/usr/bin/agent-guard";
/// Where `install` puts the binary: a local install stays out of /usr/bin,
/// which belongs to the package manager.
const LOCAL_BIN: &str = "usr/local/bin/agent-guard";

/// Sets up, then builds target/debian/agent-guard_<version>_amd64.deb.
pub fn deb(args: &DebArgs) -> Result<()> {
    setup::setup()?;
    let deb = build_deb(&args.profile)?;
    eprintln!("xtask: install it with: apt-get install {}", deb.display());
    Ok(())
}

/// Builds the package from `profile`'s binary (building that if needed)
/// and returns its path. Any profile but release is stripped and packed
/// with light compression: such a package exists to test the packaging.
pub fn build_deb(profile: &str) -> Result<PathBuf> {
    let root = build::workspace_root();
    // A test package never takes the place of the one to ship.
    let out_dir = match profile {
        "release" => root.join("target/debian"),
        other => root.join("target/debian").join(other),
    };
    eprintln!("xtask: building the Debian package ({profile} build of agent-guard, cargo-deb)");
    let mut cmd = Command::new("cargo-deb");
    cmd.current_dir(&root)
        .args([
            "--package",
            "guard-userspace",
            "--locked",
            "--profile",
            profile,
        ])
        .arg("--output")
        .arg(&out_dir);
    if profile != "release" {
        // cargo-deb warns that it is meant for release builds; here the
        // packaging is what is under test, not the binary's profile.
        cmd.args(["--strip", "--fast"]);
    }
    // cargo-deb deletes every agent-guard_*.deb in target/debian before it
    // packs, whatever --output says: keep a release package from being
    // lost to a test package.
    let shipped: Vec<PathBuf> = if profile == "release" {
        Vec::new()
    } else {
        fs::read_dir(root.join("target/debian"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("agent-guard_") && n.ends_with(".deb"))
            })
            .collect()
    };
    for deb in &shipped {
        fs::rename(deb, deb.with_extension("deb.kept"))?;
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo-deb (installed by `cargo xtask setup`)");
    for deb in &shipped {
        fs::rename(deb.with_extension("deb.kept"), deb)?;
    }
    let out = out?;
    if !out.status.success() {
        bail!("cargo-deb failed: {}", out.status);
    }
    // cargo-deb prints the package's path as its last line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo-deb named no package: {stdout}"))?;
    if !deb.is_file() {
        bail!("cargo-deb reported {} but it is not there", deb.display());
    }
    eprintln!("xtask: built {}", deb.display());
    Ok(deb)
}

/// Builds the release binary and installs it, the unit, the default policy
/// (unless one is there) and the state directories; enables the unit but
/// does not start it, as the package does.
pub fn install(args: &InstallArgs) -> Result<()> {
    setup::setup()?;
    let ws = build::workspace_root();
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    if args.root.is_none() && package_installed() {
        bail!(
            "the agent-guard package is installed; upgrade it with the package \
             (`cargo xtask deb`, then apt-get install the .deb) or remove it first \
             (`apt-get remove agent-guard`), so that one binary and one unit are in force"
        );
    }
    eprintln!("xtask: building agent-guard ({} profile)", args.profile);
    setup::run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(&ws)
            .args(["build", "--profile", &args.profile])
            .args(["--package", "guard-userspace", "--bin", "agent-guard"]),
    )?;
    // Cargo puts the dev profile's output in target/debug.
    let dir = if args.profile == "dev" {
        "debug"
    } else {
        args.profile.as_str()
    };
    let built = ws.join("target").join(dir).join("agent-guard");

    let bin = root.join(LOCAL_BIN);
    put(
        &bin,
        &fs::read(&built).context("the release binary")?,
        0o755,
    )?;
    let unit = fs::read_to_string(ws.join(UNIT)).context(UNIT)?;
    let local = format!("/{LOCAL_BIN}");
    if !unit.contains(PACKAGED_BIN) {
        bail!("{UNIT} does not start {PACKAGED_BIN}; cannot point it at {local}");
    }
    let unit_path = root.join("etc/systemd/system/agent-guard.service");
    put(
        &unit_path,
        unit.replace(PACKAGED_BIN, &local).as_bytes(),
        0o644,
    )?;
    let policy = root.join("etc/agent-guard/policy.toml");
    if policy.exists() {
        eprintln!("xtask: kept your {}", policy.display());
    } else {
        let default = fs::read(ws.join("guard-userspace/src/policy/default.toml"))
            .context("the embedded default policy")?;
        put(&policy, &default, 0o644)?;
    }
    for (dir, mode) in [
        ("var/lib/agent-guard", 0o700),
        ("var/log/agent-guard", 0o750),
    ] {
        let dir = root.join(dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
    }
    enable(args.root.as_deref())?;
    for path in [&bin, &unit_path, &policy] {
        eprintln!("xtask: installed {}", path.display());
    }
    eprintln!(
        "xtask: agent-guard.service is enabled, not started. Review the policy and \
         `agent-guard doctor --policy /etc/agent-guard/policy.toml`, then: \
         systemctl start agent-guard"
    );
    Ok(())
}

/// Writes `bytes` to `path` with `mode` by rename, so a running daemon's
/// binary is replaced, never overwritten in place.
fn put(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("a path with a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("xtask-new");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("installing {}", path.display()))
}

/// Enables the unit: through the running systemd (after a daemon-reload),
/// or offline (`systemctl --root`) in a staging root or on a host that was
/// not booted with systemd.
fn enable(root: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new("systemctl");
    match root {
        None if Path::new("/run/systemd/system").is_dir() => {
            setup::run(Command::new("systemctl").arg("daemon-reload"))?;
        }
        root => {
            cmd.arg("--root").arg(root.unwrap_or(Path::new("/")));
        }
    }
    setup::run(cmd.args(["enable", "agent-guard.service"]))
}

fn package_installed() -> bool {
    setup::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", "agent-guard"]))
        .is_some_and(|s| s.contains("install ok installed"))
}
