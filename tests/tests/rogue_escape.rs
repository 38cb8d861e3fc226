//! Rogue agent: leaving its agent's cgroup tree (issue 14, "identity
//! cannot be left"). Each test makes the attempt as root, as a hostile
//! agent would, and checks that it failed, that the agent's connect is
//! still denied for a process placed straight into its cgroup, and that
//! the event was emitted. Needs: tp_btf (every supported kernel); in the
//! VM tier the BPF LSM hooks refuse the open instead.
use std::io::Write as _;

use agent_guard_tests::{rogue::*, *};

/// `echo $$ > <cgroup2 root>/cgroup.procs`, then the denied connect, from
/// a process placed in the agent's cgroup by other means than `run`.
#[test]
fn rogue_adopted_agent_writing_the_root_cgroup_procs_is_stopped() {
    let r = Rogue::start("escape-adopted");
    let script = format!(
        "echo pid=$$; echo $$ > {}; echo moved; {}",
        r.root_procs(),
        r.connect_cmd()
    );
    let out = run_in_cgroup(&r.cgroup, &script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("connected"),
        "the escaped agent connected: {text}"
    );
    let pid: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .expect("pid line");
    if r.lsm() {
        // Refused at open: the shell stays in its agent, which denies.
        assert!(text.contains("errno=1"), "{text}");
        let ev = r.expect_event("agent.escape", |e| e["process"]["pid"] == pid);
        assert_eq!(ev["target"]["how"], "cgroup_open");
        assert_eq!(ev["target"]["action"], "refused");
    } else {
        assert!(
            killed(out.status),
            "the escaping shell must be killed: {:?}",
            out.status
        );
        assert!(!text.contains("moved"), "it ran after the move: {text}");
        let ev = r.expect_event("agent.escape", |e| e["target"]["pid"] == pid);
        assert_eq!(ev["target"]["how"], "cgroup_write");
        assert_eq!(ev["target"]["action"], "killed");
        assert_eq!(ev["target"]["cgroup"], "/");
        assert_eq!(
            ev["process"]["pid"], pid,
            "the writer is the escaping shell"
        );
    }
    r.assert_enforced("an escape attempt");
}

