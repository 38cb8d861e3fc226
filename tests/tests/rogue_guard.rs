//! Rogue agent: the guard's processes, files and kernel objects (issue
//! 14, "off limits to agents"). A root agent tries `kill -9` on the daemon
//! and its launcher, `bpftool link detach` on the guard's link, ptrace and
//! memory reads of the daemon, and reading or writing the daemon's state
//! and policy. Each attempt must fail, the agent's connect must stay
//! denied for a process placed straight into its cgroup, and where the
//! kernel reports refusals (BPF LSM) the event must be there.
use agent_guard_tests::{rogue::*, *};

/// The attempts, as one shell script. `launcher` is the run's launcher
/// (for a run, the shell's parent), if there is one.
fn attempts(r: &Rogue, launcher: bool) -> String {
    let daemon = r.daemon.pid();
    let link = guard_link_id(&r.cgroup_dir());
    let policy = r.daemon.policy_path.display().to_string();
    let state = r.daemon.dir.join("state");
    // One of the guard's pinned links, named from outside every agent.
    let pin = std::fs::read_dir(state.join("bpf/links"))
        .expect("the daemon's pinned links")
        .flatten()
        .next()
        .expect("a pinned link")
        .path();
    format!(
        "kill -9 {daemon} && echo KILLED_DAEMON
{kill_launcher}
bpftool link detach id {link} && echo DETACHED
cat {policy} >/dev/null && echo READ_POLICY
cat {state}/chain.json >/dev/null && echo READ_STATE
echo x > {state}/evil && echo WROTE_STATE
rm {pin} && echo UNPINNED
python3 {reach} {daemon}
grep NoNewPrivs /proc/self/status
{connect}",
        state = state.display(),
        pin = pin.display(),
        kill_launcher = if launcher {
            "kill -9 $PPID && echo KILLED_LAUNCHER"
        } else {
            ""
        },
        reach = r.script("reach.py"),
        connect = r.connect_cmd()
    )
}

fn assert_all_failed(r: &Rogue, text: &str) {
    for done in [
        "KILLED_DAEMON",
        "KILLED_LAUNCHER",
        "DETACHED",
        "READ_POLICY",
        "READ_STATE",
        "WROTE_STATE",
        "UNPINNED",
        "ptrace=0",
        "process_vm_readv=0",
        "mem=0",
        "pidfd_getfd=0",
        "connected",
    ] {
        assert!(!text.contains(done), "{done}: the attempt worked:\n{text}");
    }
    assert!(
        text.contains("errno=1"),
        "the connect must be denied:\n{text}"
    );
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(r.daemon.pid() as i32), None).is_ok(),
        "the daemon must be alive"
    );
}

#[test]
fn rogue_a_run_cannot_reach_the_guard() {
    let r = Rogue::start("guard-run");
    let out = r
        .daemon
        .run_agent("bot", &["sh", "-c", &attempts(&r, true)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_all_failed(&r, &text);
    assert!(
        text.contains("NoNewPrivs:\t1"),
        "runs get no_new_privs: {text}"
    );
    if r.lsm() {
        let daemon = u64::from(r.daemon.pid());
        r.expect_event("guard.tamper", |e| {
            e["target"]["what"] == "signal" && e["target"]["pid"] == daemon
        });
        r.expect_event("guard.tamper", |e| e["target"]["what"] == "bpf");
        r.expect_event("guard.tamper", |e| e["target"]["what"] == "ptrace");
        let ev = r.expect_event("guard.tamper", |e| e["target"]["what"] == "file");
        assert!(ev["target"]["protected"].is_string(), "{ev}");
    }
    r.assert_enforced("a run's attempts on the guard");
}

#[test]
fn rogue_an_adopted_agent_cannot_reach_the_guard() {
    let r = Rogue::start("guard-adopted");
    if skip_unless(
        r.lsm(),
        "rogue_an_adopted_agent_cannot_reach_the_guard",
        "BPF LSM (without it nothing refuses signals, ptrace, bpf(2) or file access by a \
         process not started by `run`; `agent-guard doctor` names each)",
    ) {
        return;
    }
    let out = run_in_cgroup(&r.cgroup, &attempts(&r, false));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_all_failed(&r, &text);
    for what in ["signal", "bpf", "ptrace", "file"] {
        r.expect_event("guard.tamper", |e| e["target"]["what"] == what);
    }
    r.assert_enforced("an adopted agent's attempts on the guard");
}
