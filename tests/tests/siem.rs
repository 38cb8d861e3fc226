//! The SIEM contract of the event stream: every kind a real run emits
//! validates against docs/events.schema.json, and the `ocsf` object
//! classifies allowed, denied, held-then-approved and held-then-denied
//! calls right. Needs: cgroup_sock_addr, and seccomp user notification or
//! BPF LSM for the deletes.
use std::{
    collections::BTreeSet, net::TcpListener, os::unix::process::CommandExt as _, process::Stdio,
};

use agent_guard_tests::*;
use serde_json::Value;

const EPERM: i32 = 1;

fn policy(cg: &TestCgroups, scratch: &Scratch, ok: u16, bad: u16, ask: u16, extra: &str) -> String {
    format!(
        r#"
[daemon]
approvers = {{ uids = [0] }}

[[agent]]
name = "bot"
owner = "alice@example.com"
purpose = "siem tests"
labels = {{ model = "test-model", env = "ci" }}
cgroup = "{}"

[agent.connect]
default = "deny"
allow = ["127.0.0.1/32:{ok}"]
deny = ["127.0.0.1/32:{bad}"]
ask = ["127.0.0.1/32:{ask}"]

[agent.delete]
default = "allow"
deny = ["{}"]
ask = ["{}"]

[[sink]]
type = "stdout"
{extra}
"#,
        cg.path("bot"),
        scratch.s("keep"),
        scratch.s("ask"),
    )
}

/// Holds an `rm` of `path` and decides it.
fn held_rm(daemon: &Daemon, path: &str, approve: bool) -> (Value, Value) {
    let child = daemon.spawn_agent("bot", &["rm", path]);
    let held = daemon.wait_event("file.unlink", |e| {
        e["outcome"] == "held" && e["target"]["path"] == path
    });
    let id = held["hold"]["id"].as_str().expect("hold id").to_string();
    daemon.cli_ok(&[if approve { "approve" } else { "deny" }, &id]);
    let out = child.wait_with_output().expect("rm");
    assert_eq!(out.status.success(), approve);
    let decision = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    (held, decision)
}

#[track_caller]
fn assert_ocsf(ev: &Value, class: u64, activity: u64, action: u64, disposition: u64) {
    let o = &ev["ocsf"];
    assert_eq!(o["class_uid"], class, "class_uid of {ev}");
    assert_eq!(o["activity_id"], activity, "activity_id of {ev}");
    assert_eq!(o["type_uid"], class * 100 + activity, "type_uid of {ev}");
    assert_eq!(o["action_id"], action, "action_id of {ev}");
    assert_eq!(o["disposition_id"], disposition, "disposition_id of {ev}");
    assert_eq!(o["metadata"]["product"]["name"], "agent-guard");
}

/// The agent as OCSF's actor: the agent as the application, its run, its
/// process; its owner and labels (which OCSF has no attribute for) under
/// `unmapped`.
#[track_caller]
fn assert_actor(ev: &Value) {
    let actor = &ev["ocsf"]["actor"];
    assert_eq!(actor["app_name"], "bot", "{ev}");
    assert_eq!(actor["app_uid"], ev["agent"]["cgroup_id"].to_string());
    let agent = &ev["ocsf"]["unmapped"]["agent"];
    assert_eq!(agent["owner"], "alice@example.com");
    assert_eq!(agent["labels"]["model"], "test-model");
    assert_eq!(actor["session"]["uid"], ev["agent"]["session"]);
    assert_eq!(actor["process"]["pid"], ev["process"]["pid"]);
    assert_eq!(
        actor["process"]["user"]["uid"],
        ev["process"]["uid"].to_string(),
        "OCSF's user.uid is a string"
    );
}

