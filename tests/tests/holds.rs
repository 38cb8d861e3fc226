//! `ask` holds the call before it happens until on-call decides. On this
//! host deletes are held by seccomp supervision; in the VM tier by the LSM
//! hooks (SIGSTOP + restart). Needs: seccomp user notification or BPF LSM.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{net::UnixStream, process::CommandExt as _},
    process::{Child, Stdio},
};

use agent_guard_tests::*;
use serde_json::Value;

fn start(test: &str, timeout_secs: u64) -> (Daemon, Scratch) {
    let cg = TestCgroups::new(test);
    let scratch = Scratch::new(test);
    let policy = format!(
        r#"
[daemon]
approval_timeout_secs = {timeout_secs}
approvers = {{ uids = [0] }}

[[agent]]
name = "cleaner"
owner = "ops@example.com"
purpose = "hold tests"
cgroup = "{}"

[agent.delete]
default = "allow"
ask = ["{}"]
"#,
        cg.path("cleaner"),
        scratch.s("prod"),
    );
    (Daemon::start(&policy, cg), scratch)
}

/// Starts `argv` as the agent and waits until its delete is held; returns
/// the running child and the hold id.
fn held(daemon: &Daemon, argv: &[&str], path: &str) -> (Child, String) {
    let child = daemon.spawn_agent("cleaner", argv);
    let ev = daemon.wait_event("file.unlink", |e| {
        e["outcome"] == "held" && e["target"]["path"] == path
    });
    let id = ev["hold"]["id"].as_str().expect("hold id").to_string();
    (child, id)
}

