//! Connect helpers: loopback listeners and connects made as an agent.
use std::{
    io::Write as _,
    net::TcpListener,
    process::{Child, Command, Stdio},
    thread,
};

use crate::{ChildLines, Daemon};

/// A TCP listener on loopback that accepts and holds connections.
pub struct Listener {
    pub port: u16,
}

impl Listener {
    pub fn v4() -> Self {
        Self::bind("127.0.0.1:0")
    }

    pub fn v6() -> Self {
        Self::bind("[::1]:0")
    }

    fn bind(addr: &str) -> Self {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let port = l.local_addr().expect("addr").port();
        thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
            }
        });
        Self { port }
    }
}

/// Python that connects to HOST PORT, prints `pid=<pid> exe=<exe>` and then
/// `connected` or `errno=<n>`, waits for stdin to close, and exits 0 on
/// success or with the errno.
pub const PY_CONNECT: &str = r#"
import os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
print("pid=%d exe=%s" % (os.getpid(), os.readlink("/proc/self/exe")), flush=True)
try:
    s = socket.create_connection((host, port), timeout=30)
    print("connected", flush=True)
    rc = 0
except OSError as e:
    print("errno=%d" % e.errno, flush=True)
    rc = e.errno
sys.stdin.read()
sys.exit(rc)
"#;

/// Outcome of one agent connect run through [`connect_as`].
pub struct ConnectRun {
    pub pid: u32,
    pub exe: String,
    /// 0 when connected, else the errno.
    pub errno: i32,
    child: Child,
}

impl ConnectRun {
    /// Lets the agent process exit and checks `run` passed its status through.
    pub fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("wait");
        assert_eq!(
            status.code(),
            Some(self.errno),
            "agent-guard run must exit with the command's own status"
        );
    }
}

fn read_connect(mut child: Child) -> ConnectRun {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = ChildLines::new(stdout);
    let first = lines.next_line("pid line");
    let (pid, exe) = first
        .strip_prefix("pid=")
        .and_then(|r| r.split_once(" exe="))
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let second = lines.next_line("result line");
    let errno = if second == "connected" {
        0
    } else {
        second
            .strip_prefix("errno=")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected result line {second:?}"))
    };
    ConnectRun {
        pid: pid.parse().expect("pid"),
        exe: exe.to_string(),
        errno,
        child,
    }
}

/// Connects as `agent` through `agent-guard run`, optionally wrapped (e.g.
/// in `bash -c`), keeping the process alive until [`ConnectRun::finish`].
pub fn connect_as(daemon: &Daemon, agent: &str, host: &str, port: u16) -> ConnectRun {
    let port = port.to_string();
    read_connect(daemon.spawn_agent(agent, &["python3", "-c", PY_CONNECT, host, &port]))
}

/// The same connect, but from a `bash -c` child of the agent process.
pub fn connect_as_grandchild(daemon: &Daemon, agent: &str, host: &str, port: u16) -> ConnectRun {
    let script = format!("python3 -c '{PY_CONNECT}' {host} {port}; exit $?");
    read_connect(daemon.spawn_agent(agent, &["bash", "-c", &script]))
}

/// The same connect from a process outside every agent.
pub fn connect_unguarded(host: &str, port: u16) -> i32 {
    let mut child = Command::new("python3")
        .args(["-c", PY_CONNECT, host, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.as_mut().map(|s| s.write_all(b""));
    let run = read_connect(child);
    let errno = run.errno;
    run.finish();
    errno
}

/// A connect started as `agent` by [`PY_CONNECT`] that is (about to be)
/// held: the child, its output lines after the pid line, and its pid.
pub struct PendingConnect {
    pub child: Child,
    pub lines: crate::ChildLines,
    pub pid: u32,
}

pub fn spawn_connect(daemon: &Daemon, agent: &str, host: &str, port: u16) -> PendingConnect {
    let port = port.to_string();
    let mut child = daemon.spawn_agent(agent, &["python3", "-c", PY_CONNECT, host, &port]);
    let mut lines = ChildLines::new(child.stdout.take().expect("stdout"));
    let first = lines.next_line("pid line");
    let pid = first
        .strip_prefix("pid=")
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    PendingConnect { child, lines, pid }
}

/// Holds `agent`'s connect to 127.0.0.1:`port`, then approves or denies it
/// with the CLI and checks what the agent got; returns the held event and
/// the decision's event.
pub fn decide_held_connect(
    daemon: &Daemon,
    agent: &str,
    port: u16,
    approve: bool,
) -> (serde_json::Value, serde_json::Value) {
    let PendingConnect {
        mut child,
        mut lines,
        pid,
    } = spawn_connect(daemon, agent, "127.0.0.1", port);
    let held = daemon.wait_event("net.connect", |e| {
        e["outcome"] == "held" && e["process"]["pid"] == pid
    });
    let id = held["hold"]["id"].as_str().expect("hold id").to_owned();
    let verb = if approve { "approve" } else { "deny" };
    let out = daemon
        .cli()
        .args([verb, &id])
        .stdin(Stdio::null())
        .output()
        .expect("agent-guard");
    assert!(
        out.status.success(),
        "agent-guard {verb} {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = lines.next_line("result line");
    assert_eq!(result, if approve { "connected" } else { "errno=1" });
    drop(child.stdin.take());
    let _ = child.wait();
    let decision = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    (held, decision)
}