#[test]
fn ocsf_classifies_allowed_denied_approved_and_rejected_calls() {
    let cg = TestCgroups::new("siem-ocsf");
    let scratch = Scratch::new("siem-ocsf");
    let (ok, bad, ask) = (Listener::v4(), Listener::v4(), Listener::v4());
    let daemon = Daemon::start(&policy(&cg, &scratch, ok.port, bad.port, ask.port, ""), cg);

    let allowed = connect_as(&daemon, "bot", "127.0.0.1", ok.port);
    let denied = connect_as(&daemon, "bot", "127.0.0.1", bad.port);
    assert_eq!((allowed.errno, denied.errno), (0, EPERM));
    let ev = daemon.wait_event("net.connect", |e| e["process"]["pid"] == allowed.pid);
    assert_ocsf(&ev, 4001, 1, 1, 1);
    assert_actor(&ev);
    assert_eq!(ev["ocsf"]["dst_endpoint"]["port"], ok.port);
    let ev = daemon.wait_event("net.connect", |e| e["process"]["pid"] == denied.pid);
    assert_ocsf(&ev, 4001, 5, 2, 2);
    assert_eq!(ev["ocsf"]["status_id"], 2);
    allowed.finish();
    denied.finish();

    let (held, approved) = decide_held_connect(&daemon, "bot", ask.port, true);
    assert_ocsf(&held, 4001, 1, 99, 14);
    assert_ocsf(&approved, 4001, 1, 1, 8);
    assert_actor(&approved);
    let (held, rejected) = decide_held_connect(&daemon, "bot", ask.port, false);
    assert_ocsf(&held, 4001, 1, 99, 14);
    // Refused, after the hold: activity Refuse, disposition Rejected.
    assert_ocsf(&rejected, 4001, 5, 2, 25);

    let gone = scratch.file("free/a");
    let kept = scratch.file("keep/b");
    let out = daemon.run_agent("bot", &["rm", &scratch.s("free/a"), &scratch.s("keep/b")]);
    assert!(!out.status.success());
    assert!(!gone.exists() && kept.exists());
    let ev = daemon.wait_event("file.unlink", |e| {
        e["target"]["path"] == scratch.s("free/a")
    });
    assert_ocsf(&ev, 1001, 4, 1, 1);
    assert_actor(&ev);
    assert_eq!(ev["ocsf"]["file"]["path"], scratch.s("free/a"));
    let ev = daemon.wait_event("file.unlink", |e| {
        e["target"]["path"] == scratch.s("keep/b")
    });
    assert_ocsf(&ev, 1001, 4, 2, 2);

    scratch.file("ask/c");
    scratch.file("ask/d");
    let (held, approved) = held_rm(&daemon, &scratch.s("ask/c"), true);
    assert_ocsf(&held, 1001, 4, 99, 14);
    assert_ocsf(&approved, 1001, 4, 1, 8);
    let (held, rejected) = held_rm(&daemon, &scratch.s("ask/d"), false);
    assert_ocsf(&held, 1001, 4, 99, 14);
    assert_ocsf(&rejected, 1001, 4, 2, 25);

    let start = daemon.wait_event("agent.start", |_| true);
    let o = &start["ocsf"];
    assert_eq!(
        (&o["class_uid"], &o["activity_id"]),
        (&1007.into(), &1.into())
    );
    assert_eq!(o["type_uid"], 100_701);
    // A run starting is no security control's decision.
    assert!(o.get("action_id").is_none() && o.get("disposition_id").is_none());
    assert_eq!(o["actor"]["app_name"], "bot");
    assert_eq!(o["process"]["pid"], start["process"]["pid"]);
}

