//! Rogue agent: the guard's processes, files and kernel objects (issue
//! 14, "off limits to agents"). A root agent tries `kill -9` on the daemon
//! and its launcher, every other signal call, `bpftool link detach` on the
//! guard's link, ptrace, memory reads and process_madvise of the daemon
//! (and of a run's launcher, which holds its seccomp listener), and
//! reading or writing the daemon's state, policy, chain key and event log.
//! Each attempt must fail, the agent's connect must stay denied for a
//! process placed straight into its cgroup, and each attempt must be one
//! event: from the BPF LSM hooks in the VM, from the observer at system
//! call exit on this kernel (where Landlock and the seccomp filter refuse
//! without a word).
use agent_guard_tests::{rogue::*, *};

/// The attempts, as one shell script. `launcher` is the run's launcher
/// (for a run, the shell's parent), if there is one.
fn attempts(r: &Rogue, launcher: bool) -> String {
    let daemon = r.daemon.pid();
    let link = guard_link_id(&r.cgroup_dir());
    let policy = r.daemon.policy_path.display().to_string();
    let state = r.daemon.dir.join("state");
    let pin = pinned_link(r);
    format!(
        "echo launcher=$PPID
kill -9 {daemon} && echo KILLED_DAEMON
{kill_launcher}
bpftool link detach id {link} && echo DETACHED
cat {policy} >/dev/null && echo READ_POLICY
cat {chain_tip} >/dev/null && echo READ_STATE
echo x > {state}/evil && echo WROTE_STATE
rm {pin} && echo UNPINNED
cat {key} >/dev/null && echo READ_KEY
cat {log} >/dev/null && echo READ_LOG
echo x >> {log} && echo WROTE_LOG
python3 {reach} {daemon}
grep NoNewPrivs /proc/self/status
{connect}",
        state = state.display(),
        chain_tip = made(&state.join("chain.json"), "the chain tip").display(),
        pin = pin.display(),
        key = r.chain_key.display(),
        log = event_log(r).display(),
        kill_launcher = if launcher {
            "kill -9 $PPID && echo KILLED_LAUNCHER"
        } else {
            ""
        },
        reach = r.script("reach.py"),
        connect = r.connect_cmd()
    )
}

/// The daemon's event log, once its file sink has made it.
fn event_log(r: &Rogue) -> &std::path::Path {
    made(&r.event_log, "the file sink")
}

/// `path`, once the daemon has made it: reading a file that is not there
/// yet fails with ENOENT before any guard sees it, and says nothing about
/// the guard. (The chain tip is written at the first periodic tick.)
fn made<'a>(path: &'a std::path::Path, by: &str) -> &'a std::path::Path {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{by} never made {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    path
}