/// Hold `id` as `pending --json` lists it.
fn pending_entry(daemon: &Daemon, id: &str) -> Value {
    let out = daemon.cli_output(&["pending", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).expect("pending JSON");
    list.as_array()
        .and_then(|l| l.iter().find(|h| h["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("hold {id} not in pending: {list}"))
}

#[test]
fn approve_completes_the_held_rm_and_deny_fails_it() {
    let (daemon, scratch) = start("hold-rm", 300);
    let file = scratch.file("prod/db.sqlite");
    let path = file.display().to_string();
    let (child, id) = held(&daemon, &["rm", &path], &path);

    // Held before it happened: the file is still there, and on-call sees it.
    assert!(file.exists());
    let entry = pending_entry(&daemon, &id);
    assert_eq!(entry["agent"], "cleaner");
    assert_eq!(entry["owner"], "ops@example.com");
    assert_eq!(entry["target"]["path"], path.as_str());
    assert!(entry["left_ms"].as_u64().is_some_and(|l| l > 0));

    let out = daemon.cli_output(&["approve", &id, "--reason", "ticket OPS-42"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = child.wait_with_output().expect("rm");
    assert!(
        out.status.success(),
        "approved rm completes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file.exists());
    let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(ev["hold"]["decision"], "approved");
    assert_eq!(ev["hold"]["by"]["uid"], 0);
    assert_eq!(ev["hold"]["reason"], "ticket OPS-42");
    assert_eq!(ev["target"]["path"], path.as_str());
    assert_eq!(ev["agent"]["name"], "cleaner");

    // The same again, denied.
    let file = scratch.file("prod/other.sqlite");
    let path = file.display().to_string();
    let (child, id) = held(&daemon, &["rm", &path], &path);
    let out = daemon.cli_output(&["deny", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = child.wait_with_output().expect("rm");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    assert!(file.exists());
    let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(ev["hold"]["decision"], "denied");
    // A decided hold is gone: deciding again is an error.
    assert!(!daemon.cli_output(&["approve", &id]).status.success());
}

/// The daemon is SIGKILLed while an rm is held: the rm stays held, the
/// successor lists the same hold, and approving it completes the rm. On
/// this host the call waits in seccomp (the launcher hands the listener
/// to the successor); in the VM tier it is an LSM hold in the pinned map.
#[test]
fn a_held_rm_survives_a_daemon_crash_and_the_successor_decides_it() {
    let (daemon, scratch) = start("hold-crash", 300);
    let policy = std::fs::read_to_string(&daemon.policy_path).expect("policy");
    let file = scratch.file("prod/db.sqlite");
    let path = file.display().to_string();
    let (child, id) = held(&daemon, &["rm", &path], &path);
    let (cgroups, dir) = daemon.crash();
    assert!(file.exists(), "nothing happens while the daemon is down");

    let daemon = Daemon::start_in(&policy, cgroups, dir);
    let out = daemon.cli_output(&["pending", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).expect("pending JSON");
    let entry = list
        .as_array()
        .and_then(|l| l.iter().find(|h| h["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("the successor must list hold {id}: {list}"));
    assert_eq!(entry["target"]["path"], path.as_str());
    assert!(file.exists());

    let out = daemon.cli_output(&["approve", &id, "--reason", "after the restart"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = child.wait_with_output().expect("rm");
    assert!(
        out.status.success(),
        "the approved rm completes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file.exists());
    let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(ev["hold"]["decision"], "approved");
    assert_eq!(ev["target"]["path"], path.as_str());
    // One held event in all: the successor took the hold back silently.
    assert!(
        !daemon
            .events()
            .iter()
            .any(|e| e["outcome"] == "held" && e["hold"]["id"] == id.as_str()),
        "no second held event"
    );
}

#[test]
fn an_unanswered_hold_expires_as_a_deny() {
    let (daemon, scratch) = start("hold-expire", 2);
    rm_expires(&daemon, &scratch);
}

/// An `rm` of prod/x is held, nobody answers, and it fails: the file stays.
/// Returns the hold id.
fn rm_expires(daemon: &Daemon, scratch: &Scratch) -> String {
    let file = scratch.file("prod/x");
    let path = file.display().to_string();
    let (child, id) = held(daemon, &["rm", &path], &path);
    let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(ev["hold"]["decision"], "expired");
    let out = child.wait_with_output().expect("rm");
    assert!(!out.status.success(), "an expired hold is a deny");
    assert!(file.exists());
    id
}

#[test]
fn a_multithreaded_process_resumes_after_its_held_delete() {
    let (daemon, scratch) = start("hold-threads", 300);
    let file = scratch.file("prod/t.txt");
    let path = file.display().to_string();
    let script = format!(
        r#"
import os, threading, time
done = []
def worker():
    for _ in range(200):
        time.sleep(0.01)
    done.append(1)
t = threading.Thread(target=worker); t.start()
os.unlink({path:?})
t.join()
print("unlinked", len(done), flush=True)
"#
    );
    let (child, id) = held(&daemon, &["python3", "-c", &script], &path);
    assert!(daemon.cli_output(&["approve", &id]).status.success());
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "unlinked 1\n");
    assert!(!file.exists());
}

#[test]
fn a_non_approver_is_refused_and_the_refusal_is_logged() {
    let (daemon, scratch) = start("hold-authz", 300);
    let file = scratch.file("prod/y");
    let path = file.display().to_string();
    let (child, id) = held(&daemon, &["rm", &path], &path);
    let out = daemon
        .cli()
        .args(["approve", &id])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .expect("approve as nobody");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an approver"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = daemon.wait_event("control.refused", |e| e["control"]["hold"] == id.as_str());
    assert_eq!(ev["control"]["by"]["uid"], 65534);
    assert!(file.exists(), "still held");
    assert!(daemon.cli_output(&["deny", &id]).status.success());
    let _ = child.wait_with_output();
}

#[test]
fn garbage_on_the_control_socket_gets_an_error_and_the_daemon_keeps_serving() {
    let (daemon, _scratch) = start("hold-garbage", 300);
    for junk in [
        &b"this is not json\n"[..],
        b"{\"v\":1,\"op\":\"approve_everything\"}\n",
        b"{\"v\":99,\"op\":\"status\"}\n",
        b"[1,2,3]\n",
    ] {
        let mut s = UnixStream::connect(&daemon.socket).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).expect("read timeout");
        s.write_all(junk).expect("write");
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).expect("reply");
        let reply: Value = serde_json::from_str(&line).expect("reply is JSON");
        assert_eq!(reply["ok"], false, "{junk:?} -> {line}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // An over-long line without a newline, then hang-up.
    let mut s = UnixStream::connect(&daemon.socket).expect("connect");
    let _ = s.write_all(&vec![b'x'; 100_000]);
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    // Still serving.
    let out = daemon.cli_output(&["pending", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kill_ends_a_held_run_and_kill_agent_empties_the_agent() {
    let (daemon, scratch) = start("hold-kill", 300);
    let file = scratch.file("prod/k");
    let path = file.display().to_string();
    let (child, id) = held(&daemon, &["rm", &path], &path);
    let out = daemon.cli_output(&["kill", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = child.wait_with_output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(128 + 9),
        "run reports its command was SIGKILLed"
    );
    assert!(file.exists(), "a killed call never happens");
    let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(ev["hold"]["decision"], "killed");

    // Every process of the agent, across runs.
    let a = daemon.spawn_agent("cleaner", &["sleep", "1000"]);
    let b = daemon.spawn_agent("cleaner", &["sh", "-c", "sleep 1000 & sleep 1000; wait"]);
    // Both runs are in the agent before the kill: a run that joins after
    // it is not killed (cgroup.kill takes the processes there), and would
    // keep this test waiting on its sleep.
    for cmd in ["sleep", "sh"] {
        daemon.wait_event("agent.start", |e| e["process"]["cmdline"][0] == cmd);
    }
    let out = daemon.cli_output(&["kill", "--agent", "cleaner"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for child in [a, b] {
        let status = child.wait_with_output().expect("run").status;
        assert_eq!(status.code(), Some(128 + 9));
    }
    let cgroup = daemon.wait_event("agent.kill", |e| e["control"]["target"] == "agent cleaner")["control"]["cgroup"]
        .as_str()
        .expect("cgroup")
        .to_string();
    let events = std::fs::read_to_string(format!("{cgroup}/cgroup.events")).expect("cgroup.events");
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut populated = events.contains("populated 1");
    while populated && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        populated = std::fs::read_to_string(format!("{cgroup}/cgroup.events"))
            .expect("cgroup.events")
            .contains("populated 1");
    }
    assert!(!populated, "no process may be left in the agent's cgroup");
}

#[test]
fn one_subtree_approval_lets_rm_rf_finish_the_tree_and_revoke_ends_it() {
    let (daemon, scratch) = start("hold-subtree", 300);
    let files: Vec<_> = [
        "prod/tree/a/1",
        "prod/tree/a/2",
        "prod/tree/b/3",
        "prod/tree/4",
    ]
    .iter()
    .map(|f| scratch.file(f))
    .collect();
    let tree = scratch.s("prod/tree");
    let child = daemon.spawn_agent("cleaner", &["rm", "-rf", &tree]);
    let ev = daemon.wait_event("file.unlink", |e| e["outcome"] == "held");
    let id = ev["hold"]["id"].as_str().expect("hold id").to_string();
    let out = daemon.cli_output(&["approve", &id, "--scope", "subtree", "--for", "1m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = child.wait_with_output().expect("rm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(files.iter().all(|f| !f.exists()) && !scratch.path("prod/tree").exists());
    let holds = daemon
        .events()
        .iter()
        .filter(|e| e["outcome"] == "held")
        .count();
    assert_eq!(holds, 1, "one approval for the whole tree");
    let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(ev["hold"]["scope"]["scope"]["kind"], "subtree");
    assert!(
        daemon
            .events()
            .iter()
            .any(|e| e["outcome"] == "allowed" && e["grant"]["id"].is_number())
    );

    // The grant is listed, and revoking it brings the holds back.
    let out = daemon.cli_output(&["grants", "--json"]);
    let grants: Value = serde_json::from_slice(&out.stdout).expect("grants JSON");
    let grant = grants[0]["id"].as_u64().expect("a live grant");
    assert_eq!(grants[0]["scope"]["path"], scratch.s("prod"));
    assert!(
        daemon
            .cli_output(&["revoke", &grant.to_string()])
            .status
            .success()
    );
    let again = scratch.file("prod/again");
    let path = again.display().to_string();
    let (child, id) = held(&daemon, &["rm", &path], &path);
    assert!(daemon.cli_output(&["deny", &id]).status.success());
    assert!(!child.wait_with_output().expect("rm").status.success());
    assert!(again.exists());
    // A scope needs a lifetime, and a deny takes none.
    assert!(
        !daemon
            .cli_output(&["approve", "1", "--scope", "agent"])
            .status
            .success()
    );
}

/// An agent's own `approval_timeout_secs` decides how long its calls wait,
/// not [daemon]'s: a held connect (a kernel hold) and a held delete (the
/// delete backend of this kernel) both expire on the agent's 1 s while the
/// daemon would wait 300 s.
#[test]
fn an_agents_own_approval_timeout_expires_its_holds() {
    let cg = TestCgroups::new("hold-agent-timeout");
    let scratch = Scratch::new("hold-agent-timeout");
    let l = Listener::v4();
    let policy = format!(
        r#"
[daemon]
approval_timeout_secs = 300

[[agent]]
name = "cleaner"
owner = "ops@example.com"
purpose = "hold tests"
cgroup = "{}"
approval_timeout_secs = 1

[agent.connect]
default = "allow"
ask = ["127.0.0.1/32:{}"]

[agent.delete]
default = "allow"
ask = ["{}"]
"#,
        cg.path("cleaner"),
        l.port,
        scratch.s("prod"),
    );
    let daemon = Daemon::start(&policy, cg);

    let mut connect = spawn_connect(&daemon, "cleaner", "127.0.0.1", l.port);
    let ev = daemon.wait_event("net.connect", |e| e["outcome"] == "held");
    assert_eq!(ev["hold"]["timeout_secs"], 1);
    let id = ev["hold"]["id"].as_str().expect("hold id").to_string();
    let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(ev["hold"]["decision"], "expired");
    let result = connect.lines.next_line("result line");
    assert!(
        result.starts_with("errno="),
        "an expired hold is a deny: {result}"
    );
    drop(connect.child.stdin.take());
    let _ = connect.child.wait();

    let id = rm_expires(&daemon, &scratch);
    let held_ev = daemon.wait_event("file.unlink", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(held_ev["hold"]["timeout_secs"], 1);
}

/// What on-call decides on travels with the hold: the command line, the
/// chain of parents up to the agent's first process, what the agent did
/// just before, and what each scope would grant; the same in the `held`
/// event and in `pending` (JSON and table).
#[test]
fn a_held_call_carries_its_context_to_every_surface() {
    let (daemon, scratch) = start("hold-context", 300);
    let before = scratch.file("scratch-before.txt");
    let file = scratch.file("prod/data/report.db");
    let (before_s, path) = (before.display().to_string(), file.display().to_string());
    // An outer shell (the agent's first process) starts an inner one that
    // runs the held rm; neither shell execs its last command away.
    let inner = format!("rm -f {path}; true");
    let outer = format!("rm -f {before_s}; sh -c '{inner}'; true");
    let (child, id) = held(&daemon, &["sh", "-c", &outer], &path);
    let ev = daemon.wait_event("file.unlink", |e| e["hold"]["id"] == id.as_str());
    let ctx = &ev["hold"]["context"];

    assert_eq!(
        ev["process"]["cmdline"],
        serde_json::json!(["rm", "-f", path.as_str()])
    );
    let chain = ctx["ancestry"].as_array().expect("ancestry");
    let shown: Vec<(&str, Vec<&str>)> = chain
        .iter()
        .map(|p| {
            let args = p["cmdline"].as_array().expect("cmdline");
            (
                p["comm"].as_str().expect("comm"),
                args.iter().filter_map(Value::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("sh", vec!["sh", "-c", inner.as_str()]),
            ("sh", vec!["sh", "-c", outer.as_str()])
        ],
        "the inner shell, then the agent's first process, and nothing outside the agent: {ctx}"
    );
    assert!(ctx.get("ancestry_truncated").is_none(), "{ctx}");
    // The allowed delete just before is in the last five minutes.
    assert_eq!(ctx["recent"]["window_secs"], 300);
    assert!(
        ctx["recent"]["calls"]["file.unlink"]["allowed"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{ctx}"
    );
    assert!(
        ctx["recent"]["last"]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["target"] == before_s.as_str())),
        "{ctx}"
    );
    // Subtree means the ask rule's path, said before anyone clicks.
    let subtree = ctx["scopes"]
        .as_array()
        .and_then(|s| s.iter().find(|o| o["scope"] == "subtree"))
        .unwrap_or_else(|| panic!("no subtree offer: {ctx}"));
    assert_eq!(subtree["path"], scratch.s("prod").as_str());

    let entry = pending_entry(&daemon, &id);
    assert_eq!(&entry["context"], ctx, "pending shows the event's context");
    assert_eq!(entry["cmdline"], ev["process"]["cmdline"]);
    assert_eq!(entry["purpose"], "hold tests");
    let out = daemon.cli_output(&["pending"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<String> = chain.iter().map(|p| p["pid"].to_string()).collect();
    for needle in [
        format!("command    rm -f {path}"),
        format!("via        {} sh -c", pids[0]),
        format!("<- {} sh -c", pids[1]),
        "purpose \"hold tests\"".into(),
        format!(
            "--scope subtree would grant deletes under {}",
            scratch.s("prod")
        ),
    ] {
        assert!(table.contains(&needle), "{needle:?} not in:\n{table}");
    }

    assert!(daemon.cli_output(&["deny", &id]).status.success());
    let _ = child.wait_with_output();
}
