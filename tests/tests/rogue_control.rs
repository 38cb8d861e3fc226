//! Rogue agent vs. the control plane (issue 14, "agents have no say"): a
//! root process inside an agent, whether started by `run` or placed in an
//! adopted cgroup, tries every verb that decides or changes enforcement,
//! every read, starting runs, the event sink and stop/reload signals. Each
//! attempt fails with a reason and a `control.refused` event, and a process
//! placed straight into the agent's cgroup afterwards is still denied.
//! Held deletes need seccomp user notification or BPF LSM.
use std::{
    io::Read as _,
    os::unix::{net::UnixStream, process::CommandExt as _},
    process::{Command, Stdio},
};

use agent_guard_tests::*;
use serde_json::Value;

struct Setup {
    daemon: Daemon,
    scratch: Scratch,
    bot: String,
    denied_port: u16,
    sink: std::path::PathBuf,
}

fn start(test: &str) -> Setup {
    let cg = TestCgroups::new(test);
    let scratch = Scratch::new(test);
    let denied = Listener::v4();
    let dir = Daemon::fresh_dir();
    let sink = dir.join("events.sock");
    let policy = format!(
        r#"
[daemon]
approval_timeout_secs = 300
approvers = {{ uids = [0] }}
readers = {{ uids = [4243] }}

[[sink]]
type = "stdout"

[[sink]]
name = "stream"
type = "unix"
path = "{sink}"

[[agent]]
name = "bot"
owner = "ops@example.com"
purpose = "rogue control-plane tests"
cgroup = "{bot}"

[agent.connect]
default = "allow"
deny = ["127.0.0.1/32:{port}"]

[agent.delete]
default = "allow"
ask = ["{prod}"]

[[agent]]
name = "other"
owner = "ops@example.com"
purpose = "a second agent"
cgroup = "{other}"

[agent.delete]
default = "allow"
ask = ["{theirs}"]
"#,
        sink = sink.display(),
        bot = cg.path("bot"),
        other = cg.path("other"),
        port = denied.port,
        prod = scratch.s("prod"),
        theirs = scratch.s("theirs"),
    );
    let bot = cg.path("bot");
    let daemon = Daemon::start_with(&policy, cg, dir, Options::default());
    Setup {
        daemon,
        scratch,
        bot,
        denied_port: denied.port,
        sink,
    }
}

