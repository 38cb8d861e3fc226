//! `agent-guard run --agent NAME -- CMD...`
//!
//! The command must never run outside its agent, not even for an instant.
//! The launcher opens a session with the daemon; the forked child, before
//! exec, connects to the daemon itself and asks to join. The daemon moves
//! exactly that process (SO_PEERCRED) into the run's cgroup, and only then
//! does the child exec. If joining fails, the child exits without exec.
//!
//! Where the kernel cannot guard deletes itself (no BPF LSM), the daemon asks
//! for seccomp supervision: the child installs a user-notification filter on
//! unlink/unlinkat/rmdir first and hands its listener fd to the daemon with
//! the join message. This sets no_new_privs: setuid programs do not gain
//! privileges inside such a run. The child also hands a copy of the
//! listener to the launcher, which keeps the run's held deletes alive
//! across a daemon crash (see `handover`).
//!
//! On every backend the command runs with no_new_privs and the launcher is
//! non-dumpable, so that agent processes can neither gain privileges
//! through setuid programs nor read the launcher. Where the daemon's BPF LSM
//! self-defense hooks are not in force, it also names a Landlock
//! confinement (see `confine`), which the child puts in force after joining
//! and before exec; a run that cannot be confined does not start.
mod handover;

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd as _, RawFd},
        unix::{
            ffi::OsStrExt as _,
            net::UnixStream,
            process::{CommandExt as _, ExitStatusExt as _},
        },
    },
    path::Path,
    process::{Command, ExitCode},
    sync::atomic::{AtomicI32, Ordering},
};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{self, SigHandler, Signal};

use super::args::RunArgs;
use crate::{
    confine::{Confinement, Prepared},
    control::{Client, Envelope, OK_PREFIX, PROTOCOL_VERSION, Request},
    supervise::{FilterOptions, FilterProgram, recv_fds_now, send_with_fd},
};

/// Exit status when the command could not be started, as shells use.
const EXIT_CANNOT_RUN: u8 = 127;
/// Exit status when the command was not started because joining its agent
/// failed; the daemon's reason is printed first.
const EXIT_NOT_PLACED: i32 = 126;

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

pub fn run(args: RunArgs, socket: &Path) -> Result<ExitCode> {
    let mut client = Client::connect(socket)?;
    let reply = client
        .call(Request::SessionOpen {
            agent: args.agent.clone(),
            on_behalf_of: args.on_behalf_of.clone(),
            argv: args.command.clone(),
        })
        .with_context(|| format!("starting a run of agent {:?}", args.agent))?;
    let field = |name: &str| -> Result<String> {
        reply
            .data
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .with_context(|| format!("daemon reply lacks {name}"))
    };
    let supervise = reply
        .data
        .get("supervise_deletes")
        .and_then(|v| v.as_bool())
        .context("daemon reply lacks supervise_deletes")?;
    let (session, token) = (field("session")?, field("token")?);
    // Absent from an older daemon's reply: nothing lifted.
    let flag = |name: &str| {
        reply
            .data
            .get(name)
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    };
    let filter = FilterOptions {
        allow_mounts: flag("allow_mounts"),
        allow_io_uring: flag("allow_io_uring"),
    };
    let confinement: Confinement = match reply.data.get("confine") {
        Some(v) => serde_json::from_value(v.clone()).context("daemon reply: confine")?,
        None => Confinement::default(),
    };
    // Built before the fork: the child only makes system calls.
    let confine = if confinement.is_empty() {
        None
    } else {
        match confinement.prepare() {
            Ok(prepared) => Some(prepared),
            Err(err) => {
                eprintln!("agent-guard run: not starting {:?}: {err}", args.command[0]);
                let _ = client.call(Request::SessionClose {
                    exit_code: Some(EXIT_NOT_PLACED),
                    signal: None,
                });
                return Ok(ExitCode::from(EXIT_NOT_PLACED as u8));
            }
        }
    };
    handover::protect_launcher().context("making the launcher non-dumpable")?;
    // The child sends the launcher its copy of the listener over this pair.
    let keep = if supervise {
        Some(UnixStream::pair().context("socketpair for the seccomp listener")?)
    } else {
        None
    };
    let keep_fd = keep
        .as_ref()
        .map_or(-1, |(_, child_end)| child_end.as_raw_fd());
    let mut join = JoinRequest::new(
        socket,
        session.clone(),
        token.clone(),
        supervise.then_some(filter),
        keep_fd,
    )?;
    join.confine = confine;

    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    // SAFETY: between fork and exec the closure only makes async-signal-safe
    // system calls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            join.join_or_exit();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            eprintln!("agent-guard run: cannot start {:?}: {err}", args.command[0]);
            let _ = client.call(Request::SessionClose {
                exit_code: Some(EXIT_CANNOT_RUN.into()),
                signal: None,
            });
            return Ok(ExitCode::from(EXIT_CANNOT_RUN));
        }
    };
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    let listener = match keep {
        None => None,
        Some((ours, child_end)) => {
            drop(child_end);
            // Sent before exec, and spawn returns after exec: it is there,
            // unless the child failed before (it then exits on its own).
            recv_fds_now(ours.as_raw_fd())
                .context("receiving the run's seccomp listener from the child")?
                .and_then(|mut fds| fds.pop())
        }
    };
    let watch = handover::Watch::start(handover::Link {
        socket: socket.to_path_buf(),
        session,
        token,
        listener,
        client,
    });

    // The terminal sends SIGINT/SIGQUIT to the whole foreground group, child
    // included; the launcher must outlive its child to report its status.
    // SIGTERM and SIGHUP aimed at the launcher are passed on.
    // SAFETY: `forward` is async-signal-safe.
    unsafe {
        signal::signal(Signal::SIGINT, SigHandler::SigIgn)?;
        signal::signal(Signal::SIGQUIT, SigHandler::SigIgn)?;
        signal::signal(Signal::SIGTERM, SigHandler::Handler(forward))?;
        signal::signal(Signal::SIGHUP, SigHandler::Handler(forward))?;
    }
    let status = child.wait().context("waiting for the command")?;
    let (exit_code, sig) = (status.code(), status.signal());
    if let Err(err) = watch.finish(exit_code, sig) {
        eprintln!("agent-guard run: could not report the run's end to the daemon: {err:#}");
    }
    Ok(match (exit_code, sig) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(sig)) => ExitCode::from(128u8.wrapping_add(sig as u8)),
        (None, None) => bail!("the command ended with an unknown status"),
    })
}

