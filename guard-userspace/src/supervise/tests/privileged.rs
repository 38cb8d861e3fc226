//! Cases that need root: a caller with another identity, and a caller in
//! another mount namespace. Without root they return early (and say so).
use std::os::unix::fs::PermissionsExt as _;

use super::harness::{Policy, TestDir, cmd, run_guarded, run_guarded_with, stderr};
use crate::supervise::FilterOptions;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root");
    }
    root
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The daemon (root) deletes with the caller's fs uid/gid/groups: what the
/// caller may not delete fails with EACCES even though policy allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_with_the_callers_identity() {
    if !is_root() {
        return;
    }
    let dir = TestDir::new("identity");
    chmod(dir.path(), 0o755);
    let closed = dir.make("closed/f1");
    let open = dir.make("open/f2");
    chmod(&dir.join("closed"), 0o755);
    chmod(&dir.join("open"), 0o777);
    let policy = Policy::deny(&[]);
    let mut command = cmd("rm", &["-f", "closed/f1", "open/f2"], dir.path());
    command.uid(65534).gid(65534);
    let out = run_guarded(command, policy.clone()).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(
        closed.exists(),
        "nobody cannot delete in a root-owned 0755 directory"
    );
    assert!(!open.exists(), "nobody can delete in a 0777 directory");
    let seen = policy.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|r| r.uid == 65534 && r.gid == 65534));
    let performed = policy.performed.lock().expect("lock").clone();
    assert_eq!(performed[0].1, Err(libc::EACCES));
    assert_eq!(performed[1].1, Ok(()));
}

/// A caller in its own mount namespace: paths resolve in its view, not the
/// daemon's (a tmpfs mounted only there hides a host file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_paths_in_the_callers_mount_namespace() {
    if !is_root() {
        return;
    }
    if std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: unshare(1) is missing");
        return;
    }
    let dir = TestDir::new("mntns");
    let hidden = dir.make("mnt/hostfile");
    let script = r#"
set -e
mount -t tmpfs none "$1/mnt"
touch "$1/mnt/inner"
rm "$1/mnt/inner"
test ! -e "$1/mnt/inner"
if rm "$1/mnt/hostfile" 2>/dev/null; then echo "deleted the host's file"; exit 3; fi
echo ok
"#;
    let policy = Policy::deny(&[]);
    // A run whose policy allows mounts (the filter refuses unshare -m
    // otherwise).
    let allow_mounts = FilterOptions {
        allow_mounts: true,
        allow_io_uring: false,
    };
    let out = run_guarded_with(
        cmd(
            "unshare",
            &[
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                dir.str(),
            ],
            dir.path(),
        ),
        policy.clone(),
        allow_mounts,
    )
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(hidden.exists(), "the host's file is untouched");
    // Only the deletion that could happen was asked about, in the caller's view.
    assert_eq!(policy.seen_paths(), [format!("{}/mnt/inner", dir.str())]);
}
