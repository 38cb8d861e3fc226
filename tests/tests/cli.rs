//! The CLI's contract with scripts: exit statuses, errors a user can act on.
use agent_guard_tests::*;

fn demo_policy(cg: &TestCgroups) -> String {
    format!(
        "[[agent]]\nname = \"bot\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"{}\"\n",
        cg.path("bot")
    )
}

#[test]
fn run_passes_exit_status_and_signals_through() {
    let cg = TestCgroups::new("status");
    let daemon = Daemon::start(&demo_policy(&cg), cg);
    let out = daemon.run_agent("bot", &["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));
    let out = daemon.run_agent("bot", &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15));
    // The command really runs inside a per-run cgroup under the agent's.
    let out = daemon.run_agent("bot", &["cat", "/proc/self/cgroup"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/bot/run-"), "not in a run cgroup: {text}");
}

#[test]
fn unknown_agent_is_refused_and_the_command_never_runs() {
    let cg = TestCgroups::new("unknown");
    let daemon = Daemon::start(&demo_policy(&cg), cg);
    let marker = daemon.dir.join("ran");
    let out = daemon.run_agent("nobody", &["touch", marker.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown agent \"nobody\""), "{err}");
    assert!(err.contains("bot"), "lists the declared agents: {err}");
    assert!(
        !marker.exists(),
        "the command must not run outside an agent"
    );
}

#[test]
fn run_without_a_daemon_says_so() {
    let out = std::process::Command::new(agent_guard_bin())
        .args([
            "--socket",
            "/nonexistent/agent-guard.sock",
            "run",
            "--agent",
            "x",
            "--",
            "true",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the agent-guard daemon"), "{err}");
}

#[test]
fn policy_check_reports_file_line_col() {
    let tmp = std::env::temp_dir();
    let dir = tmp.join(claim_dir(&tmp, "agent-guard-policy"));
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"x\"\n\n[agent.connect]\nallow = [\"10.0.0.0/8:443-80\"]\n",
    )
    .expect("write");
    let out = std::process::Command::new(agent_guard_bin())
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .expect("policy check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("{}:8:", file.display())), "{err}");

    std::fs::write(
        &file,
        "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"x\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(agent_guard_bin())
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .expect("policy check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The daemon refuses a bad policy with the same message.
    std::fs::write(&file, "[[agent]]\nnmae = \"a\"\n").expect("write");
    let out = std::process::Command::new(agent_guard_bin())
        .args(["--socket"])
        .arg(dir.join("s.sock"))
        .args(["daemon", "--policy"])
        .arg(&file)
        .output()
        .expect("daemon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", file.display())), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn events_follow_streams_one_agents_events() {
    use std::io::BufRead as _;
    let cg = TestCgroups::new("follow");
    let policy = format!(
        "[[agent]]\nname = \"bot\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"{}\"\n\n\
         [[agent]]\nname = \"other\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"{}\"\n",
        cg.path("bot"),
        cg.path("other")
    );
    let daemon = Daemon::start(&policy, cg);
    let mut follower = daemon
        .cli()
        .args(["events", "--follow", "--agent", "bot"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("events --follow");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The subscription starts when the daemon has it: until the first line
    // arrives, keep making bot events (and one of the other agent's each time).
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut lines = Vec::new();
    while lines.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no event reached the follower"
        );
        assert!(daemon.run_agent("other", &["true"]).status.success());
        assert!(daemon.run_agent("bot", &["true"]).status.success());
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(2)) {
            lines.push(line);
        }
    }
    assert!(daemon.run_agent("other", &["true"]).status.success());
    assert!(daemon.run_agent("bot", &["true"]).status.success());
    let last_seq = daemon
        .wait_event("agent.exit", |_| true)
        .get("seq")
        .and_then(serde_json::Value::as_u64);
    assert!(last_seq.is_some());
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(2)) {
        lines.push(line);
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(
        events.iter().any(|e| e["kind"] == "agent.start"),
        "{events:#?}"
    );
    assert!(
        events.iter().all(|e| e["agent"]["name"] == "bot"),
        "only bot's: {events:#?}"
    );
}

#[test]
fn only_runners_may_start_an_agent_and_refusals_are_logged() {
    use std::os::unix::process::CommandExt as _;
    let cg = TestCgroups::new("runners");
    let policy = format!(
        "[[agent]]\nname = \"rootonly\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"{}\"\n\n\
         [[agent]]\nname = \"shared\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"{}\"\n\
         runners = {{ uids = [65534] }}\n",
        cg.path("rootonly"),
        cg.path("shared")
    );
    let daemon = Daemon::start(&policy, cg);
    let as_nobody = |agent: &str| {
        daemon
            .cli()
            .args(["run", "--agent", agent, "--", "id", "-u"])
            .uid(65534)
            .gid(65534)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run as nobody")
    };
    let out = as_nobody("rootonly");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("may not start runs of agent \"rootonly\""),
        "{err}"
    );
    let ev = daemon.wait_event("control.refused", |e| e["control"]["op"] == "run");
    assert_eq!(ev["control"]["by"]["uid"], 65534);

    let out = as_nobody("shared");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n");
}

/// A listing piped into a reader that has gone (`| head -1`) ends the way
/// other tools do, killed by SIGPIPE, and does not panic.
#[test]
fn a_listing_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    let cg = TestCgroups::new("pipe");
    let daemon = Daemon::start(&demo_policy(&cg), cg);
    for args in [&["status"][..], &["agents"], &["policy", "default"]] {
        // The read end is closed before the command starts: its first
        // write fails, whatever the timing.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = daemon
            .cli()
            .args(args)
            .stdout(writer)
            .output()
            .expect("agent-guard");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}
