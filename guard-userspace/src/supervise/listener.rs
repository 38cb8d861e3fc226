//! The seccomp listener fd: receiving, validating and answering notifications.
use std::{
    io, mem,
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
};

use tokio::io::{Interest, unix::AsyncFd};

/// What a zero-timeout poll of the listener says.
enum State {
    /// A notification is waiting to be received.
    Pending,
    /// Every filtered process is gone: no notification can come any more.
    HungUp,
    /// Spurious wake-up.
    Idle,
}

pub(super) struct Listener {
    fd: AsyncFd<OwnedFd>,
}

impl Listener {
    /// Registers the listener with the tokio reactor (needs a runtime).
    pub(super) fn new(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: `fd` is an open descriptor we own; AsyncFd keeps it (and
        // hence the same open file description) until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    fn raw(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// Waits for the next notification; `None` once every filtered process
    /// is gone (POLLHUP).
    pub(super) async fn next(&self) -> io::Result<Option<libc::seccomp_notif>> {
        loop {
            let mut guard = self.fd.readable().await?;
            // Readiness from the reactor is edge-triggered and merges POLLIN
            // with POLLHUP; ask the fd itself which one it is, so that RECV
            // is only called when it cannot block.
            match poll_now(self.raw())? {
                State::Pending => match recv(self.raw()) {
                    Ok(notif) => return Ok(Some(notif)),
                    // The caller was killed between poll and receive, or a
                    // signal hit us: nothing to do.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => {}
                    Err(e) => return Err(e),
                },
                State::HungUp => return Ok(None),
                State::Idle => guard.clear_ready(),
            }
        }
    }

    /// Whether the notification is still pending, i.e. its thread is still
    /// blocked in the call (so its TID has not been recycled).
    pub(super) fn id_valid(&self, id: u64) -> bool {
        // SAFETY: the ioctl reads one u64 from a live local.
        unsafe {
            libc::ioctl(
                self.raw(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &raw const id,
            ) == 0
        }
    }

    /// Answers notification `id`: the call returns 0, or fails with `errno`.
    /// An ENOENT error means the caller is gone.
    pub(super) fn respond(&self, id: u64, result: Result<(), i32>) -> io::Result<()> {
        let resp = libc::seccomp_notif_resp {
            id,
            val: 0,
            // Never 0 on the error path: the kernel would then return `val`.
            error: match result {
                Ok(()) => 0,
                Err(errno) => -errno.max(1),
            },
            // Never SECCOMP_USER_NOTIF_FLAG_CONTINUE: the supervisor performs
            // the call itself (see the module docs).
            flags: 0,
        };
        loop {
            // SAFETY: the ioctl reads a seccomp_notif_resp from a live local.
            let rc =
                unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_SEND, &raw const resp) };
            if rc == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err);
            }
        }
    }

    /// Answers notification `id` with a new fd in the caller, a copy of
    /// `file` (close-on-exec if `cloexec`): installed and sent in one step
    /// (SECCOMP_ADDFD_FLAG_SEND, 5.14+), so the call returns its number.
    pub(super) fn respond_with_fd(&self, id: u64, file: &OwnedFd, cloexec: bool) -> io::Result<()> {
        let addfd = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
            srcfd: file.as_raw_fd() as u32,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        loop {
            // SAFETY: the ioctl reads a seccomp_notif_addfd from a live local.
            let rc = unsafe {
                libc::ioctl(
                    self.raw(),
                    libc::SECCOMP_IOCTL_NOTIF_ADDFD,
                    &raw const addfd,
                )
            };
            if rc >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err);
            }
        }
    }
}

fn poll_now(fd: RawFd) -> io::Result<State> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd, without waiting.
    let n = unsafe { libc::poll(&raw mut pfd, 1, 0) };
    if n < 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::EINTR) {
            Ok(State::Idle)
        } else {
            Err(err)
        };
    }
    Ok(if pfd.revents & libc::POLLIN != 0 {
        State::Pending
    } else if pfd.revents & libc::POLLHUP != 0 {
        State::HungUp
    } else if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err(io::Error::other(format!(
            "seccomp listener poll reported {:#x}",
            pfd.revents
        )));
    } else {
        State::Idle
    })
}

fn recv(fd: RawFd) -> io::Result<libc::seccomp_notif> {
    // SAFETY: seccomp_notif is plain old data; the kernel requires it zeroed.
    let mut notif: libc::seccomp_notif = unsafe { mem::zeroed() };
    // SAFETY: the ioctl fills a seccomp_notif in a live local; libc's struct
    // is the kernel's UAPI layout.
    let rc = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &raw mut notif) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(notif)
}
