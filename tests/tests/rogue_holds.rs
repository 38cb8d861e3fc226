//! Rogue agent vs. holds (issue 14, "an approval covers exactly the held
//! call"): the agent gets a call held, and when the thread resumes on its
//! approval a signal handler rewrites the call's argument before the kernel
//! restarts it (the `retarget` helper). The approval must not carry over:
//! the rewritten call is judged afresh (denied by its own rule, or held in
//! its own right), while the held call itself, when it does run, is its own
//! event with the hold's id. Connect holds run on both tiers; delete holds
//! are LSM holds in the VM tier and seccomp supervision here, where the
//! daemon performs exactly the call it held.
use std::process::Child;

use agent_guard_tests::*;
use serde_json::Value;

const RETARGET: &str = env!("CARGO_BIN_EXE_retarget");
const EPERM: i32 = 1;

/// The helper, started as the agent: its pid, and its output after that.
struct Rogue {
    child: Child,
    lines: ChildLines,
    pid: u32,
}

impl Rogue {
    fn start(daemon: &Daemon, args: &[&str]) -> Self {
        let mut argv = vec![RETARGET];
        argv.extend_from_slice(args);
        let mut child = daemon.spawn_agent("bot", &argv);
        let mut lines = ChildLines::new(child.stdout.take().expect("stdout"));
        let first = lines.next_line("pid line");
        let pid = first
            .strip_prefix("pid=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        Self { child, lines, pid }
    }

    /// Arms the rewrite: the handler runs when the thread resumes.
    fn arm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .expect("SIGUSR1");
    }

