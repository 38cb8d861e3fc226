//! `agent-guard events --follow --pretty`: what an operator watches in a
//! terminal. A real daemon, a real agent's allowed, denied and held
//! connects; the follower's output read from a pipe (plain) and from a real
//! pseudo-terminal made by script(1) (coloured, unless NO_COLOR). Host
//! tier only: it tests a client, not the kernel.
use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use agent_guard_tests::*;

/// A follower whose stdout is collected as it comes; killed on drop.
struct Follower {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Follower {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn follower");
        let mut stdout = child.stdout.take().expect("stdout");
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, out }
    }

    /// Waits until a line of the output contains every one of `needles`;
    /// returns that line.
    fn wait_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = self.out.lock().expect("lock").clone();
            if let Some(line) = out.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needles:?} within {PATIENCE:?}; output:\n{out}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn policy(cg: &TestCgroups, open: u16, held: u16) -> String {
    format!(
        r#"
[daemon]
approvers = {{ uids = [0] }}

[[agent]]
name = "watched"
owner = "ops@example.com"
purpose = "pretty event lines"
cgroup = "{}"

[agent.connect]
default = "deny"
allow = ["127.0.0.1/32:{open}"]
ask = ["127.0.0.1/32:{held}"]
"#,
        cg.path("watched")
    )
}

/// A terminal for `argv`: script(1) runs it on a fresh pseudo-terminal and
/// copies what it prints to our pipe. The colour choice is left to
/// agent-guard: TERM set, no colour overrides unless `env` adds them.
fn on_a_tty(daemon: &Daemon, argv: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("script");
    cmd.args(["--quiet", "--flush", "--return", "--command"])
        .arg(format!(
            "exec {} --socket {} {argv}",
            agent_guard_bin().display(),
            daemon.socket.display()
        ))
        .arg("/dev/null")
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn pretty_lines_are_readable_and_coloured_only_on_a_terminal() {
    if tier() == "vm" {
        // A client's rendering of the stream: nothing kernel-facing, and
        // the emulated guest's time budget is better spent on what is.
        skip(
            "pretty_lines_are_readable_and_coloured_only_on_a_terminal",
            "--pretty renders the event stream as a client; the host tier runs it",
        );
        return;
    }
    let cg = TestCgroups::new("pretty");
    let open = Listener::v4();
    let held = Listener::v4();
    let daemon = Daemon::start(&policy(&cg, open.port, held.port), cg);

    let mut piped = daemon.cli();
    piped
        .args(["events", "--follow", "--pretty", "--agent", "watched"])
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE");
    let piped = Follower::spawn(piped);
    let tty = Follower::spawn(on_a_tty(
        &daemon,
        "events --follow --pretty --agent watched",
        &[],
    ));
    let tty_no_color = Follower::spawn(on_a_tty(
        &daemon,
        "events --follow --pretty --agent watched",
        &[("NO_COLOR", "1")],
    ));
    // Events made once all three read the stream must reach all three.
    daemon.wait_readers(3);

    connect_as(&daemon, "watched", "127.0.0.1", open.port).finish();
    let denied = connect_as(&daemon, "watched", "127.0.0.1", 9);
    assert_ne!(denied.errno, 0);
    denied.finish();
    let pending = spawn_connect(&daemon, "watched", "127.0.0.1", held.port);
    let ev = daemon.wait_event("net.connect", |e| e["outcome"] == "held");
    let id = ev["hold"]["id"].as_str().expect("hold id").to_owned();

    // One line per event: time, agent, outcome, kind, target, rule.
    let allowed = piped.wait_line(&[
        "allowed",
        "net.connect",
        &format!("127.0.0.1:{}", open.port),
    ]);
    assert!(allowed.contains("watched"), "{allowed}");
    assert!(
        allowed.contains(&format!("rule allow 127.0.0.1/32:{}", open.port)),
        "{allowed}"
    );
    let time = allowed.split_whitespace().next().expect("a time");
    assert!(
        time.len() == "07:21:50.987Z".len() && time.ends_with('Z') && time.as_bytes()[2] == b':',
        "HH:MM:SS.mmmZ first: {allowed}"
    );
    let denied = piped.wait_line(&["denied", "net.connect", "127.0.0.1:9", "rule deny default"]);
    assert!(denied.contains("watched"), "{denied}");
    // A held call says how to decide it.
    let held_line = piped.wait_line(&["held", "net.connect", &format!("agent-guard approve {id}")]);
    assert!(held_line.contains(&format!("deny {id}")), "{held_line}");
    let out = daemon.cli().args(["deny", &id]).output().expect("deny");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decision = piped.wait_line(&["hold.decision", &format!("hold {id} denied by root")]);
    assert!(decision.contains("denied"), "{decision}");
    drop(pending.child);

    // A pipe gets no colour; a terminal does, the same words; NO_COLOR wins.
    let plain = piped.out.lock().expect("lock").clone();
    assert!(
        !plain.contains('\u{1b}'),
        "escape codes on a pipe:\n{plain:?}"
    );
    let coloured = tty.wait_line(&["hold.decision", &format!("hold {id}")]);
    assert!(
        coloured.contains("\u{1b}["),
        "no colour on a terminal: {coloured:?}"
    );
    let held_tty = tty.wait_line(&["net.connect", &format!("approve {id}")]);
    assert!(
        held_tty.contains("\u{1b}[33m") || held_tty.contains("\u{1b}[1m\u{1b}[33m"),
        "held in yellow: {held_tty:?}"
    );
    let no_color = tty_no_color.wait_line(&["hold.decision", &format!("hold {id}")]);
    assert!(
        !no_color.contains('\u{1b}'),
        "NO_COLOR on a terminal: {no_color:?}"
    );
}
