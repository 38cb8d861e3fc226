//! The rogue-agent suite's harness: an agent whose connect to one port is
//! denied, scripts a hostile agent runs, and the check that enforcement
//! is still in force, made by placing a process straight into the agent's
//! cgroup (not through the daemon).
use std::{
    ffi::CString,
    os::unix::{
        fs::PermissionsExt as _,
        process::{CommandExt as _, ExitStatusExt as _},
    },
    process::{Command, ExitStatus, Output, Stdio},
};

use serde_json::Value;

use crate::{
    Daemon, Listener, Options, PY_CONNECT, Scratch, TestCgroups, agent_guard_bin, cgroup2_root,
};

/// ptrace(PTRACE_ATTACH), process_vm_readv, /proc/PID/mem, pidfd_getfd,
/// kcmp and process_madvise on PID: prints one `name=errno` line each (0:
/// it worked; for process_madvise, any errno but EPERM and EACCES means
/// it got past the permission check).
pub const PY_REACH: &str = r#"
import ctypes, os, sys
pid = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def report(name, ok):
    print("%s=%d" % (name, 0 if ok else ctypes.get_errno()), flush=True)
r = libc.ptrace(16, pid, 0, 0)
report("ptrace", r == 0)
if r == 0:
    os.waitpid(pid, 0); libc.ptrace(17, pid, 0, 0)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(8)
local, remote = iovec(ctypes.cast(buf, ctypes.c_void_p), 8), iovec(0x400000, 8)
libc.process_vm_readv.restype = ctypes.c_ssize_t
report("process_vm_readv", libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) >= 0)
try:
    open("/proc/%d/mem" % pid, "rb").close(); print("mem=0", flush=True)
except OSError as e:
    print("mem=%d" % e.errno, flush=True)
fd = libc.syscall(434, pid, 0)
report("pidfd_getfd", fd >= 0 and libc.syscall(438, fd, 0, 0) >= 0)
report("kcmp", libc.syscall(312, os.getpid(), pid, 0, 0, 0) >= 0)
MADV_COLD = 20
fd = libc.syscall(434, pid, 0)
report("process_madvise", libc.syscall(440, fd, ctypes.byref(remote), 1, MADV_COLD, 0) >= 0)
"#;

/// Every call that sends a signal, each with SIGTERM at the guard process
/// argv[1] or one of its threads: prints `tid=N` (the thread aimed at),
/// then one `name=errno` line each (0: it was delivered).
pub const PY_SIGNALS: &str = r#"
import ctypes, os, struct, sys
pid = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def report(name, r):
    print("%s=%d" % (name, 0 if r == 0 else ctypes.get_errno()), flush=True)
tid = next(int(t) for t in os.listdir("/proc/%d/task" % pid) if int(t) != pid)
print("tid=%d" % tid, flush=True)
SIGTERM = 15
info = ctypes.create_string_buffer(128)
struct.pack_into("iii", info, 0, SIGTERM, 0, -1)  # si_code SI_QUEUE
report("kill", libc.syscall(62, pid, SIGTERM))
report("tkill", libc.syscall(200, tid, SIGTERM))
report("tgkill", libc.syscall(234, pid, tid, SIGTERM))
report("rt_sigqueueinfo", libc.syscall(129, pid, SIGTERM, info))
report("rt_tgsigqueueinfo", libc.syscall(297, pid, tid, SIGTERM, info))
pidfd = libc.syscall(434, pid, 0)
report("pidfd_send_signal", libc.syscall(424, pidfd, SIGTERM, None, 0))
procfd = os.open("/proc/%d" % pid, os.O_RDONLY | os.O_DIRECTORY)
report("pidfd_send_signal_proc", libc.syscall(424, procfd, SIGTERM, None, 0))
"#;

/// kill(argv[1], 0) argv[2] times, as fast as it goes: prints how many
/// were refused.
pub const PY_KILL_LOOP: &str = r#"
import ctypes, sys
pid, n = int(sys.argv[1]), int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
refused = sum(1 for _ in range(n) if libc.kill(pid, 0) != 0)
print("refused=%d" % refused, flush=True)
"#;

/// unlink(argv[1]) argv[2] times: prints how many were refused.
pub const PY_UNLINK_LOOP: &str = r#"
import os, sys
path, n = sys.argv[1], int(sys.argv[2])
refused = 0
for _ in range(n):
    try:
        os.unlink(path)
    except PermissionError:
        refused += 1
print("refused=%d" % refused, flush=True)
"#;

/// clone3(CLONE_INTO_CGROUP) into the cgroup directory argv[1]; the child
/// would connect to port argv[2] and say so.
pub const PY_CLONE_INTO: &str = r#"
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
names = ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
         "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")