#[test]
fn every_event_of_a_full_run_validates_against_the_schema() {
    let cg = TestCgroups::new("siem-schema");
    let scratch = Scratch::new("siem-schema");
    let (ok, bad, ask) = (Listener::v4(), Listener::v4(), Listener::v4());
    // A collector that is not there, with a tiny queue: its losses are
    // reported as `loss` events.
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = dead.local_addr().expect("addr").port();
    drop(dead);
    let sinks = format!(
        "\n[[sink]]\nname = \"nowhere\"\ntype = \"tcp\"\naddress = \"127.0.0.1:{dead_port}\"\nqueue = 16\n"
    );
    let daemon = Daemon::start(
        &policy(&cg, &scratch, ok.port, bad.port, ask.port, &sinks),
        cg,
    );
    let agent_cg = format!("{}/bot", daemon_cgroup_prefix(&daemon));

    for port in [ok.port, bad.port] {
        connect_as(&daemon, "bot", "127.0.0.1", port).finish();
    }
    decide_held_connect(&daemon, "bot", ask.port, true);
    decide_held_connect(&daemon, "bot", ask.port, false);
    scratch.file("free/a");
    scratch.file("keep/b");
    scratch.dir("free/dir");
    daemon.run_agent("bot", &["rm", &scratch.s("free/a"), &scratch.s("keep/b")]);
    daemon.run_agent("bot", &["rmdir", &scratch.s("free/dir")]);
    scratch.file("ask/c");
    held_rm(&daemon, &scratch.s("ask/c"), true);
    // A delete by an agent process not started by `run`: observed (no
    // LSM) or blocked (LSM); a file.unlink either way.
    scratch.file("free/e");
    let out = run_in_cgroup(&agent_cg, &format!("exec rm {}", scratch.s("free/e")));
    assert!(out.status.success() || daemon.backend("delete") == "bpf_lsm");
    daemon.wait_event("file.unlink", |e| {
        e["target"]["path"] == scratch.s("free/e")
    });
    // Refused control requests, and a kill.
    let out = daemon
        .cli()
        .args(["kill", "--agent", "bot"])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .expect("kill as nobody");
    assert!(!out.status.success());
    daemon.cli_ok(&["kill", "--agent", "bot"]);
    daemon.wait_event("loss", |e| e["loss"]["sink"] == "nowhere");

    let events = daemon.stop();
    assert_gap_free(&events);
    assert_schema(&events);
    let kinds: BTreeSet<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in [
        "daemon.start",
        "agent.start",
        "agent.exit",
        "net.connect",
        "file.unlink",
        "file.rmdir",
        "hold.decision",
        "control.refused",
        "agent.kill",
        "loss",
        "daemon.stop",
    ] {
        assert!(kinds.contains(kind), "no {kind} event in {kinds:?}");
    }
}

/// The test cgroup prefix of a daemon's agents, from its `daemon.start`.
fn daemon_cgroup_prefix(daemon: &Daemon) -> String {
    let ev = daemon.wait_event("daemon.start", |_| true);
    let policy = std::fs::read_to_string(ev["daemon"]["policy"].as_str().expect("policy"))
        .expect("policy file");
    let line = policy
        .lines()
        .find(|l| l.starts_with("cgroup = "))
        .expect("cgroup line");
    let cgroup = line.trim_start_matches("cgroup = ").trim_matches('"');
    cgroup
        .rsplit_once('/')
        .map(|(p, _)| p.to_owned())
        .expect("nested cgroup")
}

/// One process cannot bloat every line: a command line past 4 KiB is cut
/// to what fits, and the line says so, in the native and OCSF members.
#[test]
fn a_huge_command_line_is_capped_and_flagged() {
    let cg = TestCgroups::new("siem-cap");
    let scratch = Scratch::new("siem-cap");
    let (ok, bad, ask) = (Listener::v4(), Listener::v4(), Listener::v4());
    let daemon = Daemon::start(&policy(&cg, &scratch, ok.port, bad.port, ask.port, ""), cg);
    let file = scratch.file("free/big");
    let padding = vec!["x".repeat(1000); 64];
    let mut argv = vec![
        "python3",
        "-c",
        "import os, sys; os.unlink(sys.argv[1]); sys.stdin.read()",
        file.to_str().expect("utf8"),
    ];
    argv.extend(padding.iter().map(String::as_str));
    // The process waits on stdin, so /proc still has it when the event is
    // read.
    let mut child = daemon.spawn_agent("bot", &argv);
    let ev = daemon.wait_event("file.unlink", |e| {
        e["target"]["path"] == file.to_str().expect("utf8")
    });
    drop(child.stdin.take());
    let _ = child.wait();
    assert_eq!(ev["truncated"], true, "{ev}");
    assert_eq!(ev["ocsf"]["metadata"]["is_truncated"], true);
    let args: Vec<&str> = ev["process"]["cmdline"]
        .as_array()
        .expect("a command line")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // argv[0] is the interpreter's own (pyenv execs the real python).
    assert_eq!(args[1..4], argv[1..4], "what fits is kept, in order");
    assert!(args.len() < argv.len());
    let joined = args.join(" ");
    assert!(joined.len() <= 4096, "{} bytes", joined.len());
    assert_eq!(ev["ocsf"]["actor"]["process"]["cmd_line"], joined);
    let start = daemon.wait_event("agent.start", |_| true);
    assert_eq!(
        start["truncated"], true,
        "the run's own command line is capped too: {start}"
    );
}