/// One of the guard's pinned links, named from outside every agent.
fn pinned_link(r: &Rogue) -> std::path::PathBuf {
    std::fs::read_dir(r.daemon.dir.join("state/bpf/links"))
        .expect("the daemon's pinned links")
        .flatten()
        .next()
        .expect("a pinned link")
        .path()
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
        "READ_KEY",
        "READ_LOG",
        "WROTE_LOG",
        "ptrace=0",
        "process_vm_readv=0",
        "mem=0",
        "pidfd_getfd=0",
        "kcmp=0",
        "process_madvise=0",
        "connected",
    ] {
        assert!(!text.contains(done), "{done}: the attempt worked:\n{text}");
    }
    // Any other errno would mean it got past the permission check.
    for line in text.lines().filter(|l| l.starts_with("process_madvise=")) {
        assert!(
            line == "process_madvise=1" || line == "process_madvise=13",
            "process_madvise must be refused (EPERM or EACCES), not {line}:\n{text}"
        );
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

/// The calls reach.py makes on a guard process: within one agent's
/// allowance of ptrace refusals (10 at once), so each is one event.
const REACHES: usize = 6;

/// The events every backend gives for [`attempts`]: one per attempt.
fn expect_attempt_events(r: &Rogue, launcher: Option<u64>) {
    let daemon = u64::from(r.daemon.pid());
    r.expect_event("guard.tamper", |e| {
        e["target"]["what"] == "signal" && e["target"]["pid"] == daemon
    });
    if let Some(launcher) = launcher {
        r.expect_event("guard.tamper", |e| {
            e["target"]["what"] == "signal" && e["target"]["pid"] == launcher
        });
    }
    r.expect_event("guard.tamper", |e| e["target"]["what"] == "bpf");
    // ptrace, process_vm_readv, /proc/PID/mem, pidfd_getfd, kcmp,
    // process_madvise.
    r.expect_events("guard.tamper", REACHES, |e| {
        e["target"]["what"] == "ptrace" && e["target"]["pid"] == daemon
    });
    let policy = r.daemon.policy_path.display().to_string();
    let state = r.daemon.dir.join("state").display().to_string();
    let file = |protected: String, write: bool| {
        move |e: &serde_json::Value| {
            e["target"]["what"] == "file"
                && e["target"]["protected"] == protected.as_str()
                && e["target"]["write"] == write
        }
    };
    r.expect_event("guard.tamper", file(policy, false));
    r.expect_event("guard.tamper", file(state.clone(), false));
    r.expect_event(
        "guard.tamper",
        file(r.chain_key.display().to_string(), false),
    );
    let logs = r.event_log.parent().expect("log dir").display().to_string();
    r.expect_event("guard.tamper", file(logs.clone(), false));
    r.expect_event("guard.tamper", file(logs, true));
    // The write and the unpin: the pins' bpffs is protected by itself (the
    // BPF LSM hooks name it), and lies in the state dir (which `run`'s
    // supervisor names).
    r.expect_events("guard.tamper", 2, |e| {
        e["target"]["what"] == "file"
            && e["target"]["write"] == true
            && e["target"]["protected"]
                .as_str()
                .is_some_and(|p| p.starts_with(state.as_str()))
    });
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
    let launcher: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("launcher="))
        .and_then(|p| p.parse().ok())
        .expect("launcher line");
    expect_attempt_events(&r, Some(launcher));
    if !r.lsm() {
        // Seen at system call exit: the call is named too.
        let daemon = u64::from(r.daemon.pid());
        for call in [
            "ptrace",
            "process_vm_readv",
            "pidfd_getfd",
            "kcmp",
            "process_madvise",
        ] {
            r.expect_event("guard.tamper", |e| {
                e["target"]["what"] == "ptrace" && e["target"]["call"] == call
            });
        }
        let mem = format!("/proc/{daemon}/mem");
        r.expect_event("guard.tamper", |e| e["target"]["path"] == mem.as_str());
        r.expect_event("guard.tamper", |e| {
            e["target"]["what"] == "bpf" && e["target"]["call"] == "bpf"
        });
        r.expect_event("guard.tamper", |e| {
            e["target"]["what"] == "signal" && e["target"]["call"] == "kill"
        });
    }
    r.assert_enforced("a run's attempts on the guard");
    let daemon = u64::from(r.daemon.pid());
    // One attempt, one event: the backends never both report.
    r.stop_exactly("guard.tamper", REACHES, |e| {
        e["target"]["what"] == "ptrace" && e["target"]["pid"] == daemon
    });
}

/// The run's launcher holds its seccomp listener: taking it (pidfd_getfd)
/// would let the agent answer its own deletes. ptrace and its kin on the
/// launcher are refused and reported like those on the daemon (a test of
/// its own: both reaches at once would exceed one agent's allowance).
#[test]
fn rogue_a_run_cannot_reach_its_launcher() {
    let r = Rogue::start("guard-launcher");
    let script = format!(
        "echo launcher=$PPID; python3 {} $PPID; {}",
        r.script("reach.py"),
        r.connect_cmd()
    );
    let out = r.daemon.run_agent("bot", &["sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_all_failed(&r, &text);
    let launcher: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("launcher="))
        .and_then(|p| p.parse().ok())
        .expect("launcher line");
    r.expect_events("guard.tamper", REACHES, |e| {
        e["target"]["what"] == "ptrace" && e["target"]["pid"] == launcher
    });
    r.assert_enforced("a run's reach for its launcher");
    r.stop_exactly("guard.tamper", REACHES, |e| {
        e["target"]["what"] == "ptrace" && e["target"]["pid"] == launcher
    });
}

/// Every system call that sends a signal, aimed at the daemon or one of
/// its threads from a run: each refused, each one event naming the daemon.
#[test]
fn rogue_every_signal_call_to_the_guard_is_refused_and_reported() {
    let r = Rogue::start("guard-signals");
    let daemon = r.daemon.pid();
    let script = format!("python3 {} {daemon}", r.script("signals.py"));
    let out = r.daemon.run_agent("bot", &["sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout);
    let calls = [
        "kill",
        "tkill",
        "tgkill",
        "rt_sigqueueinfo",
        "rt_tgsigqueueinfo",
        "pidfd_send_signal",
        "pidfd_send_signal_proc",
    ];
    for call in calls {
        let errno = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{call}=")))
            .unwrap_or_else(|| panic!("no {call} line: {text}"));
        assert_eq!(errno, "1", "{call} must fail with EPERM: {text}");
    }
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon as i32), None).is_ok(),
        "the daemon must be alive"
    );
    let daemon = u64::from(daemon);
    let signal = move |e: &serde_json::Value| {
        e["target"]["what"] == "signal"
            && e["target"]["pid"] == daemon
            && e["target"]["signal"] == 15
    };
    r.expect_events("guard.tamper", calls.len(), signal);
    if !r.lsm() {
        for call in [
            "kill",
            "tkill",
            "tgkill",
            "rt_sigqueueinfo",
            "rt_tgsigqueueinfo",
        ] {
            r.expect_event("guard.tamper", |e| signal(e) && e["target"]["call"] == call);
        }
        r.expect_events("guard.tamper", 2, |e| {
            signal(e) && e["target"]["call"] == "pidfd_send_signal"
        });
    }
    r.assert_enforced("every signal call at the guard");
    r.stop_exactly("guard.tamper", calls.len(), signal);
}

