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
fn ask_fails_closed_until_holds_exist_and_is_reported_as_ask() {
    let cg = TestCgroups::new("ask");
    let l = Listener::v4();
    let daemon = Daemon::start(
        &policy(
            &cg,
            "enforce",
            &format!("default = \"allow\"\nask = [\"127.0.0.1/32:{}\"]", l.port),
        ),
        cg,
    );
    let run = connect_as(&daemon, "bot", "127.0.0.1", l.port);
    assert_eq!(run.errno, EPERM);
    let ev = daemon.wait_event("net.connect", |e| e["process"]["pid"] == run.pid);
    assert_eq!(ev["rule"]["verdict"], "ask");
    assert_eq!(ev["outcome"], "denied");
    run.finish();
}