    fn errno(&mut self) -> i32 {
        let line = self.lines.next_line("result line");
        line.strip_prefix("errno=")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected result line {line:?}"))
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn decide(daemon: &Daemon, verb: &str, id: &str) {
    let out = daemon.cli().args([verb, id]).output().expect(verb);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn held(daemon: &Daemon, kind: &str, pid: u32, what: impl Fn(&Value) -> bool) -> String {
    let ev = daemon.wait_event(kind, |e| {
        e["outcome"] == "held" && e["process"]["pid"] == pid && what(e)
    });
    ev["hold"]["id"].as_str().expect("hold id").to_owned()
}

/// No event says the held call's approval let another call run.
fn assert_not_consumed(daemon: &Daemon, kind: &str, id: &str) {
    assert!(
        !daemon
            .events()
            .iter()
            .any(|e| e["kind"] == kind && e["outcome"] == "allowed" && e["hold"]["id"] == id),
        "the approval of hold {id} was consumed by another call"
    );
}

#[test]
fn rogue_approval_covers_only_the_held_connect() {
    let cg = TestCgroups::new("rogue-connect-hold");
    let (asked, denied, other) = (Listener::v4(), Listener::v4(), Listener::v4());
    let policy = format!(
        r#"
[daemon]
approvers = {{ uids = [0] }}

[[agent]]
name = "bot"
owner = "ops@example.com"
purpose = "rogue hold tests"
cgroup = "{}"

[agent.connect]
default = "allow"
ask = ["127.0.0.1/32:{a}", "127.0.0.1/32:{c}"]
deny = ["127.0.0.1/32:{b}"]
"#,
        cg.path("bot"),
        a = asked.port,
        b = denied.port,
        c = other.port,
    );
    let bot = cg.path("bot");
    let daemon = Daemon::start(&policy, cg);
    let (a, b, c) = (
        asked.port.to_string(),
        denied.port.to_string(),
        other.port.to_string(),
    );
    let port_is = |port: u16| move |e: &Value| e["target"]["port"] == port;

    // The held call itself, approved: it runs, and says so with the hold id.
    let mut rogue = Rogue::start(&daemon, &["connect", "127.0.0.1", &a, &a]);
    let id = held(&daemon, "net.connect", rogue.pid, port_is(asked.port));
    decide(&daemon, "approve", &id);
    assert_eq!(rogue.errno(), 0);
    let ran = daemon.wait_event("net.connect", |e| {
        e["outcome"] == "allowed" && e["hold"]["id"] == id.as_str()
    });
    assert_eq!(ran["target"]["port"], asked.port);
    assert_eq!(ran["process"]["pid"], rogue.pid);
    rogue.finish();

    // Rewritten to a denied destination on resume: denied by its own rule.
    let mut rogue = Rogue::start(&daemon, &["connect", "127.0.0.1", &a, &b]);
    let id = held(&daemon, "net.connect", rogue.pid, port_is(asked.port));
    wait_stopped(rogue.pid, "held connect");
    rogue.arm();
    decide(&daemon, "approve", &id);
    assert_eq!(rogue.errno(), EPERM, "the rewritten connect must be denied");
    daemon.wait_event("net.connect", |e| {
        e["outcome"] == "denied"
            && e["process"]["pid"] == rogue.pid
            && e["target"]["port"] == denied.port
    });
    assert_not_consumed(&daemon, "net.connect", &id);
    rogue.finish();

    // Rewritten to another `ask` destination: held in its own right.
    let mut rogue = Rogue::start(&daemon, &["connect", "127.0.0.1", &a, &c]);
    let id = held(&daemon, "net.connect", rogue.pid, port_is(asked.port));
    wait_stopped(rogue.pid, "held connect");
    rogue.arm();
    decide(&daemon, "approve", &id);
    let second = held(&daemon, "net.connect", rogue.pid, port_is(other.port));
    assert_ne!(second, id, "a new hold, not the approved one");
    decide(&daemon, "deny", &second);
    assert_eq!(rogue.errno(), EPERM);
    assert_not_consumed(&daemon, "net.connect", &id);
    rogue.finish();

    assert_connect_denied(&bot, denied.port);
}

#[test]
fn rogue_approval_covers_only_the_held_delete() {
    let cg = TestCgroups::new("rogue-delete-hold");
    let scratch = Scratch::new("rogue-delete-hold");
    let denied = Listener::v4();
    let policy = format!(
        r#"
[daemon]
approvers = {{ uids = [0] }}

[[agent]]
name = "bot"
owner = "ops@example.com"
purpose = "rogue hold tests"
cgroup = "{}"

[agent.connect]
default = "allow"
deny = ["127.0.0.1/32:{}"]

[agent.delete]
default = "allow"
ask = ["{}"]
deny = ["{}"]
"#,
        cg.path("bot"),
        denied.port,
        scratch.s("ask"),
        scratch.s("keep"),
    );
    let bot = cg.path("bot");
    let daemon = Daemon::start(&policy, cg);
    let lsm = daemon.backend("delete") == "bpf_lsm";
    let path_is = |p: String| move |e: &Value| e["target"]["path"] == p.as_str();

    // The held call itself, approved: it runs, and says so with the hold id.
    let first = scratch.file("ask/first");
    let first_s = first.display().to_string();
    let mut rogue = Rogue::start(&daemon, &["unlink", &first_s, &first_s]);
    let id = held(&daemon, "file.unlink", rogue.pid, path_is(first_s.clone()));
    decide(&daemon, "approve", &id);
    assert_eq!(rogue.errno(), 0);
    assert!(!first.exists());
    let ran = daemon.wait_event("file.unlink", |e| {
        e["outcome"] == "allowed" && e["hold"]["id"] == id.as_str()
    });
    assert_eq!(ran["target"]["path"], first_s.as_str());
    rogue.finish();

    // Rewritten, on resume, to a path the policy denies.
    let held_file = scratch.file("ask/db.sqlite");
    let kept = scratch.file("keep/prod.sqlite");
    let (held_s, kept_s) = (held_file.display().to_string(), kept.display().to_string());
    let mut rogue = Rogue::start(&daemon, &["unlink", &held_s, &kept_s]);
    let id = held(&daemon, "file.unlink", rogue.pid, path_is(held_s.clone()));
    if lsm {
        wait_stopped(rogue.pid, "held unlink");
    }
    rogue.arm();
    decide(&daemon, "approve", &id);
    let errno = rogue.errno();
    assert!(kept.exists(), "the approval must never delete another file");
    if lsm {
        // The kernel restarted the call with the rewritten path: judged
        // afresh, denied, and the approved file untouched.
        assert_eq!(errno, EPERM);
        assert!(held_file.exists());
        daemon.wait_event("file.unlink", |e| {
            e["outcome"] == "denied"
                && e["process"]["pid"] == rogue.pid
                && e["target"]["path"] == kept_s.as_str()
        });
        assert_not_consumed(&daemon, "file.unlink", &id);
    } else {
        // Seccomp supervision performs exactly the call it held (the
        // handler runs only after it returns).
        assert_eq!(errno, 0);
        assert!(!held_file.exists());
        let ran = daemon.wait_event("file.unlink", |e| {
            e["outcome"] == "allowed" && e["hold"]["id"] == id.as_str()
        });
        assert_eq!(ran["target"]["path"], held_s.as_str());
    }
    rogue.finish();
    assert_connect_denied(&bot, denied.port);
}
