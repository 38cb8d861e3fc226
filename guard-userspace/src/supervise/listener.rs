//! The seccomp listener fd: receiving, validating and answering notifications.
use std::{
    io, mem,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (6.6+; not in libc yet): the kernel
/// wakes the supervisor on the caller's CPU and the caller on the
/// supervisor's, a hand-off rather than a cross-CPU wake-up. KERNEL.md
/// measured 2 µs per round trip with it, 20–33 µs without.
const SYNC_WAKE_UP: u64 = 1;

/// What waiting on the listener gave.
pub(super) enum Next {
    /// A notification, received.
    Notif(libc::seccomp_notif),
    /// Every filtered process is gone: no notification can come any more.
    HungUp,
    /// The stop fd was signalled: the supervisor is being dropped.
    Stopped,
}

pub(super) struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Takes the listener, asking for synchronous wake-ups where the kernel
    /// has them (older kernels answer EINVAL: the same calls, only slower).
    pub(super) fn new(fd: OwnedFd) -> Self {
        let flags = SYNC_WAKE_UP;
        // SAFETY: the ioctl reads one u64 from a live local.
        let rc = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                &raw const flags,
            )
        };
        if rc != 0 {
            tracing::debug!(
                "no synchronous seccomp wake-ups on this kernel ({}); supervised calls are slower",
                io::Error::last_os_error()
            );
        }
        Self { fd }
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Blocks until the next notification arrives, every filtered process
    /// is gone (POLLHUP), or `stop` becomes readable. Runs on the
    /// supervisor's own thread, never on the runtime.
    pub(super) fn wait(&self, stop: &StopFd) -> io::Result<Next> {
        loop {
            let mut pfds = [
                libc::pollfd {
                    fd: self.raw(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stop.0.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: poll on two live pollfds.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(err);
            }
            if pfds[1].revents != 0 {
                return Ok(Next::Stopped);
            }
            let revents = pfds[0].revents;
            if revents & libc::POLLIN != 0 {
                match recv(self.raw()) {
                    Ok(notif) => return Ok(Next::Notif(notif)),
                    // The caller was killed between poll and receive, or a
                    // signal hit us: nothing to do.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => {}
                    Err(e) => return Err(e),
                }
            } else if revents & libc::POLLHUP != 0 {
                return Ok(Next::HungUp);
            } else if revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                return Err(io::Error::other(format!(
                    "seccomp listener poll reported {revents:#x}"
                )));
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

/// An eventfd that tells the supervisor thread to stop waiting.
pub(super) struct StopFd(OwnedFd);

impl StopFd {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: eventfd with flags only; the new fd is ours.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just returned to us.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes every `wait` on it return `Stopped` from now on.
    pub(super) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to our eventfd. It can
        // only fail if the counter would overflow, i.e. it is set already.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }
}
