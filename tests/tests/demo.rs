//! The demo (`cargo xtask run`, i.e. `agent-guard daemon --demo`): its
//! agent's calls are allowed, denied and one is held; the daemon prints how
//! to approve the hold and, with [web] on, the page's address; the printed
//! command approves it. The demo runs the embedded policy, here with its
//! cgroup moved under this test's and the approval page turned on.
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use agent_guard_tests::*;
use serde_json::Value;

/// Lines a child printed on one of its pipes, collected as they come, and
/// whether the pipe has closed (the daemon exited).
type Lines = Arc<Mutex<(Vec<String>, bool)>>;

fn collect(pipe: impl std::io::Read + Send + 'static) -> Lines {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("lock").0.push(line);
        }
        sink.lock().expect("lock").1 = true;
    });
    lines
}

fn wait_for(lines: &Lines, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        {
            let (got, closed) = &*lines.lock().expect("lock");
            if let Some(l) = got.iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                !closed && Instant::now() < deadline,
                "no {what} ({}); got:\n{}",
                if *closed {
                    "the daemon exited"
                } else {
                    "timed out"
                },
                got.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon, stopped with SIGTERM on drop.
struct DemoDaemon(Child);

impl Drop for DemoDaemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

#[test]
fn the_demo_holds_a_delete_and_says_how_to_approve_it() {
    require_root();
    let cg = TestCgroups::new("demo");
    let dir = Daemon::fresh_dir();
    let tokens = SecretFile::new("demo-web", "oncall:demo-token-5f1e9c3a7b2d\n");
    let port = free_port();
    let embedded = Command::new(agent_guard_bin())
        .args(["policy", "default"])
        .output()
        .expect("policy default");
    let embedded = String::from_utf8(embedded.stdout).expect("UTF-8 policy");
    assert!(embedded.contains("cgroup = \"agent-guard/demo\""));
    let policy = format!(
        "{}\n[web]\nlisten = \"127.0.0.1:{port}\"\ntokens_file = \"{}\"\n",
        embedded.replace(
            "cgroup = \"agent-guard/demo\"",
            &format!("cgroup = \"{}\"", cg.path("demo"))
        ),
        tokens.s()
    );
    let policy_path = dir.join("policy.toml");
    std::fs::write(&policy_path, policy).expect("policy");
    let socket = dir.join("control.sock");
    let mut child = Command::new(agent_guard_bin())
        .arg("--socket")
        .arg(&socket)
        .arg("daemon")
        .arg("--demo")
        .arg("--policy")
        .arg(&policy_path)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("AGENT_GUARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent-guard daemon --demo");
    let events = collect(child.stdout.take().expect("stdout"));
    let said = collect(child.stderr.take().expect("stderr"));
    let daemon = DemoDaemon(child);

    // The allowed and denied calls come first, as before.
    wait_for(&said, "the blocked connect", |l| {
        l.contains("-> blocked by agent-guard")
    });
    // Then the held delete, with the command that approves it.
    let approve = wait_for(&said, "the approve command", |l| {
        l.trim_start().starts_with("agent-guard --socket") && l.contains(" approve ")
    });
    let argv: Vec<&str> = approve.split_whitespace().collect();
    let id = argv.last().expect("an id").to_string();
    assert_eq!(
        argv[..argv.len() - 1],
        [
            "agent-guard",
            "--socket",
            &socket.display().to_string(),
            "approve"
        ]
    );
    let page = wait_for(&said, "the page's address", |l| l.contains("approval page"));
    let url = format!("http://127.0.0.1:{port}/#hold={id}");
    assert!(page.ends_with(&url), "{page}");
    wait_for(&said, "the deadline", |l| l.contains("denied after 60 s"));

    // The held event matches: the demo agent's own 60 s timeout.
    let held: Value = serde_json::from_str(&wait_for(&events, "the held event", |l| {
        l.contains("\"outcome\":\"held\"")
    }))
    .expect("JSON");
    assert_eq!(held["hold"]["id"], id.as_str());
    assert_eq!(held["hold"]["timeout_secs"], 60);
    assert_eq!(held["agent"]["name"], "demo");
    assert_eq!(
        held["target"]["path"],
        "/tmp/agent-guard-demo/held/report.txt"
    );
    // The page the daemon pointed at is there.
    let (status, _, body) = http_get(&format!("http://127.0.0.1:{port}/"), None);
    assert_eq!(status, 200);
    assert!(body.contains("agent-guard"), "{body}");

    // The printed command, run as printed, approves it.
    let out = Command::new(agent_guard_bin())
        .args(&argv[1..])
        .output()
        .expect("agent-guard approve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(&said, "the approved delete", |l| {
        l.contains("-> approved: removed")
    });
    wait_for(&said, "the decision", |l| {
        l.contains(&format!("hold {id} approved by root"))
    });
    assert!(!std::path::Path::new("/tmp/agent-guard-demo/held/report.txt").exists());

    drop(daemon);
    let all: Vec<Value> = events
        .lock()
        .expect("lock")
        .0
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON event"))
        .collect();
    assert_schema(&all);
    let outcomes: Vec<(&str, &str)> = all
        .iter()
        .filter(|e| e["agent"]["name"] == "demo")
        .filter_map(|e| Some((e["kind"].as_str()?, e["outcome"].as_str()?)))
        .collect();
    for want in [
        ("net.connect", "allowed"),
        ("net.connect", "denied"),
        ("file.unlink", "allowed"),
        ("file.unlink", "denied"),
        ("file.unlink", "held"),
        ("hold.decision", "allowed"),
    ] {
        assert!(outcomes.contains(&want), "no {want:?} in {outcomes:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