/// A descriptor on the root's cgroup.procs opened before the process
/// became an agent's: no open to refuse, so on every kernel the move
/// itself is caught and the process killed before the write returns.
#[test]
fn rogue_escape_through_an_inherited_descriptor_is_killed() {
    let r = Rogue::start("escape-fd");
    let procs = r.cgroup_dir().join("cgroup.procs");
    let script = format!(
        "exec 3> {}; echo $$ > {}; echo pid=$$; echo $$ >&3; echo moved; {}",
        r.root_procs(),
        procs.display(),
        r.connect_cmd()
    );
    let out = sh(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(killed(out.status), "{:?}: {text}", out.status);
    assert!(
        !text.contains("moved") && !text.contains("connected"),
        "{text}"
    );
    let pid: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .expect("pid line");
    let ev = r.expect_event("agent.escape", |e| e["target"]["pid"] == pid);
    assert_eq!(ev["target"]["action"], "killed");
    r.assert_enforced("an escape through an inherited descriptor");
}

/// One agent process moves another out: the mover is killed at once, the
/// moved one when it next leaves a system call, before its connect.
#[test]
fn rogue_agent_moved_out_by_another_agent_process_is_killed() {
    let r = Rogue::start("escape-other");
    let mut victim = spawn_in_cgroup(
        &r.cgroup,
        &format!("echo pid=$$; read go; echo woke; {}", r.connect_cmd()),
    );
    let mut lines = ChildLines::new(victim.stdout.take().expect("stdout"));
    let victim_pid: u64 = lines
        .next_line("victim's pid line")
        .strip_prefix("pid=")
        .and_then(|p| p.parse().ok())
        .expect("victim pid");
    let procs = r.cgroup_dir().join("cgroup.procs");
    let mover = sh(&format!(
        "exec 3> {}; echo $$ > {}; echo {victim_pid} >&3; echo moved-it; sleep 30",
        r.root_procs(),
        procs.display()
    ));
    assert!(
        killed(mover.status),
        "the mover must be killed: {:?}",
        mover.status
    );
    let ev = r.expect_event("agent.escape", |e| e["target"]["pid"] == victim_pid);
    assert_eq!(ev["target"]["action"], "kill_pending");
    assert_ne!(ev["process"]["pid"], victim_pid, "the writer was the mover");
    // Wake the moved shell: its read returns, and it dies on the way out.
    let _ = victim.stdin.as_mut().expect("stdin").write_all(b"go\n");
    drop(victim.stdin.take());
    let status = victim.wait().expect("wait");
    let rest = lines.rest();
    assert!(
        killed(status),
        "the moved process must be killed: {status:?} {rest:?}"
    );
    assert!(rest.is_empty(), "it ran after it left: {rest:?}");
    r.assert_enforced("a move by another agent process");
}

/// clone3(CLONE_INTO_CGROUP) with the cgroup2 root: the parent is killed
/// before clone3 returns, the child before it runs a single instruction.
#[test]
fn rogue_clone_into_another_cgroup_is_killed() {
    let r = Rogue::start("escape-clone3");
    let out = run_in_cgroup(
        &r.cgroup,
        &format!(
            "exec python3 {} {} {}",
            r.script("clone.py"),
            cgroup2_root().display(),
            r.bad.port
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("connected"), "the child connected: {text}");
    assert!(
        killed(out.status),
        "the parent must be killed: {:?} {text}",
        out.status
    );
    let parent: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .expect("pid line");
    let ev = r.expect_event("agent.escape", |e| e["process"]["pid"] == parent);
    assert_eq!(ev["target"]["how"], "clone_into_cgroup");
    assert_eq!(ev["target"]["action"], "kill_pending");
    assert_ne!(
        ev["target"]["pid"], parent,
        "the child is the one that left"
    );
    r.assert_enforced("clone3 into another cgroup");
}

/// The same attempts from `agent-guard run`: refused (Landlock keeps the
/// cgroup filesystems read-only and the filter fails clone3 where BPF LSM
/// is missing; the LSM hooks where it is not), and each one event.
#[test]
fn rogue_a_run_cannot_leave_its_cgroup() {
    let r = Rogue::start("escape-run");
    let script = format!(
        "echo $$ > {} && echo ESCAPED; python3 {} {} {}; {}",
        r.root_procs(),
        r.script("clone.py"),
        cgroup2_root().display(),
        r.bad.port,
        r.connect_cmd()
    );
    let out = r.daemon.run_agent("bot", &["sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("ESCAPED"), "{text}");
    assert!(!text.contains("connected"), "{text}");
    // The write to the root's cgroup.procs is refused at open: by the BPF
    // LSM hook, or here by Landlock, seen at system call exit.
    let ev = r.expect_event("agent.escape", |e| {
        e["target"]["how"] == "cgroup_open" && e["target"]["action"] == "refused"
    });
    assert_eq!(ev["target"]["pid"], ev["process"]["pid"], "{ev}");
    if r.lsm() {
        // clone3 works under a run here: the fork hook kills the caller.
        r.expect_event("agent.escape", |e| {
            e["target"]["how"] == "clone_into_cgroup"
        });
    } else {
        assert_eq!(ev["target"]["cgroup"], "/", "{ev}");
        assert_eq!(ev["target"]["path"], r.root_procs(), "{ev}");
        assert!(
            text.contains("clone3=-1 errno=38"),
            "the filter fails clone3: {text}"
        );
        let ev = r.expect_event("agent.escape", |e| {
            e["target"]["how"] == "clone_into_cgroup"
        });
        assert_eq!(ev["target"]["action"], "refused", "{ev}");
        assert_eq!(ev["target"]["call"], "clone3", "{ev}");
        assert!(
            text.contains("errno=1"),
            "the connect is still denied: {text}"
        );
    }
    r.assert_enforced("a run's escape attempts");
    // One attempt, one event.
    r.stop_exactly("agent.escape", 2, |_| true);
}

/// A parent that forks one escaper after another: each is stopped (killed
/// here, refused at open under BPF LSM), and its events are bounded like
/// every self-defense refusal: a few one by one, the rest counted in one
/// `guard.tamper` event, what `suppressed`, of `escape`. None is lost.
#[test]
fn rogue_a_loop_of_escapers_is_reported_then_counted() {
    let r = Rogue::start("escape-loop");
    let n = 100;
    let script = format!(
        "for i in $(seq {n}); do sh -c 'echo $$ > {}' 2>/dev/null; done; echo looped; {}",
        r.root_procs(),
        r.connect_cmd()
    );
    let began = std::time::Instant::now();
    let out = run_in_cgroup(&r.cgroup, &script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("looped"), "the parent loops on: {text}");
    assert!(
        text.contains("errno=1") && !text.contains("connected"),
        "the connect is still denied: {text}"
    );
    let suppressed = r.expect_event("guard.tamper", |e| {
        e["target"]["what"] == "suppressed" && e["target"]["of"] == "escape"
    });
    assert!(suppressed.get("process").is_none(), "{suppressed}");
    r.assert_enforced("a loop of escapers");
    // The allowance: 10 at once, then one a second while the loop ran.
    let allowance = 10 + began.elapsed().as_secs() + 2;
    let events = r.daemon.stop();
    let one_by_one = events
        .iter()
        .filter(|e| e["kind"] == "agent.escape")
        .count() as u64;
    let counted = suppressed_count(&events, "escape");
    assert!(
        one_by_one <= allowance,
        "{one_by_one} escapes reported one by one (at most {allowance})"
    );
    assert_eq!(
        one_by_one + counted,
        n,
        "every escape is reported or counted ({one_by_one} + {counted})"
    );
}
