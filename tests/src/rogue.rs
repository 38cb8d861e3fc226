//! Helpers for the rogue-agent tests: an agent that turns on the guard.
//! Each attempt is made from inside an agent's cgroup, and each test then
//! checks enforcement with a process placed straight into that cgroup
//! (cgroup.procs, not through the daemon).
use std::{
    ffi::CString,
    os::unix::process::CommandExt as _,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

use crate::{Daemon, PY_CONNECT, agent_guard_bin, cgroup2_root};

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