class CloneArgs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in names]
args = CloneArgs(flags=0x200000000, exit_signal=17, cgroup=fd)
print("pid=%d" % os.getpid(), flush=True)
r = libc.syscall(435, ctypes.byref(args), ctypes.sizeof(args))
if r == 0:
    s = socket.socket(); s.connect(("127.0.0.1", int(sys.argv[2])))
    print("child connected", flush=True); os._exit(0)
print("clone3=%d errno=%d" % (r, ctypes.get_errno()), flush=True)
"#;

/// A daemon guarding agent "bot", whose connects to `bad` are denied.
pub struct Rogue {
    pub daemon: Daemon,
    pub bad: Listener,
    /// The agent's cgroup, relative to the cgroup2 mount.
    pub cgroup: String,
    /// The scripts above (connect.py, reach.py, clone.py, signals.py,
    /// kill_loop.py, unlink_loop.py), readable by agents.
    pub scripts: Scratch,
    /// The daemon's chain key (`--chain-key`), protected.
    pub chain_key: std::path::PathBuf,
    /// Its event log (a file sink beside stdout), in a protected directory.
    pub event_log: std::path::PathBuf,
}

impl Rogue {
    pub fn start(test: &str) -> Self {
        let cg = TestCgroups::new(test);
        let cgroup = cg.path("bot");
        let bad = Listener::v4();
        let scripts = Scratch::new(test);
        for (name, text) in [
            ("connect.py", PY_CONNECT),
            ("reach.py", PY_REACH),
            ("clone.py", PY_CLONE_INTO),
            ("signals.py", PY_SIGNALS),
            ("kill_loop.py", PY_KILL_LOOP),
            ("unlink_loop.py", PY_UNLINK_LOOP),
        ] {
            std::fs::write(scripts.path(name), text).expect("script");
        }
        // Outside the state directory, as an operator would keep them.
        let dir = Daemon::fresh_dir();
        let chain_key = dir.join("keys/chain.key");
        std::fs::create_dir_all(dir.join("keys")).expect("key dir");
        std::fs::write(&chain_key, "rogue-suite-chain-key\n").expect("chain key");
        std::fs::set_permissions(&chain_key, std::fs::Permissions::from_mode(0o600))
            .expect("chain key mode");
        let event_log = dir.join("log/events.jsonl");
        let policy = format!(
            r#"
[[agent]]
name = "bot"
owner = "mallory@example.com"
purpose = "rogue agent tests"
cgroup = "{cgroup}"
runners = {{ uids = [0, 65534] }}

[agent.connect]
default = "allow"
deny = ["127.0.0.1/32:{}"]

[[sink]]
type = "stdout"

[[sink]]
name = "log"
type = "file"
path = "{}"
"#,
            bad.port,
            event_log.display()
        );
        let daemon = Daemon::start_with(
            &policy,
            cg,
            dir,
            Options {
                args: vec!["--chain-key".into(), chain_key.display().to_string()],
                ..Options::default()
            },
        );
        Self {
            daemon,
            bad,
            cgroup,
            scripts,
            chain_key,
            event_log,
        }
    }

    /// Whether the BPF LSM self-defense hooks are in force (the VM tier).
    pub fn lsm(&self) -> bool {
        let start = self.daemon.wait_event("daemon.start", |_| true);
        start["daemon"]["self_defense"]["lsm"] == "in force"
    }

    /// `python3 connect.py 127.0.0.1 <denied port>`, for shell scripts.
    pub fn connect_cmd(&self) -> String {
        format!(
            "python3 {} 127.0.0.1 {} </dev/null",
            self.scripts.s("connect.py"),
            self.bad.port
        )
    }

    pub fn script(&self, name: &str) -> String {
        self.scripts.s(name)
    }

    /// The agent cgroup's absolute directory.
    pub fn cgroup_dir(&self) -> std::path::PathBuf {
        cgroup2_root().join(&self.cgroup)
    }

    /// The cgroup2 root's cgroup.procs: where an escaping agent writes.
    pub fn root_procs(&self) -> String {
        cgroup2_root().join("cgroup.procs").display().to_string()
    }

    /// Enforcement is still in force: a process placed straight into the
    /// agent's cgroup (no daemon involved) is still denied the connect.
    pub fn assert_enforced(&self, after: &str) {
        eprintln!("checking enforcement after {after}");
        assert_connect_denied(&self.cgroup, self.bad.port);
    }

