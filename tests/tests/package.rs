//! Installing agent-guard: the Debian package, installed with the real dpkg
//! into a scratch root, and `cargo xtask install` into a staging root.
//!
//! The scratch root is this machine's root filesystem under a copy-on-write
//! overlay, mounted in a private mount namespace: dpkg, the maintainer
//! scripts (chrooted there by `dpkg --root`) and deb-systemd-helper run for
//! real, and nothing reaches the host. `cargo xtask test` builds the
//! package (from the dev build) and names it in AGENT_GUARD_DEB.
//! Host tier only: packaging does not depend on the kernel.
use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Instant,
};

use agent_guard_tests::*;

const POLICY: &str = "etc/agent-guard/policy.toml";
const UNIT: &str = "usr/lib/systemd/system/agent-guard.service";
const WANTS: &str = "etc/systemd/system/multi-user.target.wants/agent-guard.service";

fn deb() -> PathBuf {
    match std::env::var_os("AGENT_GUARD_DEB") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "AGENT_GUARD_DEB is not set: run the privileged tests with `cargo xtask test`, \
             which builds the package and sets it"
        ),
    }
}

fn host_tier_only(test: &str) -> bool {
    if tier() == "vm" {
        skip(
            test,
            "packaging does not depend on the kernel; the host tier installs the package",
        );
        return true;
    }
    false
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// This machine's root under a copy-on-write overlay (upper layer on a
/// tmpfs), in a mount namespace of its own held open by a `sleep`; the
/// namespace and everything in it go away with that process.
struct ScratchRoot {
    holder: Child,
    dir: PathBuf,
    merged: PathBuf,
}

impl ScratchRoot {
    fn new(test: &str) -> Self {
        require_root();
        let tmp = std::env::temp_dir();
        let dir = tmp.join(claim_dir(&tmp, &format!("agent-guard-pkg-{test}")));
        let merged = dir.join("merged");
        fs::create_dir_all(&merged).expect("scratch dir");
        fs::create_dir_all(dir.join("rw")).expect("scratch dir");
        let holder = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sleep",
                "infinity",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let root = Self {
            holder,
            dir,
            merged,
        };
        // The namespace exists once the holder runs `sleep` in it.
        let ours = fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
        let deadline = Instant::now() + PATIENCE;
        while fs::read_link(format!("/proc/{}/ns/mnt", root.holder.id())).ok() == Some(ours.clone())
            || fs::read_to_string(format!("/proc/{}/comm", root.holder.id()))
                .is_ok_and(|c| c.trim() != "sleep")
        {
            assert!(Instant::now() < deadline, "unshare did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (d, m) = (root.dir.display(), root.merged.display());
        root.ok(&[
            "sh",
            "-ec",
            &format!(
                "mount -t tmpfs scratch {d}/rw
                 mkdir {d}/rw/upper {d}/rw/work
                 mount -t overlay scratch -o lowerdir=/,upperdir={d}/rw/upper,workdir={d}/rw/work {m}
                 mount --rbind /dev {m}/dev
                 mount -t proc proc {m}/proc
                 mount -t tmpfs run {m}/run"
            ),
        ]);
        root
    }

    /// Runs `argv` inside the namespace (not chrooted).
    fn run(&self, argv: &[&str]) -> Output {
        Command::new("nsenter")
            .arg("--target")
            .arg(self.holder.id().to_string())
            .args(["--mount", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter {argv:?}: {e}"))
    }

    fn ok(&self, argv: &[&str]) -> Output {
        let out = self.run(argv);
        assert!(out.status.success(), "{argv:?}: {}", text(&out));
        out
    }

    /// Runs `argv` chrooted into the scratch root.
    fn chroot(&self, argv: &[&str]) -> Output {
        let m = self.merged.display().to_string();
        let mut full = vec!["chroot", m.as_str()];
        full.extend_from_slice(argv);
        self.run(&full)
    }

    fn dpkg(&self, args: &[&str]) -> Output {
        let m = format!("--root={}", self.merged.display());
        let mut full = vec!["dpkg", m.as_str()];
        full.extend_from_slice(args);
        self.run(&full)
    }

    /// `rel` inside the scratch root, as the test process can reach it
    /// (through the holder's root, which resolves in its namespace).
    fn path(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
            .join(self.merged.strip_prefix("/").expect("absolute"))
            .join(rel)
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

#[test]
fn the_package_installs_enables_without_starting_and_keeps_an_edited_policy() {
    if host_tier_only("the_package_installs_enables_without_starting_and_keeps_an_edited_policy") {
        return;
    }
    let deb = deb();
    let name = deb
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("agent-guard_") && name.ends_with("_amd64.deb"),
        "{name}"
    );

    // What the package declares, before it is installed anywhere.
    let info = Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .output()
        .expect("dpkg-deb");
    assert!(info.status.success(), "{}", text(&info));
    let info = text(&info);
    assert!(info.contains("Package: agent-guard"), "{info}");
    let tmp = std::env::temp_dir();
    let scripts = tmp.join(claim_dir(&tmp, "agent-guard-deb-ctl"));
    let out = Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&scripts)
        .output()
        .expect("dpkg-deb");
    assert!(out.status.success(), "{}", text(&out));
    let conffiles = fs::read_to_string(scripts.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/agent-guard/policy.toml");
    // Enabled, never started or restarted by an install or an upgrade: a
    // stop denies every held call. Only removal stops the daemon.
    let postinst = fs::read_to_string(scripts.join("postinst")).expect("postinst");
    assert!(
        postinst.contains("deb-systemd-helper enable 'agent-guard.service'")
            || postinst.contains("deb-systemd-helper enable agent-guard.service"),
        "{postinst}"
    );
    for never in [
        "deb-systemd-invoke start",
        "deb-systemd-invoke restart",
        "try-restart",
    ] {
        assert!(
            !postinst.contains(never),
            "postinst runs {never:?}:\n{postinst}"
        );
    }
    let prerm = fs::read_to_string(scripts.join("prerm")).expect("prerm");
    assert!(
        prerm.contains("[ \"$1\" = remove ]") && prerm.contains("deb-systemd-invoke stop"),
        "{prerm}"
    );
    let _ = fs::remove_dir_all(&scripts);

    let root = ScratchRoot::new("install");
    let out = root.dpkg(&["--install", &deb.display().to_string()]);
    assert!(out.status.success(), "dpkg --install: {}", text(&out));
    assert!(
        text(&out).contains("installed and enabled, not started"),
        "{}",
        text(&out)
    );

    // The files, in place.
    let bin = root.path("usr/bin/agent-guard");
    assert_eq!(mode(&bin), 0o755);
    let unit = fs::read_to_string(root.path(UNIT)).expect("the unit");
    assert!(
        unit.contains(
            "ExecStart=/usr/bin/agent-guard daemon --policy /etc/agent-guard/policy.toml"
        ),
        "{unit}"
    );
    let policy = fs::read_to_string(root.path(POLICY)).expect("the policy");
    let embedded = Command::new(agent_guard_bin())
        .args(["policy", "default"])
        .output()
        .expect("policy default");
    assert_eq!(
        policy,
        String::from_utf8_lossy(&embedded.stdout),
        "the conffile is the embedded default"
    );
    for doc in [
        "README.md",
        "operations.md",
        "events.md",
        "events.schema.json",
        "copyright",
    ] {
        let p = root.path(&format!("usr/share/doc/agent-guard/{doc}"));
        assert!(p.is_file(), "{} missing", p.display());
    }
    // The maintainer scripts made the state directories and enabled the unit.
    assert_eq!(mode(&root.path("var/lib/agent-guard")), 0o700);
    assert_eq!(mode(&root.path("var/log/agent-guard")), 0o750);
    let link = fs::read_link(root.path(WANTS)).expect("multi-user.target.wants symlink: enabled");
    assert!(link.ends_with("agent-guard.service"), "{}", link.display());
    let status = root.ok(&[
        "dpkg-query",
        &format!("--root={}", root.merged.display()),
        "-W",
        "-f=${Status} ${Conffiles}",
        "agent-guard",
    ]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.starts_with("install ok installed"), "{status}");
    assert!(status.contains("/etc/agent-guard/policy.toml"), "{status}");

    // The installed binary runs, and systemd accepts the unit as installed.
    let version = root.chroot(&["/usr/bin/agent-guard", "--version"]);
    assert!(version.status.success(), "{}", text(&version));
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("agent-guard "),
        "{}",
        text(&version)
    );
    let verify = root.chroot(&["systemd-analyze", "verify", &format!("/{UNIT}")]);
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}",
        text(&verify)
    );
    assert!(
        !text(&verify).contains("agent-guard.service"),
        "warnings about the unit: {}",
        text(&verify)
    );

    // An operator's edit survives a reinstall (an upgrade to the same
    // conffile): dpkg keeps it without asking (stdin is /dev/null).
    let edited = format!("{policy}\n# edited by the operator\n");
    fs::write(root.path(POLICY), &edited).expect("edit the policy");
    let out = root.dpkg(&["--install", &deb.display().to_string()]);
    assert!(out.status.success(), "reinstall: {}", text(&out));
    assert_eq!(
        fs::read_to_string(root.path(POLICY)).expect("policy"),
        edited
    );

    // Remove keeps the conffile; purge takes it, the state directory and
    // the enablement, and keeps the event log (the audit trail).
    fs::write(root.path("var/log/agent-guard/events.jsonl"), "{}\n").expect("a log line");
    let out = root.dpkg(&["--remove", "agent-guard"]);
    assert!(out.status.success(), "remove: {}", text(&out));
    assert!(!bin.exists());
    assert!(root.path(POLICY).exists(), "remove keeps the conffile");
    let out = root.dpkg(&["--purge", "agent-guard"]);
    assert!(out.status.success(), "purge: {}", text(&out));
    assert!(!root.path(POLICY).exists(), "purge removes the conffile");
    assert!(
        !root.path("var/lib/agent-guard").exists(),
        "purge removes the state"
    );
    assert!(
        fs::symlink_metadata(root.path(WANTS)).is_err(),
        "purge disables the unit"
    );
    assert!(
        root.path("var/log/agent-guard/events.jsonl").exists(),
        "the audit trail stays"
    );
}

#[test]
fn cargo_xtask_install_puts_the_build_unit_and_policy_in_a_staging_root() {
    if host_tier_only("cargo_xtask_install_puts_the_build_unit_and_policy_in_a_staging_root") {
        return;
    }
    let tmp = std::env::temp_dir();
    let dir = tmp.join(claim_dir(&tmp, "agent-guard-xinstall"));
    let install = || {
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["xtask", "install", "--profile", "dev", "--root"])
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("cargo xtask install")
    };
    let out = install();
    assert!(out.status.success(), "cargo xtask install: {}", text(&out));
    assert!(
        text(&out).contains("enabled, not started"),
        "{}",
        text(&out)
    );

    let bin = dir.join("usr/local/bin/agent-guard");
    assert_eq!(mode(&bin), 0o755);
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .expect("installed binary");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("agent-guard "));
    let unit =
        fs::read_to_string(dir.join("etc/systemd/system/agent-guard.service")).expect("unit");
    assert!(
        unit.contains(
            "ExecStart=/usr/local/bin/agent-guard daemon --policy /etc/agent-guard/policy.toml"
        ),
        "{unit}"
    );
    assert!(!unit.contains("/usr/bin/agent-guard"), "{unit}");
    assert!(
        fs::read_link(dir.join(WANTS)).is_ok(),
        "enabled in the staging root"
    );
    assert_eq!(mode(&dir.join("var/lib/agent-guard")), 0o700);
    let policy = dir.join(POLICY);
    let check = Command::new(&bin)
        .args(["policy", "check"])
        .arg(&policy)
        .output()
        .expect("policy check");
    assert!(check.status.success(), "{}", text(&check));

    // A second install keeps an edited policy.
    fs::write(&policy, "# mine\n").expect("edit");
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = install();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("kept your"), "{}", text(&out));
    assert_eq!(fs::read_to_string(&policy).expect("policy"), "# mine\n");
    let _ = fs::remove_dir_all(&dir);
}
