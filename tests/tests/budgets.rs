//! Blast-radius budgets (`[agent.budget]`): at most N allowed deletes or
//! connects of one agent per window, then ask, deny or freeze. On this
//! host deletes are counted by the seccomp supervisor and connects by the
//! cgroup socket programs; in the VM tier deletes are counted by the BPF
//! LSM hooks. Same expectations either way. Needs: seccomp user
//! notification or BPF LSM.
use std::{
    io::Read as _,
    process::{Child, Output},
    time::Instant,
};

use agent_guard_tests::*;
use serde_json::Value;

/// One agent of a budget test: name, and its `[agent.budget]` lines.
struct Agent<'a> {
    name: &'a str,
    budget: &'a str,
}

/// Starts a daemon whose agents may delete under `scratch`/work and
/// connect anywhere, each with its own budget.
fn start(test: &str, agents: &[Agent<'_>]) -> (Daemon, Scratch) {
    start_with(test, agents, "")
}

/// [`start`], with `extra` policy text after the agents.
fn start_with(test: &str, agents: &[Agent<'_>], extra: &str) -> (Daemon, Scratch) {
    let cg = TestCgroups::new(test);
    let scratch = Scratch::new(test);
    let mut policy =
        "[daemon]\napproval_timeout_secs = 300\napprovers = { uids = [0] }\n".to_owned();
    for a in agents {
        policy.push_str(&format!(
            r#"
[[agent]]
name = "{name}"
owner = "ops@example.com"
purpose = "budget tests"
cgroup = "{cgroup}"

[agent.delete]
default = "deny"
allow = ["{work}"]

[agent.connect]
default = "allow"

[agent.budget]
{budget}
"#,
            name = a.name,
            cgroup = cg.path(a.name),
            work = scratch.s("work"),
            budget = a.budget,
        ));
    }
    policy.push_str(extra);
    (Daemon::start(&policy, cg), scratch)
}

fn json(daemon: &Daemon, args: &[&str]) -> Value {
    serde_json::from_str(&daemon.cli_ok(args)).expect("JSON")
}

/// Waits for the agent run `child` to end, at most PATIENCE: past that it
/// is killed and the test fails, saying `what` did not end.
fn finish(mut child: Child, what: &str) -> Output {
    // Drained meanwhile, so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            waited => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not end within {PATIENCE:?} ({waited:?})");
            }
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `n` files work/tree/fNNN; returns the tree's path.
fn tree(scratch: &Scratch, n: usize) -> String {
    for i in 0..n {
        scratch.file(&format!("work/tree/f{i:03}"));
    }
    scratch.s("work/tree")
}

fn left(scratch: &Scratch, n: usize) -> usize {
    (0..n)
        .filter(|i| scratch.path(&format!("work/tree/f{i:03}")).exists())
        .count()
}

fn count(daemon: &Daemon, kind: &str, pred: impl Fn(&Value) -> bool) -> usize {
    daemon
        .events()
        .iter()
        .filter(|e| e["kind"] == kind && pred(e))
        .count()
}

/// The agent's entry in `agents --json`.
fn agent_entry(daemon: &Daemon, name: &str) -> Value {
    let agents = json(daemon, &["agents", "--json"]);
    agents
        .as_array()
        .and_then(|l| l.iter().find(|a| a["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in {agents}"))
}

#[test]
fn budget_ask_holds_the_41st_delete_and_an_agent_approval_lets_the_rest_go() {
    let (daemon, scratch) = start(
        "budget-ask",
        &[Agent {
            name: "cleaner",
            budget: "deletes = \"40/min\"",
        }],
    );
    let tree = tree(&scratch, 300);
    let child = daemon.spawn_agent("cleaner", &["rm", "-rf", &tree]);
    let held = daemon.wait_event("file.unlink", |e| e["outcome"] == "held");
    // The rm waits in its 41st unlink: exactly 40 went.
    assert_eq!(
        left(&scratch, 300),
        260,
        "exactly the budget's 40 files went"
    );
    assert_eq!(held["rule"]["verdict"], "allow", "a rule allows it: {held}");
    assert_eq!(held["budget"]["exhausted"], true, "{held}");
    assert!(
        held["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("budget:")),
        "{held}"
    );
    let id = held["hold"]["id"].as_str().expect("hold id").to_owned();

    let pending = json(&daemon, &["pending", "--json"]);
    let hold = pending
        .as_array()
        .and_then(|l| l.iter().find(|h| h["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("hold {id} not pending: {pending}"));
    assert!(
        hold["reason"]
            .as_str()
            .is_some_and(|r| r.contains("deletes budget (40/min)")),
        "pending names the budget: {hold}"
    );
    let spent = daemon.wait_event("agent.budget", |_| true);
    assert_eq!(spent["agent"]["name"], "cleaner");
    assert_eq!(spent["budget"]["name"], "deletes");
    assert_eq!(spent["budget"]["count"], 40);
    assert_eq!(spent["budget"]["window"], "1min");
    assert_eq!(spent["budget"]["action"], "ask");
    let use_ = &agent_entry(&daemon, "cleaner")["budget"]["deletes"];
    assert_eq!(
        (use_["used"].as_u64(), use_["limit"].as_u64()),
        (Some(40), Some(40)),
        "{use_}"
    );
    assert_eq!(use_["exhausted"], true);
    let status = json(&daemon, &["status", "--json"]);
    assert_eq!(status["budget_hits"], 1, "{status}");

    // Once: that call goes, and the next is held again.
    daemon.cli_ok(&["approve", &id]);
    let next = daemon.wait_event("file.unlink", |e| {
        e["outcome"] == "held" && e["hold"]["id"] != id.as_str()
    });
    assert_eq!(left(&scratch, 300), 259, "approved once: one more went");
    assert_eq!(next["budget"]["exhausted"], false, "{next}");
    let id = next["hold"]["id"].as_str().expect("hold id").to_owned();
    // A scope lifts the budget for the agent: the rest goes.
    daemon.cli_ok(&["approve", &id, "--scope", "agent", "--for", "1m"]);
    let out = finish(child, "rm -rf, approved for the agent");
    assert!(out.status.success(), "the rest goes: {}", stderr(&out));
    assert!(!scratch.path("work/tree").exists());
    assert_eq!(
        count(&daemon, "agent.budget", |_| true),
        1,
        "one event per exhaustion, not per call"
    );
    assert_eq!(count(&daemon, "file.unlink", |e| e["outcome"] == "held"), 2);
}

#[test]
fn budget_deny_refuses_every_delete_past_it_and_the_files_stay() {
    let (daemon, scratch) = start(
        "budget-deny",
        &[Agent {
            name: "cleaner",
            budget: "deletes = \"40/min\"\non_exceed = \"deny\"",
        }],
    );
    let tree = tree(&scratch, 300);
    let out = daemon.run_agent("cleaner", &["rm", "-rf", &tree]);
    assert!(!out.status.success(), "rm reports the refusals");
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        left(&scratch, 300),
        260,
        "exactly the budget's 40 files went"
    );
    daemon.wait_count("agent.budget", 1);
    let spent = daemon.wait_event("agent.budget", |_| true);
    assert_eq!(
        (&spent["outcome"], &spent["budget"]["action"]),
        (&"denied".into(), &"deny".into())
    );
    let ev = daemon.wait_event("file.unlink", |e| e["outcome"] == "denied");
    assert_eq!(ev["rule"]["verdict"], "allow");
    assert_eq!(ev["budget"]["action"], "deny", "{ev}");
    assert_eq!(count(&daemon, "agent.budget", |_| true), 1);
}

#[test]
fn budget_freeze_freezes_the_agent_until_thaw() {
    let (daemon, scratch) = start(
        "budget-freeze",
        &[Agent {
            name: "cleaner",
            budget: "deletes = \"5/min\"\non_exceed = \"freeze\"",
        }],
    );
    let tree = tree(&scratch, 20);
    let child = daemon.spawn_agent("cleaner", &["rm", "-rf", &tree]);
    let held = daemon.wait_event("file.unlink", |e| e["outcome"] == "held");
    assert_eq!(left(&scratch, 20), 15);
    let mode = daemon.wait_event("agent.mode", |e| e["mode"]["to"] == "freeze");
    assert_eq!(mode["by"]["user"], "agent-guard", "{mode}");
    assert_eq!(agent_entry(&daemon, "cleaner")["mode"], "freeze");
    daemon.cli_ok(&["thaw", "cleaner"]);
    assert_eq!(agent_entry(&daemon, "cleaner")["mode"], "enforce");
    // The held call still waits for on-call: thawing ends the freeze, not
    // the spent budget. Killing the run ends it.
    let id = held["hold"]["id"].as_str().expect("hold id");
    daemon.cli_ok(&["kill", id]);
    let out = finish(child, "rm -rf, its run killed");
    assert!(!out.status.success());
    assert_eq!(left(&scratch, 20), 15, "nothing more went");
}

#[test]
fn budget_of_connects_is_shared_by_every_run_of_the_agent() {
    let (daemon, _scratch) = start(
        "budget-net",
        &[Agent {
            name: "fetcher",
            budget: "connects = \"5/h\"\non_exceed = \"deny\"",
        }],
    );
    let listener = Listener::v4();
    let mut connected = 0;
    for _ in 0..8 {
        // A new run (own session cgroup, own processes) each time.
        let run = connect_as(&daemon, "fetcher", "127.0.0.1", listener.port);
        if run.errno == 0 {
            connected += 1;
        } else {
            assert_eq!(run.errno, 1, "EPERM past the budget");
        }
        run.finish();
    }
    let counted: Vec<String> = daemon
        .events()
        .iter()
        .filter(|e| {
            e["kind"] == "net.connect" || e["kind"] == "net.send" || e["kind"] == "agent.budget"
        })
        .map(Value::to_string)
        .collect();
    assert_eq!(
        connected,
        5,
        "one budget across all runs; events:\n{}",
        counted.join("\n")
    );
    daemon.wait_count("agent.budget", 1);
    let refused = daemon.wait_event("net.connect", |e| e["outcome"] == "denied");
    assert_eq!(refused["budget"]["name"], "connects", "{refused}");
    assert_eq!(count(&daemon, "agent.budget", |_| true), 1);
}

/// No budget counts unix sockets (see guard-ebpf's unix.rs): connects
/// and datagrams to a socket path that does not exist (what glibc does
/// probing for nscd in every process without HOME) and to one that does
/// leave the connects budget whole. The agent runs without HOME, as a
/// service would, so its own start-up probes are in the mix too.
#[test]
fn budget_of_connects_leaves_unix_sockets_uncounted() {
    let (daemon, scratch) = start(
        "budget-net-unix",
        &[Agent {
            name: "fetcher",
            budget: "connects = \"2/h\"\non_exceed = \"deny\"",
        }],
    );
    let real = scratch.s("real.sock");
    let _bound = std::os::unix::net::UnixListener::bind(&real).expect("bind a unix listener");
    let missing = scratch.s("missing.sock");
    let listener = Listener::v4();
    let script = format!(
        "import socket, sys\n\
         for path in [{missing:?}] * 5 + [{real:?}] * 3:\n\
         \x20   u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
         \x20   try: u.connect(path)\n\
         \x20   except OSError: pass\n\
         \x20   u.close()\n\
         d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         for _ in range(3):\n\
         \x20   try: d.sendto(b'x', {missing:?})\n\
         \x20   except OSError: pass\n\
         {PY_CONNECTS_UNTIL_REFUSED}"
    );
    let port = listener.port.to_string();
    let child = daemon.spawn_agent(
        "fetcher",
        &["env", "-u", "HOME", "python3", "-c", &script, &port],
    );
    let out = finish(child, "the unix and TCP connects");
    let labels = labels(&out);
    assert_eq!(
        (labels.get("went"), labels.get("refused")),
        (Some(&2), Some(&1)),
        "the two TCP connects the budget allows went, the third was refused; \
         stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let spent = daemon.wait_event("agent.budget", |_| true);
    assert_eq!(spent["budget"]["count"], 2, "{spent}");
    assert_eq!(spent["budget"]["name"], "connects", "{spent}");
}

/// Python that connects to 127.0.0.1:PORT again and again (at most 50
/// times) until one connect fails, and prints how many went and that
/// errno ("went N", "refused ERRNO"; "refused 0" if none failed). The
/// connects stay open until the script ends.
const PY_CONNECTS_UNTIL_REFUSED: &str = r#"
import socket, sys
port = int(sys.argv[1])
held, errno_ = [], 0
for _ in range(50):
    try:
        held.append(socket.create_connection(("127.0.0.1", port), timeout=30))
    except OSError as e:
        errno_ = e.errno
        break
print("went", len(held), flush=True)
print("refused", errno_, flush=True)
"#;

/// The kernel skips its grant look-up for an agent without grants (see
/// guard-ebpf's grant.rs): an approval with the agent as scope, given on
/// a connect its budget held, must still lift the budget for every later
/// connect of the agent at once.
#[test]
fn budget_approval_for_the_agent_lifts_the_connects_budget() {
    let (daemon, _scratch) = start(
        "budget-net-grant",
        &[Agent {
            name: "fetcher",
            budget: "connects = \"2/h\"",
        }],
    );
    let listener = Listener::v4();
    // Ten connects, one after another; any failure ends the script.
    let script = "import socket, sys\nheld = [socket.create_connection((\"127.0.0.1\", int(sys.argv[1])), timeout=30) for _ in range(10)]\nprint(\"went\", len(held), flush=True)\n";
    let port = listener.port.to_string();
    let child = daemon.spawn_agent("fetcher", &["python3", "-c", script, &port]);
    let held = daemon.wait_event("net.connect", |e| e["outcome"] == "held");
    assert_eq!(
        held["budget"]["exhausted"], true,
        "the budget held it: {held}"
    );
    let id = held["hold"]["id"].as_str().expect("hold id").to_owned();
    daemon.cli_ok(&["approve", &id, "--scope", "agent", "--for", "1m"]);
    // Another hold would stop the script until PATIENCE ends it.
    let out = finish(child, "connects after an approval for the agent");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        labels(&out).get("went"),
        Some(&10),
        "2 in budget, the approved one, and the rest under the grant"
    );
    assert_eq!(
        count(&daemon, "net.connect", |e| e["outcome"] == "held"),
        1,
        "held once"
    );
}

/// The kernel looks for a thread's hold only while some hold was made
/// since the daemon last saw none (see guard-ebpf's hold.rs): a connect
/// its budget held, denied once the window has refilled, comes back
/// within the budget and must still be refused.
#[test]
fn budget_hold_of_a_connect_keeps_its_denial_after_the_window_refills() {
    let (daemon, _scratch) = start(
        "budget-net-refill",
        &[Agent {
            name: "fetcher",
            budget: "connects = \"1/s\"",
        }],
    );
    let listener = Listener::v4();
    let port = listener.port.to_string();
    let child = daemon.spawn_agent(
        "fetcher",
        &["python3", "-c", PY_CONNECTS_UNTIL_REFUSED, &port],
    );
    let held = daemon.wait_event("net.connect", |e| e["outcome"] == "held");
    assert_eq!(
        held["budget"]["exhausted"], true,
        "the budget held it: {held}"
    );
    let id = held["hold"]["id"].as_str().expect("hold id").to_owned();
    // The window opened before this call was held: after a second more it
    // has refilled, so the call comes back within the budget.
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    daemon.cli_ok(&["deny", &id]);
    let out = finish(child, "the denied connect");
    let labels = labels(&out);
    assert_eq!(
        labels.get("refused"),
        Some(&1),
        "the denial stands: {}",
        stderr(&out)
    );
    let denied = daemon.wait_event("net.connect", |e| {
        e["outcome"] == "denied" && e["hold"]["id"] == id.as_str()
    });
    assert_eq!(denied["rule"]["verdict"], "allow", "{denied}");
    // And the held call did not run: no connect went after it was held (a
    // decision left unconsumed would only refuse the next one instead).
    let connects: Vec<Value> = daemon
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "net.connect")
        .collect();
    let at = connects
        .iter()
        .position(|e| e["outcome"] == "held")
        .expect("the held connect");
    let after: Vec<&Value> = connects[at..]
        .iter()
        .filter(|e| e["outcome"] == "allowed")
        .map(|e| &e["time"])
        .collect();
    assert!(after.is_empty(), "the denied call went, at {after:?}");
    assert_eq!(
        labels.get("went").map(|&n| n as usize),
        Some(at),
        "every connect before the held one went, no other"
    );
}

#[test]
fn budget_of_one_agent_leaves_another_alone() {
    let budget = "deletes = \"3/h\"\non_exceed = \"deny\"";
    let (daemon, scratch) = start(
        "budget-two",
        &[
            Agent {
                name: "first",
                budget,
            },
            Agent {
                name: "second",
                budget,
            },
        ],
    );
    let files = |who: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                scratch
                    .file(&format!("work/{who}/f{i}"))
                    .display()
                    .to_string()
            })
            .collect()
    };
    let firsts = files("first", 5);
    let mut argv = vec!["rm", "-f"];
    argv.extend(firsts.iter().map(String::as_str));
    assert!(!daemon.run_agent("first", &argv).status.success());
    assert_eq!(
        firsts
            .iter()
            .filter(|f| std::path::Path::new(f).exists())
            .count(),
        2
    );
    let seconds = files("second", 3);
    let mut argv = vec!["rm", "-f"];
    argv.extend(seconds.iter().map(String::as_str));
    let out = daemon.run_agent("second", &argv);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(seconds.iter().all(|f| !std::path::Path::new(f).exists()));
}

#[test]
fn budget_window_refills() {
    let (daemon, scratch) = start(
        "budget-refill",
        &[Agent {
            name: "cleaner",
            budget: "deletes = \"2/s\"\non_exceed = \"deny\"",
        }],
    );
    tree(&scratch, 200);
    // Deletes as fast as it can until one is refused (the window is
    // spent), then retries that one until the window has refilled. No
    // clock in the assertion: only that a refusal came, then the retry
    // went through.
    let script = format!(
        r#"
import errno, os, time
root = {root:?}
refused = None
for name in sorted(os.listdir(root)):
    try:
        os.unlink(os.path.join(root, name))
    except PermissionError:
        refused = os.path.join(root, name)
        break
print("refused", 0 if refused else 1, flush=True)
deadline = time.monotonic() + 60
while refused:
    try:
        os.unlink(refused)
        print("refilled", 0, flush=True)
        break
    except PermissionError:
        if time.monotonic() > deadline:
            print("refilled", errno.EPERM, flush=True)
            break
        time.sleep(0.05)
"#,
        root = scratch.s("work/tree")
    );
    let (labels, out) = run_py(&daemon, "cleaner", &script);
    assert_eq!(labels.get("refused"), Some(&0), "{}", stderr(&out));
    assert_eq!(labels.get("refilled"), Some(&0), "{}", stderr(&out));
    assert!(count(&daemon, "agent.budget", |_| true) >= 1);
}

/// A rogue agent spreads its deletes over new runs, forked processes,
/// renames and truncations (and io_uring where BPF LSM sees it): all draw
/// on the one budget.
#[test]
fn rogue_budget_cannot_be_dodged_by_runs_processes_renames_or_truncations() {
    let (daemon, scratch) = start(
        "budget-rogue",
        &[Agent {
            name: "rogue",
            budget: "deletes = \"4/h\"\non_exceed = \"deny\"",
        }],
    );
    let f = |n: u32| scratch.file(&format!("work/f{n}")).display().to_string();
    let (f1, f2, f3, f4, f5, f6, f7) = (f(1), f(2), f(3), f(4), f(5), f(6), f(7));
    let moved = scratch.s("work/moved");
    let ok = |argv: &[&str]| {
        let out = daemon.run_agent("rogue", argv);
        assert!(out.status.success(), "{argv:?}: {}", stderr(&out));
    };
    // Four calls, four runs, each by another route.
    ok(&["rm", &f1]);
    ok(&[
        "python3",
        "-c",
        &format!(
            "import os\nif os.fork() == 0:\n    os.unlink({f2:?})\n    os._exit(0)\nos.wait()"
        ),
    ]);
    ok(&["mv", &f3, &moved]);
    ok(&["truncate", "-s", "0", &f4]);
    // The fifth of any kind is refused, whoever makes it.
    let refused = |argv: &[&str]| {
        let out = daemon.run_agent("rogue", argv);
        assert!(!out.status.success(), "{argv:?} ran past the budget");
    };
    refused(&["rm", &f5]);
    refused(&["mv", &f6, &format!("{moved}2")]);
    refused(&["truncate", "-s", "0", &f7]);
    refused(&["bash", "-c", &format!("(rm {f5}) & wait $!; exit $?")]);
    assert!(std::path::Path::new(&f5).exists() && std::path::Path::new(&f6).exists());
    assert_eq!(std::fs::read(&f7).expect("f7"), b"data", "not truncated");
    if daemon.backend("delete") == "bpf_lsm" {
        // BPF LSM sees io_uring's operations: they count too.
        let (res, out) = io_uring_as(&daemon, "rogue", &[format!("unlink:{f5}")]);
        assert_eq!(res.get("setup"), Some(&0), "{}", stderr(&out));
        assert_eq!(res.get("unlink"), Some(&-1), "EPERM: {}", stderr(&out));
        assert!(std::path::Path::new(&f5).exists());
    }
    assert_eq!(count(&daemon, "agent.budget", |_| true), 1);
}

/// A spent budget pages on-call: one signed `budget` document per spent
/// window (not per refused call), to a webhook that asked for `budget`.
#[test]
fn budget_spent_fires_a_budget_webhook_once() {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("receiver");
    let port = server.server_addr().to_ip().expect("ip").port();
    let key = SecretFile::new("budget-webhook-key", "budget-webhook-key-0123456789\n");
    let extra = format!(
        r#"
[[notify]]
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
events = ["budget"]
secret_file = "{}"
"#,
        key.s()
    );
    let (daemon, scratch) = start_with(
        "budget-webhook",
        &[Agent {
            name: "cleaner",
            budget: "deletes = \"3/h\"\non_exceed = \"deny\"",
        }],
        &extra,
    );
    let tree = tree(&scratch, 10);
    let out = daemon.run_agent("cleaner", &["rm", "-rf", &tree]);
    assert!(!out.status.success(), "rm reports the refusals");
    assert_eq!(left(&scratch, 10), 7, "exactly the budget's 3 files went");

    let mut req = server
        .recv_timeout(PATIENCE)
        .expect("receiver")
        .unwrap_or_else(|| panic!("no webhook within {PATIENCE:?}"));
    let header = |name: &'static str| {
        req.headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.to_string())
    };
    assert_eq!(header("X-Agent-Guard-Event").as_deref(), Some("budget"));
    assert!(
        header("X-Agent-Guard-Signature").is_some_and(|s| s.starts_with("sha256=")),
        "signed"
    );
    let mut body = Vec::new();
    req.as_reader().read_to_end(&mut body).expect("body");
    req.respond(tiny_http::Response::empty(200))
        .expect("respond");
    let doc: Value = serde_json::from_slice(&body).expect("JSON document");
    assert_eq!(doc["event"], "budget", "{doc}");
    assert_eq!(doc["agent"], "cleaner");
    assert_eq!(doc["budget"]["name"], "deletes");
    assert_eq!(doc["budget"]["count"], 3);
    assert_eq!(doc["budget"]["action"], "deny");
    assert!(doc.get("hold").is_none(), "no hold: {doc}");
    assert!(
        doc["summary"]
            .as_str()
            .is_some_and(|s| s.contains("refused until the window ends")),
        "{doc}"
    );
    // The refused calls after it page nobody: the next document would be
    // another window's (none in this hour).
    daemon.wait_count("file.unlink", 4);
    assert!(
        server
            .recv_timeout(std::time::Duration::from_secs(2))
            .expect("receiver")
            .is_none(),
        "one document per spent window"
    );
}