/// An agent refused in a loop: its first refusals are reported one by
/// one, the rest counted in one event, and nothing is lost. Signals are
/// refused by the kernel (Landlock here, BPF LSM in the VM), the unlink of
/// a pinned link by run's supervisor here and by BPF LSM in the VM.
#[test]
fn rogue_a_looping_agent_is_reported_then_counted() {
    let r = Rogue::start("guard-loop");
    let daemon = r.daemon.pid();
    let n = 300;
    let pin = pinned_link(&r);
    let script = format!(
        "python3 {} {daemon} {n}; python3 {} {} {n}",
        r.script("kill_loop.py"),
        r.script("unlink_loop.py"),
        pin.display()
    );
    let out = r.daemon.run_agent("bot", &["sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches(&format!("refused={n}")).count(),
        2,
        "every kill and unlink refused: {text}"
    );
    for of in ["signal", "file"] {
        let suppressed = r.expect_event("guard.tamper", |e| {
            e["target"]["what"] == "suppressed" && e["target"]["of"] == of
        });
        assert!(suppressed.get("process").is_none(), "{suppressed}");
    }
    assert!(pin.exists(), "the pin is still there");
    r.assert_enforced("loops of refused signals and unlinks");
    let events = r.daemon.stop();
    for of in ["signal", "file"] {
        let one_by_one = events
            .iter()
            .filter(|e| e["kind"] == "guard.tamper" && e["target"]["what"] == of)
            .count() as u64;
        let counted = suppressed_count(&events, of);
        assert!(
            one_by_one <= 10 + 5,
            "{of}: {one_by_one} reported one by one: the burst is 10, then one a second"
        );
        assert_eq!(
            one_by_one + counted,
            n,
            "{of}: every refusal is reported or counted ({one_by_one} + {counted})"
        );
    }
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
    expect_attempt_events(&r, None);
    r.assert_enforced("an adopted agent's attempts on the guard");
}

/// A run's launcher is non-dumpable on every backend: it holds the run's
/// seccomp listener, and a dumpable process's memory and descriptors are
/// open to any process of its uid. Run by nobody, its /proc/PID/environ
/// (a ptrace read check) is refused to another process of nobody's
/// outside every agent, while that of its command (dumpable) is not.
#[test]
fn rogue_a_runs_launcher_is_not_dumpable() {
    use std::{io::Write as _, os::unix::process::CommandExt as _, process::Stdio};
    let r = Rogue::start("guard-dumpable");
    let mut run = r
        .daemon
        .cli()
        .args(["run", "--agent", "bot", "--"])
        .args(["sh", "-c", "echo launcher=$PPID command=$$; read x"])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("agent-guard run as nobody");
    let line = ChildLines::new(run.stdout.take().expect("stdout")).next_line("pid line");
    let pid = |key: &str| -> u32 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    let (launcher, command) = (pid("launcher="), pid("command="));
    let read_as_nobody = |pid: u32| {
        std::process::Command::new("cat")
            .arg(format!("/proc/{pid}/environ"))
            .uid(65534)
            .gid(65534)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("cat as nobody")
    };
    let theirs = read_as_nobody(command);
    assert!(
        theirs.status.success(),
        "nobody reads its own dumpable process's environ: {}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    let out = read_as_nobody(launcher);
    assert!(
        !out.status.success(),
        "the launcher {launcher} is dumpable: nobody read its environ"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = run.stdin.take().expect("stdin").write_all(b"done\n");
    let status = run.wait().expect("wait");
    assert!(status.success(), "the run ended: {status}");
    r.assert_enforced("a run by nobody");
}
