//! Stop and reload signals, judged by who sent them. Enforcement is
//! released only by an explicit stop from outside every agent: a SIGTERM,
//! SIGINT or SIGHUP sent from inside an agent's cgroup is refused (a
//! `control.refused` event) and changes nothing. The signals are read
//! from a signalfd, which says who sent each one.
//!
//! A sender is identified by its pid, which the kernel records when the
//! signal is sent; the daemon then pins it (pidfd) and reads its cgroup
//! (a sender that exited but is not reaped yet still reads). Pids are
//! handed out in sequence, so the sender's pid cannot name another process
//! unless the whole pid range wrapped in the meantime. A sender that has
//! already been reaped cannot be identified, and its signal is refused
//! too: stop the daemon from a process that waits for it (`systemctl
//! stop`, `kill` from a shell, Ctrl-C).
//!
//! The signalfd is read by a thread of its own, in blocking reads, not by
//! the async runtime: a stop or a reload must get through however busy the
//! runtime's workers are (an agent in a tight loop keeps the event reader
//! busy, and in a 1-CPU guest that once kept a SIGHUP unread for minutes).
use anyhow::{Context as _, Result};
use nix::sys::{
    signal::{SigSet, SigmaskHow, Signal, pthread_sigmask},
    signalfd::{SfdFlags, SignalFd},
};

use super::{Shared, access};
use crate::events::model::{Peer, Refusal, Subject};

/// The signals the daemon acts on.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Blocks the handled signals in the calling thread, so that they queue
/// for the signalfd instead of running a default action. Call it before
/// any other thread starts: threads inherit the mask.
pub fn block() -> Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None)
        .context("blocking SIGTERM, SIGINT and SIGHUP for the signalfd")
}

/// Undoes [`block`] for a child process between fork and exec
/// (async-signal-safe): children must not inherit the blocked mask.
pub fn unblock_in_child() -> std::io::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None).map_err(std::io::Error::from)
}

/// Who sent a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// The kernel (a terminal's Ctrl-C, for instance).
    Kernel,
    /// A process outside every agent.
    Outside { pid: u32, uid: u32 },
    /// A process inside this agent's cgroup.
    Agent { pid: u32, uid: u32, agent: String },
    /// A process that could not be identified (see the module's doc).
    Unknown { pid: u32, uid: u32 },
}

/// One signal as received.
#[derive(Debug)]
pub struct Received {
    pub signal: Signal,
    pub sender: Sender,
}

pub struct Signals {
    fd: SignalFd,
}

/// `si_code` of kill(2) and tgkill(2)/tkill(2): the only codes whose
/// `si_pid` the kernel fills in itself. With rt_sigqueueinfo(2) a sender
/// writes its own siginfo, `si_pid` included, and may use any negative code
/// but these two (the kernel refuses SI_TKILL and codes >= 0 from another
/// process).
const SI_USER: i32 = 0;
const SI_TKILL: i32 = -6;

impl Signals {
    /// Reads the signals [`block`] blocked, in blocking reads.
    pub fn new() -> Result<Self> {
        let fd = SignalFd::with_flags(&handled(), SfdFlags::SFD_CLOEXEC).context("signalfd")?;
        Ok(Self { fd })
    }

    /// Waits for the next signal, with its sender judged now against
    /// `shared`'s agents. Blocks the calling thread.
    pub fn next(&mut self, shared: &Shared) -> Result<Received> {
        loop {
            let info = match self.fd.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) | Err(nix::errno::Errno::EINTR) => continue,
                Err(err) => return Err(err).context("reading the signalfd"),
            };
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            let sender = identify(shared, info.ssi_pid, info.ssi_uid, info.ssi_code);
            return Ok(Received { signal, sender });
        }
    }
}

/// Who sent a signal, read as soon as it is received.
fn identify(shared: &Shared, pid: u32, uid: u32, code: i32) -> Sender {
    let unknown = Sender::Unknown { pid, uid };
    if code > 0 {
        // Only the kernel sends positive codes (a terminal's Ctrl-C is
        // SI_KERNEL, 0x80).
        return Sender::Kernel;
    }
    if code != SI_USER && code != SI_TKILL {
        // Its pid is whatever the sender wrote: a forged "from pid 1".
        return unknown;
    }
    // Pinned first, so the pid cannot change owner while we read.
    let Ok(pidfd) = guard_host::peer::pidfd_open(pid) else {
        return unknown;
    };
    let Some(cgroup) = guard_host::proc::cgroup(pid) else {
        return unknown;
    };
    if !guard_host::peer::pidfd_alive(std::os::fd::AsFd::as_fd(&pidfd)) {
        return unknown;
    }
    match access::agent_of_cgroup(&shared.registry(), &cgroup) {
        Some(agent) => Sender::Agent {
            pid,
            uid,
            agent: agent.to_owned(),
        },
        None => Sender::Outside { pid, uid },
    }
}

impl Sender {
    /// Whether this sender may stop the daemon or reload its policy.
    pub fn may_control(&self) -> bool {
        matches!(self, Sender::Kernel | Sender::Outside { .. })
    }

    /// Who, for events.
    pub fn peer(&self) -> Peer {
        match self {
            Sender::Kernel => Peer {
                user: Some("kernel".into()),
                ..Peer::default()
            },
            Sender::Outside { pid, uid } | Sender::Unknown { pid, uid } => Peer {
                uid: Some(*uid),
                pid: Some(*pid),
                user: Some(access::user_name(*uid)),
                ..Peer::default()
            },
            Sender::Agent { pid, uid, agent } => Peer {
                uid: Some(*uid),
                pid: Some(*pid),
                user: Some(access::user_name(*uid)),
                agent: Some(agent.clone()),
                ..Peer::default()
            },
        }
    }

    /// Why this sender's stop or reload is refused.
    pub fn refusal(&self) -> &'static str {
        match self {
            Sender::Agent { .. } => {
                "the sender is inside an agent: agents have no say in the control plane"
            }
            _ => {
                "the sender could not be identified (it exited before it could be read); \
                 stop the daemon from a process that waits (systemctl stop, kill from a shell)"
            }
        }
    }

    /// Whose refusal allowance a refused signal draws on.
    pub fn source(&self) -> String {
        match self {
            Sender::Agent { uid, agent, .. } => format!("uid {uid} in agent {agent}"),
            Sender::Outside { uid, .. } | Sender::Unknown { uid, .. } => format!("uid {uid}"),
            Sender::Kernel => "kernel".into(),
        }
    }
}

/// Reports a refused stop or reload signal.
pub fn refuse(shared: &Shared, received: &Received) {
    let op = if received.signal == Signal::SIGHUP {
        "reload"
    } else {
        "stop"
    };
    tracing::warn!(signal = ?received.signal, sender = ?received.sender, "signal refused");
    shared.refusals.report(
        &received.sender.source(),
        Refusal::new(op, received.sender.peer(), received.sender.refusal())
            .about(Some(Subject::Target(format!("{:?}", received.signal)))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_kernel_and_outsiders_control() {
        assert!(Sender::Kernel.may_control());
        assert!(Sender::Outside { pid: 1, uid: 0 }.may_control());
        let agent = Sender::Agent {
            pid: 9,
            uid: 0,
            agent: "a".into(),
        };
        assert!(!agent.may_control());
        assert_eq!(agent.peer().agent.as_deref(), Some("a"));
        assert!(!Sender::Unknown { pid: 9, uid: 0 }.may_control());
    }
}
