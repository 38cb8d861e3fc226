//! Who is at the other end of a unix socket, and what its process is now,
//! pinned against pid reuse.
//!
//! SO_PEERCRED gives the peer's pid as it was at connect(2). Reading
//! /proc/PID later is only about that process if the pid has not been
//! reused since, so every read here is checked against a handle on the
//! process itself:
//! - SO_PEERPIDFD (Linux 6.5+): a pidfd for exactly the process that
//!   connected, taken by the kernel at connect time;
//! - before 6.5, a pidfd opened when the connection is taken, plus the
//!   process's start time at that moment (a pid reused before that moment
//!   is the one case this cannot tell apart; `doctor` says so).
//!
//! After each /proc read the pidfd is asked whether its process still
//! exists (`pidfd_send_signal` with signal 0). If it does, the pid could not
//! have been reused during the read, so what was read is the peer's.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

/// How a peer's process is pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// SO_PEERPIDFD: the kernel's own handle on the connecting process.
    PeerPidfd,
    /// A pidfd opened at accept, and the start time seen then.
    OpenedAtAccept { start_time: u64 },
}

/// The process at the other end of a unix stream socket.
#[derive(Debug)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pidfd: OwnedFd,
    pub pinning: Pinning,
}

/// Why a peer could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("SO_PEERCRED: {0}")]
    Cred(#[source] io::Error),
    #[error("the peer has no pid in this pid namespace")]
    NoPid,
    #[error("the peer process {0} is gone")]
    Gone(u32),
    #[error("pidfd for peer {pid}: {source}")]
    Pidfd {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// getsockopt(SOL_SOCKET, `opt`) into a value that starts as `value`.
fn getsockopt<T>(fd: RawFd, opt: libc::c_int, mut value: T) -> io::Result<T> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is valid for `len` bytes and outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// pidfd_open(2) (5.3+).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether the process behind `pidfd` still exists (not yet reaped).
pub fn pidfd_alive(pidfd: BorrowedFd<'_>) -> bool {
    // SAFETY: signal 0 only checks; the null siginfo is allowed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}

/// Whether this kernel gives SO_PEERPIDFD (6.5+), probed on a socketpair.
pub fn peer_pidfd_supported() -> bool {
    let Ok((a, _b)) = std::os::unix::net::UnixStream::pair() else {
        return false;
    };
    getsockopt::<RawFd>(a.as_raw_fd(), libc::SO_PEERPIDFD, -1).is_ok_and(|fd| {
        // SAFETY: the kernel gave us this fd.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        true
    })
}

impl Peer {
    /// Identifies the peer of the connected unix stream socket `sock`.
    /// Call it as soon as the connection is accepted.
    pub fn of(sock: BorrowedFd<'_>) -> Result<Self, PeerError> {
        let fd = sock.as_raw_fd();
        let empty = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let cred = getsockopt(fd, libc::SO_PEERCRED, empty).map_err(PeerError::Cred)?;
        let pid = u32::try_from(cred.pid)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(PeerError::NoPid)?;
        let (pidfd, pinning) = match getsockopt::<RawFd>(fd, libc::SO_PEERPIDFD, -1) {
            // SAFETY: the kernel just gave us this fd; nothing else owns it.
            Ok(raw) => (unsafe { OwnedFd::from_raw_fd(raw) }, Pinning::PeerPidfd),
            Err(_) => {
                let pidfd = pidfd_open(pid).map_err(|source| match source.raw_os_error() {
                    Some(libc::ESRCH) => PeerError::Gone(pid),
                    _ => PeerError::Pidfd { pid, source },
                })?;
                let start_time = crate::proc::stat(pid)
                    .ok_or(PeerError::Gone(pid))?
                    .start_time;
                (pidfd, Pinning::OpenedAtAccept { start_time })
            }
        };
        Ok(Self {
            pid,
            uid: cred.uid,
            gid: cred.gid,
            pidfd,
            pinning,
        })
    }

    /// Runs `read` on the peer's pid and returns what it read only if the
    /// pid still named the peer afterwards; `None` once the peer is gone.
    pub fn read_pinned<T>(&self, read: impl FnOnce(u32) -> Option<T>) -> Option<T> {
        let value = read(self.pid)?;
        if !pidfd_alive(self.pidfd.as_fd()) {
            return None;
        }
        if let Pinning::OpenedAtAccept { start_time } = self.pinning {
            if crate::proc::stat(self.pid)?.start_time != start_time {
                return None;
            }
        }
        Some(value)
    }

    /// The peer's cgroup v2 path now ("/a/b"), or `None` if it is gone.
    pub fn cgroup(&self) -> Option<String> {
        self.read_pinned(crate::proc::cgroup)
    }

    /// The peer's supplementary groups now, or `None` if it is gone.
    pub fn groups(&self) -> Option<Vec<u32>> {
        self.read_pinned(crate::proc::groups)
    }
}

#[cfg(test)]
mod tests {
    use std::os::{fd::AsFd as _, unix::net::UnixStream};

    use super::*;

    #[test]
    fn identifies_itself_through_a_socketpair() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let peer = Peer::of(a.as_fd()).expect("peer");
        assert_eq!(peer.pid, std::process::id());
        assert_eq!(peer.uid, nix::unistd::getuid().as_raw());
        assert_eq!(peer.cgroup(), crate::proc::cgroup(std::process::id()));
        assert!(peer.groups().is_some());
    }

    #[test]
    fn a_reaped_process_reads_as_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("0")
            .spawn()
            .expect("sleep");
        let pidfd = pidfd_open(child.id()).expect("pidfd_open");
        assert!(child.wait().expect("wait").success());
        assert!(!pidfd_alive(pidfd.as_fd()));
    }
}
