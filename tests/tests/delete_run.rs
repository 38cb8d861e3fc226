//! Delete policy for commands started with `agent-guard run`: enforced by
//! seccomp supervision on kernels without BPF LSM (this host), by the LSM
//! hooks where they exist (the VM tier). Same expectations either way.
//! Needs: seccomp user notification or BPF LSM.
use std::process::{Command, Stdio};

use agent_guard_tests::*;

fn start(test: &str) -> (Daemon, Scratch) {
    let cg = TestCgroups::new(test);
    let scratch = Scratch::new(test);
    let policy = format!(
        r#"
[[agent]]
name = "cleaner"
owner = "ops@example.com"
purpose = "delete tests"
cgroup = "{}"

[agent.delete]
default = "deny"
allow = ["{}"]
deny = ["{}"]
"#,
        cg.path("cleaner"),
        scratch.s("work"),
        scratch.s("work/precious"),
    );
    (Daemon::start(&policy, cg), scratch)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rm_allowed_and_denied() {
    let (daemon, scratch) = start("run-rm");
    let ok = scratch.file("work/tmp.txt");
    let bad = scratch.file("work/precious/db.sqlite");
    let outside = scratch.file("elsewhere/x");
    let out = daemon.run_agent("cleaner", &["rm", ok.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!ok.exists());
    let out = daemon.run_agent("cleaner", &["rm", bad.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    assert!(bad.exists(), "a denied delete leaves the file");
    // Default deny applies outside every listed prefix.
    let out = daemon.run_agent("cleaner", &["rm", outside.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(outside.exists());

    let ev = daemon.wait_event("file.unlink", |e| {
        e["target"]["path"] == bad.display().to_string()
    });
    assert_eq!(ev["outcome"], "denied");
    assert_eq!(ev["agent"]["name"], "cleaner");
    assert_eq!(ev["rule"]["match"], scratch.s("work/precious"));
    assert!(ev["agent"]["session"].is_string(), "{ev}");
    let ev = daemon.wait_event("file.unlink", |e| {
        e["target"]["path"] == ok.display().to_string()
    });
    assert_eq!(ev["outcome"], "allowed");
    // Exactly one event per call, whichever backend judged it.
    let events = daemon.events();
    let n = events
        .iter()
        .filter(|e| e["kind"] == "file.unlink" && e["target"]["path"] == bad.display().to_string())
        .count();
    assert_eq!(n, 1, "duplicate events for one call: {events:#?}");
}

#[test]
fn rm_rf_removes_exactly_the_allowed_part() {
    let (daemon, scratch) = start("run-rmrf");
    let kept = scratch.file("work/precious/a/b.txt");
    let gone1 = scratch.file("work/cache/1.bin");
    let gone2 = scratch.file("work/cache/sub/2.bin");
    let out = daemon.run_agent("cleaner", &["rm", "-rf", &scratch.s("work")]);
    assert!(!out.status.success(), "rm -rf reports the refused part");
    assert!(kept.exists(), "the denied subtree stays");
    assert!(!gone1.exists() && !gone2.exists() && !scratch.path("work/cache").exists());
    assert!(
        scratch.path("work").exists(),
        "its parent cannot go: it still holds the denied part"
    );
}

#[test]
fn python_unlink_relative_after_chdir_and_rmtree() {
    let (daemon, scratch) = start("run-python");
    scratch.file("work/a/x.txt");
    scratch.file("work/precious/y.txt");
    scratch.file("work/tree/t1/f");
    scratch.file("work/tree/t2/g");
    let script = format!(
        r#"
import os, shutil
os.chdir({root:?})
os.unlink("a/x.txt")
try:
    os.unlink("precious/y.txt")
    raise SystemExit("denied unlink succeeded")
except PermissionError:
    pass
shutil.rmtree("tree")
print("done")
"#,
        root = scratch.s("work")
    );
    let out = daemon.run_agent("cleaner", &["python3", "-c", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!scratch.path("work/a/x.txt").exists());
    assert!(scratch.path("work/precious/y.txt").exists());
    assert!(!scratch.path("work/tree").exists());
    let ev = daemon.wait_event("file.unlink", |e| {
        e["target"]["path"] == scratch.s("work/precious/y.txt")
    });
    assert_eq!(ev["outcome"], "denied");
}

#[test]
fn git_clean_in_an_allowed_repository() {
    let (daemon, scratch) = start("run-git");
    let repo = scratch.dir("work/repo");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .stdin(Stdio::null())
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    };
    git(&["init", "-q"]);
    scratch.file("work/repo/tracked.txt");
    git(&["add", "tracked.txt"]);
    git(&["commit", "-qm", "init"]);
    let junk = scratch.file("work/repo/build/out.o");
    let ignored = scratch.file("work/repo/.env.local");
    let out = daemon.run_agent(
        "cleaner",
        &["git", "-C", repo.to_str().expect("utf8"), "clean", "-fdx"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!junk.exists() && !ignored.exists());
    assert!(scratch.path("work/repo/tracked.txt").exists());
}

/// Starts the agent with a delete of `file` that waits for stdin to close.
fn waiting_rm(daemon: &Daemon, file: &std::path::Path) -> std::process::Child {
    let script = format!("echo ready; read _; exec rm {}", file.display());
    let mut child = daemon.spawn_agent("cleaner", &["sh", "-c", &script]);
    wait_ready(&mut child);
    child
}

/// Waits for the agent's first line, "ready": it runs, placed in its agent
/// (the daemon answered its join), so the daemon may go away now.
fn wait_ready(child: &mut std::process::Child) {
    use std::io::Read as _;
    let out = child.stdout.as_mut().expect("stdout");
    let mut line = [0u8; 6];
    out.read_exact(&mut line).expect("ready line");
    assert_eq!(&line, b"ready\n");
}

/// Waits until `pid` is blocked inside unlink/unlinkat/rmdir (its
/// /proc/PID/syscall names the call while it waits for an answer).
fn wait_in_delete_call(pid: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let nr = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        if matches!(nr.split(' ').next(), Some("87" | "263" | "84")) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} never reached its delete (syscall: {nr:?})"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn seccomp_only(daemon: &Daemon, test: &str) -> bool {
    if daemon.backend("delete") != "seccomp" {
        skip(
            test,
            "deletes here are guarded by BPF LSM, not by a supervisor that could die",
        );
        return false;
    }
    true
}

#[test]
fn a_clean_stop_fails_supervised_deletes_closed() {
    let (daemon, scratch) = start("run-stop");
    if !seccomp_only(&daemon, "a_clean_stop_fails_supervised_deletes_closed") {
        return;
    }
    let file = scratch.file("work/tmp.txt");
    let mut child = waiting_rm(&daemon, &file);
    let (_, _cgroups) = daemon.stop_keeping_cgroups();
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    assert!(
        !out.status.success(),
        "a delete with no daemon must fail: {}",
        stderr(&out)
    );
    assert!(file.exists(), "fail closed: the file stays");
    assert!(
        stderr(&out).contains("the daemon stopped"),
        "the launcher says why: {}",
        stderr(&out)
    );
}

#[test]
fn a_supervised_delete_waits_through_a_daemon_crash_for_the_successor() {
    let (daemon, scratch) = start("run-crash");
    if !seccomp_only(
        &daemon,
        "a_supervised_delete_waits_through_a_daemon_crash_for_the_successor",
    ) {
        return;
    }
    let policy = std::fs::read_to_string(&daemon.policy_path).expect("policy");
    let file = scratch.file("work/tmp.txt");
    let denied = scratch.file("work/precious/keep.txt");
    let script = format!(
        "echo ready; read _; rm {} && echo removed; rm {} || echo refused",
        file.display(),
        denied.display()
    );
    let mut child = daemon.spawn_agent("cleaner", &["sh", "-c", &script]);
    wait_ready(&mut child);
    let start_ev = daemon.wait_event("agent.start", |_| true);
    let session = start_ev["agent"]["session"].clone();
    let (cgroups, dir) = daemon.crash();

    // No daemon: the delete neither fails nor happens; it waits.
    drop(child.stdin.take());
    let Some(rm) = wait_for_child_rm(&mut child) else {
        let out = child.wait_with_output().expect("wait");
        panic!(
            "the agent's rm never waited for the daemon; the run ended with {:?}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    };
    wait_in_delete_call(rm);
    assert!(file.exists());
    assert!(child.try_wait().expect("try_wait").is_none());

    let daemon = Daemon::start_in(&policy, cgroups, dir);
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout.contains("removed") && stdout.contains("refused"),
        "{stdout}"
    );
    assert!(!file.exists(), "the successor completed the allowed delete");
    assert!(denied.exists(), "and still enforces the policy");
    assert!(
        stderr(&out).contains("session resumed"),
        "the launcher says what happened: {}",
        stderr(&out)
    );
    // The successor knows the run: its events keep their attribution.
    let ev = daemon.wait_event("file.unlink", |e| {
        e["target"]["path"] == denied.display().to_string()
    });
    assert_eq!(ev["agent"]["session"], session);
    let exit = daemon.wait_event("agent.exit", |_| true);
    assert_eq!(exit["agent"]["session"], session);
}

/// The `rm` the agent's shell is running (the shell's only child); None if
/// the run ended without one appearing.
fn wait_for_child_rm(launcher: &mut std::process::Child) -> Option<u64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(pid) = descendants(launcher.id()).into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "rm")
        }) {
            return Some(pid);
        }
        if launcher.try_wait().ok().flatten().is_some() {
            return None;
        }
        assert!(std::time::Instant::now() < deadline, "rm never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn descendants(pid: u32) -> Vec<u64> {
    let mut out = Vec::new();
    let mut todo = vec![pid as u64];
    while let Some(p) = todo.pop() {
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}
