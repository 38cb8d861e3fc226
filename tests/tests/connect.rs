//! Outbound connect, enforced in the kernel by cgroup/connect4 and
//! cgroup/connect6 on the agent's cgroup. Needs: cgroup sock_addr programs
//! (every kernel agent-guard supports), root.
use agent_guard_tests::*;

const EPERM: i32 = 1;

fn policy(cg: &TestCgroups, mode: &str, connect: &str) -> String {
    format!(
        r#"
[[agent]]
name = "bot"
owner = "alice@example.com"
purpose = "connect tests"
labels = {{ model = "test-model", env = "ci" }}
cgroup = "{}"
mode = "{mode}"

[agent.connect]
{connect}
"#,
        cg.path("bot")
    )
}

#[test]
fn allowed_and_denied_connects_with_attributed_events() {
    let cg = TestCgroups::new("connect");
    let (ok, bad) = (Listener::v4(), Listener::v4());
    let daemon = Daemon::start(
        &policy(
            &cg,
            "enforce",
            &format!(
                "default = \"deny\"\nallow = [\"127.0.0.1/32:{}\"]\ndeny = [\"127.0.0.1/32:{}\"]",
                ok.port, bad.port
            ),
        ),
        cg,
    );

    let allowed = connect_as(&daemon, "bot", "127.0.0.1", ok.port);
    assert_eq!(allowed.errno, 0, "allowed connect must succeed");
    let denied = connect_as(&daemon, "bot", "127.0.0.1", bad.port);
    assert_eq!(denied.errno, EPERM, "denied connect must fail with EPERM");

    let ev = daemon.wait_event("net.connect", |e| e["process"]["pid"] == allowed.pid);
    assert_eq!(ev["outcome"], "allowed");
    assert_eq!(ev["agent"]["name"], "bot");
    assert_eq!(ev["agent"]["owner"], "alice@example.com");
    assert_eq!(ev["agent"]["labels"]["model"], "test-model");
    assert_eq!(ev["process"]["exe"], allowed.exe.as_str());
    assert_eq!(ev["target"]["family"], "ipv4");
    assert_eq!(ev["target"]["address"], "127.0.0.1");
    assert_eq!(ev["target"]["port"], ok.port);
    assert_eq!(ev["rule"]["verdict"], "allow");
    assert!(
        ev["agent"]["session"].is_string(),
        "run's session is attributed: {ev}"
    );

    let ev = daemon.wait_event("net.connect", |e| e["process"]["pid"] == denied.pid);
    assert_eq!(ev["outcome"], "denied");
    assert_eq!(ev["rule"]["verdict"], "deny");
    assert_eq!(ev["rule"]["match"], format!("127.0.0.1/32:{}", bad.port));
    assert!(
        ev["rule"]["source"]
            .as_str()
            .is_some_and(|s| s.contains("policy.toml:"))
    );
    assert_eq!(ev["target"]["port"], bad.port);
    allowed.finish();
    denied.finish();

    // Outside every agent nothing is touched: both ports connect.
    assert_eq!(connect_unguarded("127.0.0.1", ok.port), 0);
    assert_eq!(connect_unguarded("127.0.0.1", bad.port), 0);

    let events = daemon.stop();
    assert_gap_free(&events);
    assert_eq!(
        events.last().map(|e| e["kind"].clone()),
        Some("daemon.stop".into())
    );
    assert!(events.iter().any(|e| e["kind"] == "agent.start"));
    assert!(events.iter().any(|e| e["kind"] == "agent.exit"));
}

#[test]
fn children_of_an_agent_stay_governed() {
    let cg = TestCgroups::new("inherit");
    let bad = Listener::v4();
    let daemon = Daemon::start(
        &policy(
            &cg,
            "enforce",
            &format!(
                "default = \"allow\"\ndeny = [\"127.0.0.1/32:{}\"]",
                bad.port
            ),
        ),
        cg,
    );
    let run = connect_as_grandchild(&daemon, "bot", "127.0.0.1", bad.port);
    assert_eq!(
        run.errno, EPERM,
        "a bash -c grandchild must still be denied"
    );
    let ev = daemon.wait_event("net.connect", |e| e["process"]["pid"] == run.pid);
    assert_eq!(ev["outcome"], "denied");
    assert_eq!(ev["agent"]["name"], "bot");
    run.finish();
}

#[test]
fn ipv6_loopback_is_governed() {
    let cg = TestCgroups::new("ipv6");
    let (ok, bad) = (Listener::v6(), Listener::v6());
    let daemon = Daemon::start(
        &policy(
            &cg,
            "enforce",
            &format!("default = \"deny\"\nallow = [\"[::1]:{}\"]", ok.port),
        ),
        cg,
    );
    let allowed = connect_as(&daemon, "bot", "::1", ok.port);
    assert_eq!(allowed.errno, 0);
    let denied = connect_as(&daemon, "bot", "::1", bad.port);
    assert_eq!(denied.errno, EPERM, "default deny applies to ::1");
    let ev = daemon.wait_event("net.connect", |e| e["process"]["pid"] == denied.pid);
    assert_eq!(ev["target"]["family"], "ipv6");
    assert_eq!(ev["target"]["address"], "::1");
    assert_eq!(ev["rule"]["match"], "default");
    allowed.finish();
    denied.finish();
    assert_eq!(connect_unguarded("::1", bad.port), 0);
}