fn held(daemon: &Daemon, agent: &str, path: &str) -> (std::process::Child, String) {
    let child = daemon.spawn_agent(agent, &["rm", path]);
    let ev = daemon.wait_event("file.unlink", |e| {
        e["outcome"] == "held" && e["target"]["path"] == path
    });
    (child, ev["hold"]["id"].as_str().expect("id").to_owned())
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root process inside the agent (its own held delete waiting) tries to
/// decide, kill, revoke, reload, retire, freeze and thaw: all refused; the
/// hold is still pending and the file still there.
#[test]
fn rogue_agent_cannot_decide_or_change_enforcement() {
    let s = start("rogue-decide");
    let d = &s.daemon;
    let file = s.scratch.file("prod/db.sqlite");
    let path = file.display().to_string();
    let (child, id) = held(d, "bot", &path);
    // A grant to try to revoke.
    let grant_file = s.scratch.file("prod/grant/x");
    let (grant_child, grant_id) = held(d, "bot", &grant_file.display().to_string());
    let out = d
        .cli()
        .args(["approve", &grant_id, "--scope", "subtree", "--for", "10m"])
        .args(["--path", &s.scratch.s("prod/grant")])
        .output()
        .expect("approve");
    ok(&out);
    let _ = grant_child.wait_with_output();
    let grant = d.wait_event("hold.decision", |e| e["hold"]["id"] == grant_id.as_str());
    let grant_no = grant["hold"]["scope"]["id"].to_string();

    let attempts: [(&str, Vec<&str>); 9] = [
        ("approve", vec!["approve", &id]),
        (
            "approve",
            vec!["approve", &id, "--scope", "agent", "--for", "1h"],
        ),
        ("deny", vec!["deny", &id]),
        ("kill", vec!["kill", &id]),
        ("revoke", vec!["revoke", &grant_no]),
        ("reload", vec!["reload"]),
        ("retire", vec!["reload", "--force"]),
        ("freeze", vec!["freeze", "other"]),
        ("thaw", vec!["thaw", "bot"]),
    ];
    for (op, args) in &attempts {
        // Once placed straight into the agent's cgroup, once under `run`.
        let out = cli_inside(d, &s.bot, args);
        assert_refused(d, &out, op, "bot");
    }
    let bin = agent_guard_bin().display().to_string();
    let socket = d.socket.display().to_string();
    let out = d.run_agent("bot", &[&bin, "--socket", &socket, "approve", &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("inside agent bot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing was decided: still held, still there, grant still live.
    assert!(file.exists());
    let out = d
        .cli()
        .args(["pending", "--json"])
        .output()
        .expect("pending");
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        list.as_array()
            .is_some_and(|l| l.iter().any(|h| h["id"] == id.as_str())),
        "{list}"
    );
    assert!(
        !d.events()
            .iter()
            .any(|e| e["kind"] == "agent.mode" || e["kind"] == "policy.reload"),
        "no mode switch and no reload happened"
    );
    assert_connect_denied(&s.bot, s.denied_port);

    ok(&d.cli().args(["deny", &id]).output().expect("deny"));
    let out = child.wait_with_output().expect("rm");
    assert!(!out.status.success());
    assert!(file.exists());
}

/// Inside an agent: its own pending holds only; every other read refused;
/// no run of any agent, not even its own.
#[test]
fn rogue_agent_sees_only_its_own_holds_and_starts_no_runs() {
    let s = start("rogue-read");
    let d = &s.daemon;
    let mine = s.scratch.file("prod/mine");
    let theirs = s.scratch.file("theirs/secret");
    let (mine_child, mine_id) = held(d, "bot", &mine.display().to_string());
    let (their_child, their_id) = held(d, "other", &theirs.display().to_string());

    let out = cli_inside(d, &s.bot, &["pending", "--json"]);
    ok(&out);
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    let ids: Vec<&str> = list
        .as_array()
        .map(|l| l.iter().filter_map(|h| h["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![mine_id.as_str()], "only its own hold: {list}");

    for (op, args) in [
        ("grants", vec!["grants"]),
        ("agents", vec!["agents"]),
        ("status", vec!["status"]),
        ("subscribe", vec!["events", "--follow"]),
        ("run", vec!["run", "--agent", "other", "--", "true"]),
        ("run", vec!["run", "--agent", "bot", "--", "true"]),
    ] {
        let out = cli_inside(d, &s.bot, &args);
        assert_refused(d, &out, op, "bot");
    }
    // Under `run` too: a run cannot start a run.
    let bin = agent_guard_bin().display().to_string();
    let socket = d.socket.display().to_string();
    let out = d.run_agent(
        "bot",
        &[
            &bin, "--socket", &socket, "run", "--agent", "other", "--", "true",
        ],
    );
    assert!(!out.status.success(), "a run inside a run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside agent bot"));

    // The unix event sink serves readers only: nothing for the agent (a
    // served reader would at least get the refusal event below).
    let (mut stream, helper) = placed_connect(&s.bot, &s.sink);
    d.wait_event("control.refused", |e| {
        e["control"]["op"] == "subscribe"
            && e["control"]["target"] == "stream"
            && e["control"]["by"]["agent"] == "bot"
    });
    let mut got = Vec::new();
    stream
        .read_to_end(&mut got)
        .expect("the daemon hangs up on the agent");
    // At most the refusal itself, never an event.
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.lines()
            .all(|l| l.starts_with(r#"{"v":1,"ok":false"#) && l.contains("inside agent bot")),
        "the sink sent the agent more than its refusal: {text}"
    );
    helper.finish();

    // Outside every agent: a reader reads, a stranger does not.
    let as_uid = |uid: u32, args: &[&str]| {
        d.cli()
            .args(args)
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::null())
            .output()
            .expect("cli")
    };
    ok(&as_uid(4243, &["status"]));
    ok(&as_uid(4243, &["pending"]));
    let out = as_uid(4242, &["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a reader"));
    d.wait_event("control.refused", |e| {
        e["control"]["op"] == "status" && e["control"]["by"]["uid"] == 4242
    });

    assert_connect_denied(&s.bot, s.denied_port);
    for id in [&mine_id, &their_id] {
        ok(&d.cli().args(["deny", id]).output().expect("deny"));
    }
    let _ = (
        mine_child.wait_with_output(),
        their_child.wait_with_output(),
    );
}

/// A helper process that waits until told to exit.
struct Helper(std::process::Child);

impl Helper {
    fn finish(mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Connects to a unix socket from a helper placed straight into `cgroup`:
/// the helper connects and hands the connection back over a socketpair
/// (its process, not ours, is the peer), then waits until finished.
fn placed_connect(cgroup: &str, path: &std::path::Path) -> (UnixStream, Helper) {
    let script = format!(
        "import socket, sys, array\n\
         s = socket.socket(socket.AF_UNIX); s.connect({:?})\n\
         back = socket.socket(fileno=3)\n\
         back.sendmsg([b'x'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [s.fileno()]))])\n\
         sys.stdin.read()\n",
        path.display().to_string()
    );
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let theirs_fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
    let mut cmd = Command::new("python3");
    cmd.args(["-c", &script]);
    // SAFETY: dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(theirs_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = placed(cgroup, cmd)
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3");
    drop(theirs);
    let fd = receive_fd(&ours);
    let stream = UnixStream::from(fd);
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    (stream, Helper(child))
}

fn receive_fd(sock: &UnixStream) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let mut buf = [0u8; 1];
    let mut space = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; the buffers outlive the call, and the
    // one SCM_RIGHTS fd received is ours alone.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = space.len();
        assert!(
            libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0) == 1,
            "recvmsg"
        );
        let hdr = libc::CMSG_FIRSTHDR(&raw const msg);
        assert!(!hdr.is_null(), "no fd passed");
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(hdr).cast::<i32>());
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

/// rt_sigqueueinfo(PID, SIGTERM, siginfo) with si_code SI_QUEUE and a
/// forged si_pid; prints rc=0 or rc=ERRNO.
const FORGED_SIGTERM: &str = r#"
import ctypes, os, signal, struct, sys
pid, forged = int(sys.argv[1]), int(sys.argv[2])
info = struct.pack("iiii", signal.SIGTERM, 0, -1, 0) + struct.pack("iI", forged, 0)
info += bytes(128 - len(info))
buf = ctypes.create_string_buffer(info, 128)
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.syscall(129, pid, signal.SIGTERM, buf)
print("rc=%d" % (0 if rc == 0 else ctypes.get_errno()), flush=True)
"#;

/// SIGTERM and SIGHUP to the daemon from inside an agent: refused; the
/// daemon keeps serving and enforcing. A SIGTERM from outside still stops it.
#[test]
fn rogue_agent_cannot_stop_or_reload_the_daemon_by_signal() {
    let s = start("rogue-signal");
    let d = &s.daemon;
    let pid = d.pid().to_string();
    for (sig, op) in [("TERM", "stop"), ("HUP", "reload"), ("INT", "stop")] {
        // The sender stays until its refusal is seen, so it is identified
        // (a sender already reaped would be refused too, unnamed).
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("kill -{sig} {pid}; echo rc=$?; read _")]);
        let mut sender = placed(&s.bot, cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("kill");
        let rc = ChildLines::new(sender.stdout.take().expect("stdout")).next_line("rc line");
        if rc.trim() == "rc=0" {
            // Delivered (no BPF LSM to refuse it in the kernel): the daemon
            // itself refuses to act on it.
            d.wait_event("control.refused", |e| {
                e["control"]["op"] == op
                    && e["control"]["by"]["agent"] == "bot"
                    && e["control"]["target"] == format!("SIG{sig}")
            });
        } else {
            // Refused in the kernel (self-defense's task_kill hook).
            let daemon = u64::from(d.pid());
            d.wait_event("guard.tamper", |e| {
                e["target"]["what"] == "signal" && e["target"]["pid"] == daemon
            });
        }
        Helper(sender).finish();
    }
    // rt_sigqueueinfo lets a sender write its own siginfo: a SIGTERM that
    // claims to come from pid 1, or from the kernel (pid 0), is refused too.
    for forged in [1, 0] {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", FORGED_SIGTERM, &pid, &forged.to_string()]);
        let out = placed(&s.bot, cmd).output().expect("python3");
        let rc = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if rc == "rc=0" {
            d.wait_event("control.refused", |e| {
                e["control"]["op"] == "stop"
                    && e["control"]["target"] == "SIGTERM"
                    && e["control"]["by"]["pid"] == forged
            });
        } else {
            assert_eq!(rc, "rc=1", "EPERM from the kernel, or delivered: {out:?}");
        }
    }
    // Still up and answering, still enforcing, nothing reloaded.
    ok(&d.cli().arg("status").output().expect("status"));
    assert_connect_denied(&s.bot, s.denied_port);
    assert!(
        !d.events()
            .iter()
            .any(|e| e["kind"] == "policy.reload" || e["kind"] == "daemon.stop")
    );
    let events = s.daemon.stop();
    let stop = events
        .iter()
        .find(|e| e["kind"] == "daemon.stop")
        .expect("a stop from outside still stops it");
    assert_eq!(stop["daemon"]["enforcement"], "released");
}