/// Everything the child needs to join its session, built before the fork.
struct JoinRequest {
    addr: libc::sockaddr_un,
    line: Vec<u8>,
    failure: CString,
    /// Seccomp filter to install before joining, when the daemon asked.
    filter: Option<FilterProgram>,
    /// Where the launcher receives its copy of the listener (-1: none).
    keep: RawFd,
    /// Landlock ruleset to put in force once placed (None: no_new_privs only).
    confine: Option<Prepared>,
}

impl JoinRequest {
    fn new(
        socket: &Path,
        session: String,
        token: String,
        supervise: Option<FilterOptions>,
        keep: RawFd,
    ) -> Result<Self> {
        // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let path = socket.as_os_str().as_bytes();
        if path.len() >= addr.sun_path.len() {
            bail!("socket path {} is too long", socket.display());
        }
        for (dst, src) in addr.sun_path.iter_mut().zip(path) {
            *dst = *src as libc::c_char;
        }
        let mut line = serde_json::to_vec(&Envelope {
            v: PROTOCOL_VERSION,
            request: Request::SessionJoin { session, token },
        })?;
        line.push(b'\n');
        Ok(Self {
            addr,
            line,
            failure: CString::new(
                "agent-guard run: the daemon did not place the command into its agent; not starting it: ",
            )?,
            filter: supervise.map(FilterProgram::new),
            keep,
            confine: None,
        })
    }

    /// In the forked child: join, or print the daemon's reason and _exit.
    /// Only async-signal-safe calls (prctl, seccomp, socket, connect,
    /// sendmsg, write, read, close, _exit).
    fn join_or_exit(&self) {
        // SAFETY: raw system calls on buffers owned by `self`, which the
        // child inherited intact.
        unsafe {
            let listener = match &self.filter {
                None => -1,
                Some(filter) => match filter.install() {
                    Ok(fd) if self.keep < 0 || send_with_fd(self.keep, b"L", fd) => fd,
                    _ => {
                        let _ = write_all(
                            2,
                            b"agent-guard run: cannot install the seccomp filter that guards destructive file operations, or hand it to the launcher; not starting the command\n",
                        );
                        libc::_exit(EXIT_NOT_PLACED);
                    }
                },
            };
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            let mut reply = [0u8; 1024];
            let mut got = 0usize;
            let ok = fd >= 0
                && libc::connect(
                    fd,
                    (&raw const self.addr).cast(),
                    size_of::<libc::sockaddr_un>() as libc::socklen_t,
                ) == 0
                && if listener >= 0 {
                    send_with_fd(fd, &self.line, listener)
                } else {
                    write_all(fd, &self.line)
                }
                && {
                    while got < reply.len() && !reply[..got].contains(&b'\n') {
                        let n = libc::read(fd, reply[got..].as_mut_ptr().cast(), reply.len() - got);
                        if n <= 0 {
                            break;
                        }
                        got += n as usize;
                    }
                    reply[..got].starts_with(OK_PREFIX.as_bytes())
                };
            if fd >= 0 {
                libc::close(fd);
            }
            // The agent must never hold its own listener: it could answer
            // its own notifications.
            if listener >= 0 {
                libc::close(listener);
            }
            if !ok {
                let msg = self.failure.as_bytes();
                let _ = write_all(2, msg);
                let _ = write_all(
                    2,
                    if got > 0 {
                        &reply[..got]
                    } else {
                        b"no answer\n"
                    },
                );
                libc::_exit(EXIT_NOT_PLACED);
            }
            // Placed: now out of reach of the guard, and no privileges to gain.
            let confined = match &self.confine {
                Some(prepared) => prepared.restrict_self(),
                None => {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) == 0 {
                        Ok(())
                    } else {
                        Err(*libc::__errno_location())
                    }
                }
            };
            if confined.is_err() {
                let _ = write_all(
                    2,
                    b"agent-guard run: cannot confine the command (no_new_privs, Landlock); not starting it\n",
                );
                libc::_exit(EXIT_NOT_PLACED);
            }
        }
    }
}

/// write(2) until done; async-signal-safe.
fn write_all(fd: libc::c_int, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: valid buffer for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}