#[test]
fn audit_mode_allows_and_reports_the_would_be_verdict() {
    let cg = TestCgroups::new("audit");
    let bad = Listener::v4();
    let daemon = Daemon::start(
        &policy(
            &cg,
            "audit",
            &format!(
                "default = \"allow\"\ndeny = [\"127.0.0.1/32:{}\"]",
                bad.port
            ),
        ),
        cg,
    );
    let run = connect_as(&daemon, "bot", "127.0.0.1", bad.port);
    assert_eq!(run.errno, 0, "audit mode must not block");
    let ev = daemon.wait_event("net.connect", |e| e["process"]["pid"] == run.pid);
    assert_eq!(ev["outcome"], "audited");
    assert_eq!(ev["rule"]["verdict"], "deny");
    run.finish();
}

#[test]
fn ask_holds_the_connect_until_on_call_decides() {
    let cg = TestCgroups::new("connect-hold");
    let l = Listener::v4();
    let daemon = Daemon::start(
        &policy(
            &cg,
            "enforce",
            &format!("default = \"allow\"\nask = [\"127.0.0.1/32:{}\"]", l.port),
        ),
        cg,
    );
    for approve in [true, false] {
        let PendingConnect {
            mut child,
            mut lines,
            pid,
        } = spawn_connect(&daemon, "bot", "127.0.0.1", l.port);
        let ev = daemon.wait_event("net.connect", |e| {
            e["outcome"] == "held" && e["process"]["pid"] == pid
        });
        let id = ev["hold"]["id"].as_str().expect("hold id").to_string();
        assert_eq!(ev["rule"]["verdict"], "ask");
        assert_eq!(ev["target"]["port"], l.port);
        wait_stopped(pid, "held connect");
        // Someone else's SIGCONT: the connect restarts into the same hold.
        stray_sigcont_keeps_it_held(pid);
        let holds = daemon
            .events()
            .iter()
            .filter(|e| e["outcome"] == "held" && e["process"]["pid"] == pid)
            .count();
        assert_eq!(holds, 1, "exactly one hold event");

        let verb = if approve { "approve" } else { "deny" };
        let out = daemon.cli().args([verb, &id]).output().expect(verb);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result = lines.next_line("result line");
        if approve {
            assert_eq!(result, "connected");
        } else {
            assert_eq!(result, format!("errno={EPERM}"), "EPERM, never errno 513");
        }
        drop(child.stdin.take());
        let _ = child.wait();
        let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
        assert_eq!(
            ev["hold"]["decision"],
            if approve { "approved" } else { "denied" }
        );
    }
}

#[test]
fn enforcement_outlives_a_crashed_daemon_and_a_successor_takes_over() {
    let cg = TestCgroups::new("crash");
    let agent_cg = cg.path("bot");
    let (ok, bad) = (Listener::v4(), Listener::v4());
    let policy = policy(
        &cg,
        "enforce",
        &format!(
            "default = \"allow\"\ndeny = [\"127.0.0.1/32:{}\"]",
            bad.port
        ),
    );
    // Made by the test, as an adopted cgroup: the daemon never removes it,
    // so processes can be placed in it after the daemon stops.
    std::fs::create_dir_all(cgroup2_root().join(&agent_cg)).expect("agent cgroup");
    let daemon = Daemon::start(&policy, cg);
    let connect = |port: u16| {
        run_in_cgroup(
            &agent_cg,
            &format!(
                "exec python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}))'"
            ),
        )
    };
    assert!(
        !connect(bad.port).status.success(),
        "denied while the daemon runs"
    );

    // A crash must not open the gate: the pinned programs keep enforcing.
    let (cg, dir) = daemon.crash();
    let out = connect(bad.port);
    assert!(!out.status.success(), "denied with no daemon at all");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionError"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        connect(ok.port).status.success(),
        "allowed traffic still flows"
    );

    // A successor takes over the same state directory with no gap, retiring
    // the dead daemon's pins once its own are in force.
    let daemon = Daemon::start_in(&policy, cg, dir);
    assert!(!connect(bad.port).status.success());
    // A clean stop releases enforcement, and says so.
    let (events, _cgroups) = daemon.stop_keeping_cgroups();
    let stop = events
        .iter()
        .find(|e| e["kind"] == "daemon.stop")
        .expect("daemon.stop");
    assert_eq!(stop["daemon"]["enforcement"], "released");
    // The kernel frees a released link from a workqueue: wait for it.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !connect(bad.port).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "still enforced after a clean stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_held_connect_survives_a_daemon_crash_and_is_decided_by_its_successor() {
    let cg = TestCgroups::new("hold-restart");
    let l = Listener::v4();
    let policy = policy(
        &cg,
        "enforce",
        &format!("default = \"allow\"\nask = [\"127.0.0.1/32:{}\"]", l.port),
    );
    let daemon = Daemon::start(&policy, cg);
    let PendingConnect {
        mut child,
        mut lines,
        pid,
    } = spawn_connect(&daemon, "bot", "127.0.0.1", l.port);
    let ev = daemon.wait_event("net.connect", |e| {
        e["outcome"] == "held" && e["process"]["pid"] == pid
    });
    let id = ev["hold"]["id"].as_str().expect("hold id").to_string();

    let (cg, dir) = daemon.crash();
    let daemon = Daemon::start_in(&policy, cg, dir);
    let out = daemon
        .cli()
        .args(["pending", "--json"])
        .output()
        .expect("pending");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pending JSON");
    assert!(
        list.as_array()
            .is_some_and(|l| l.iter().any(|h| h["id"] == id.as_str())),
        "the successor must show the call held before the crash: {list}"
    );
    let out = daemon
        .cli()
        .args(["approve", &id])
        .output()
        .expect("approve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines.next_line("result"), "connected");
    drop(child.stdin.take());
    let _ = child.wait();
}