    /// Waits until `n` self-defense events of `kind` match `pred`, and
    /// returns them. Exactly `n` is checked by [`Rogue::stop_exactly`].
    pub fn expect_events(&self, kind: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let found: Vec<Value> = self
                .daemon
                .events()
                .into_iter()
                .filter(|e| e["kind"] == kind && pred(e))
                .collect();
            if found.len() >= n {
                for ev in &found {
                    assert_eq!(ev["outcome"], "denied", "{ev}");
                    assert_eq!(ev["agent"]["name"], "bot", "{ev}");
                    assert_eq!(ev["rule"]["match"], "self-defense", "{ev}");
                }
                return found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} {kind} events matched, with these targets: {:?}",
                found.len(),
                found.iter().map(|e| &e["target"]).collect::<Vec<_>>()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stops the daemon and checks that exactly `n` events of `kind`
    /// matched `pred` (one attempt, one event: none reported twice).
    pub fn stop_exactly(self, kind: &str, n: usize, pred: impl Fn(&Value) -> bool) {
        let events = self.daemon.stop();
        let found: Vec<&Value> = events
            .iter()
            .filter(|e| e["kind"] == kind && pred(e))
            .collect();
        assert_eq!(found.len(), n, "{kind}: {found:#?}");
    }

    /// Waits for an `agent.escape` or `guard.tamper` event matching `pred`.
    pub fn expect_event(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let ev = self.daemon.wait_event(kind, pred);
        assert_eq!(ev["outcome"], "denied", "{ev}");
        assert_eq!(ev["agent"]["name"], "bot", "{ev}");
        assert_eq!(ev["rule"]["match"], "self-defense", "{ev}");
        ev
    }
}

/// Killed by SIGKILL (what self-defense does to an escaping process).
pub fn killed(status: ExitStatus) -> bool {
    status.signal() == Some(9)
}

/// Runs `script` with `sh -c`, without placing it anywhere first (the
/// script places itself, after opening what it wants to keep).
pub fn sh(script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("sh")
}

/// The kernel id of the guard's cgroup/connect4 link on `cgroup_dir`, from
/// `bpftool link show` run outside every agent.
pub fn guard_link_id(cgroup_dir: &std::path::Path) -> u64 {
    let id = guard_host::cgroup::id(cgroup_dir).expect("cgroup id");
    let out = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()
        .expect("bpftool (installed by `cargo xtask setup`)");
    let links: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    links
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["type"] == "cgroup" && l["cgroup_id"] == id)
        .and_then(|l| l["id"].as_u64())
        .unwrap_or_else(|| panic!("no cgroup link on cgroup {id}: {links}"))
}

/// `command`, moved into `cgroup` (relative to the cgroup2 mount) between
/// fork and exec, by writing "0" to its cgroup.procs.
pub fn placed(cgroup: &str, mut command: Command) -> Command {
    let procs = cgroup2_root().join(cgroup).join("cgroup.procs");
    let procs = CString::new(procs.display().to_string()).expect("path");
    // SAFETY: between fork and exec only open/write/close on memory
    // prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command
}

/// The agent-guard CLI aimed at `daemon`, run as root from inside `cgroup`.
pub fn cli_inside(daemon: &Daemon, cgroup: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(agent_guard_bin());
    cmd.arg("--socket").arg(&daemon.socket).args(args);
    placed(cgroup, cmd)
        .stdin(Stdio::null())
        .output()
        .expect("agent-guard inside the agent")
}

/// Asserts that a connect to 127.0.0.1:`port`, made by a process placed
/// straight into `cgroup`, is refused by the kernel (EPERM): enforcement is
/// in force whatever happened to the daemon's control plane.
pub fn assert_connect_denied(cgroup: &str, port: u16) {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PY_CONNECT, "127.0.0.1", &port.to_string()]);
    let out = placed(cgroup, cmd)
        .stdin(Stdio::null())
        .output()
        .expect("python3 in the agent cgroup");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l == "errno=1"),
        "a connect from inside the agent must still be denied: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts `out` is `op` refused for a caller inside `agent`: a failure
/// exit, the reason on stderr, and a `control.refused` event naming the op
/// and the agent the caller sits in. Returns the event.
pub fn assert_refused(daemon: &Daemon, out: &Output, op: &str, agent: &str) -> Value {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{op} from inside {agent} must fail");
    assert!(
        err.contains(&format!("inside agent {agent}")),
        "{op}: the refusal says why: {err}"
    );
    let ev = daemon.wait_event("control.refused", |e| {
        e["control"]["op"] == op && e["control"]["by"]["agent"] == agent
    });
    assert_eq!(ev["control"]["by"]["uid"], 0, "refused whatever its uid");
    ev
}

/// Of `events`, how many `of` refusals (`escape`, `signal`, `file`, ...)
/// the allowance held back and counted in `suppressed` events.
pub fn suppressed_count(events: &[Value], of: &str) -> u64 {
    events
        .iter()
        .filter(|e| {
            e["kind"] == "guard.tamper"
                && e["target"]["what"] == "suppressed"
                && e["target"]["of"] == of
        })
        .map(|e| e["target"]["count"].as_u64().expect("count"))
        .sum()
}
