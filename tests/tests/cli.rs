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
    let dir = std::env::temp_dir().join(format!("agent-guard-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
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