/// An `ask` connect made while no daemon runs: the pinned programs hold it
/// and record it in the pinned ring buffer; the successor reads the record,
/// lists the hold, and its approval completes the call.
#[test]
fn a_connect_held_while_no_daemon_runs_reaches_the_successor() {
    use std::io::Write as _;
    const PY_LATE: &str = r#"
import os, socket, sys
print("pid=%d" % os.getpid(), flush=True)
sys.stdin.readline()
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
    print("connected", flush=True)
except OSError as e:
    print("errno=%d" % e.errno, flush=True)
sys.stdin.read()
"#;
    let cg = TestCgroups::new("hold-downtime");
    let l = Listener::v4();
    let policy = policy(
        &cg,
        "enforce",
        &format!("default = \"allow\"\nask = [\"127.0.0.1/32:{}\"]", l.port),
    );
    let daemon = Daemon::start(&policy, cg);
    let mut child = daemon.spawn_agent("bot", &["python3", "-c", PY_LATE, &l.port.to_string()]);
    let mut lines = ChildLines::new(child.stdout.take().expect("stdout"));
    let first = lines.next_line("pid line");
    let pid: u32 = first
        .strip_prefix("pid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));

    let (cg, dir) = daemon.crash();
    // No daemon: the call is made now, and held by the pinned programs.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("go");
    wait_stopped(pid, "connect held with no daemon");

    let daemon = Daemon::start_in(&policy, cg, dir);
    let ev = daemon.wait_event("net.connect", |e| {
        e["outcome"] == "held" && e["process"]["pid"] == pid
    });
    let id = ev["hold"]["id"].as_str().expect("hold id").to_string();
    assert_eq!(ev["target"]["port"], l.port);
    let out = daemon
        .cli()
        .args(["approve", &id])
        .output()
        .expect("approve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines.next_line("result"), "connected");
    drop(stdin);
    let _ = child.wait();
}

/// A hostile agent execs another binary under the name of the one it
/// started as: same pid, same start time, same comm. Its events must name
/// the new image, not the details cached for the old one, or an auditor
/// would read a trusted program where another ran.
#[test]
fn rogue_an_exec_under_a_trusted_name_is_attributed_to_the_new_image() {
    use std::io::Write as _;
    let cg = TestCgroups::new("exec-name");
    let scratch = Scratch::new("exec-name");
    let ok = Listener::v4();
    let daemon = Daemon::start(&policy(&cg, "enforce", "default = \"allow\""), cg);
    // The other binary: a copy of bash, still named bash.
    let copy = scratch.path("elsewhere/bash");
    std::fs::create_dir_all(scratch.path("elsewhere")).expect("dir");
    std::fs::copy("/bin/bash", &copy).expect("copy bash");
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{}; exec 3>&-", ok.port);
    let script = format!(
        "{connect}; read _; exec {} -c '{connect}; read _' second-ima\"\"ge",
        copy.display()
    );
    let mut agent = daemon.spawn_agent("bot", &["bash", "-c", &script]);
    let port = ok.port;
    let first = daemon.wait_event("net.connect", |e| e["target"]["port"] == port);
    assert_eq!(first["outcome"], "allowed", "{first}");
    assert!(
        !first["process"]["cmdline"]
            .to_string()
            .contains("second-image"),
        "{first}"
    );
    let mut stdin = agent.stdin.take().expect("stdin");
    stdin.write_all(b"\n").expect("let it exec");
    let second = daemon.wait_event("net.connect", |e| {
        e["target"]["port"] == port && e["seq"] != first["seq"]
    });
    assert_eq!(
        second["process"]["pid"], first["process"]["pid"],
        "the same process, after its exec"
    );
    assert_eq!(second["process"]["comm"], first["process"]["comm"]);
    assert_eq!(
        second["process"]["exe"],
        copy.display().to_string(),
        "the new image, not the cached one: {second}"
    );
    assert!(
        second["process"]["cmdline"]
            .to_string()
            .contains("second-image"),
        "{second}"
    );
    stdin.write_all(b"\n").expect("let it exit");
    drop(stdin);
    assert!(agent.wait().expect("agent").success());
}
