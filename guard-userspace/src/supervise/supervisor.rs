//! The handling of one notification (the scheme is in the module docs of
//! `supervise`): what every call shares (reading the caller, asking the
//! decider, answering); each call's own steps are in delete.rs, rename.rs
//! and truncate.rs. The loop that runs it is in dispatch.rs.
use std::{
    future::Future,
    io,
    os::fd::OwnedFd,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tracing::{debug, error};

use super::{
    Decide, Decision, Object, Op, Request,
    calls::{self, Call},
    identity::Identity,
    listener::Listener,
    target::{Host, ReadError, Status, Target},
};

/// Why handling stopped before the call was performed.
pub(super) enum Stop {
    /// Answer the caller with this errno (what the kernel would say, or EPERM).
    Errno(i32),
    /// The caller is gone; there is nobody to answer.
    Gone,
    /// An internal failure: the caller gets EPERM and the log gets this.
    Failed(Failure),
    /// The call would change what lies on a cgroup filesystem (this real
    /// path): refused with EACCES, as the run's Landlock ruleset refuses
    /// its own writes there, and reported as an escape attempt.
    Cgroup(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    #[error("unexpected system call {nr} (arch {arch:#x}) from the filter")]
    UnexpectedSyscall { arch: u32, nr: i32 },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the decider panicked")]
    DeciderPanicked,
    #[error("the real path of what was opened is not absolute: {0:?}")]
    NotAbsolute(String),
    #[error("the object changed between judging and acting, {0} times in a row")]
    Unstable(u32),
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Self {
        Stop::Failed(failure)
    }
}

pub(super) fn io_failure(what: &'static str) -> impl FnOnce(io::Error) -> Stop {
    move |source| Stop::Failed(Failure::Io { what, source })
}

/// What the caller gets.
pub(super) enum Answer {
    /// The call returns 0 or fails with the errno.
    Done(Result<(), i32>),
    /// The call returns this file, installed as a new fd in the caller.
    Fd { file: OwnedFd, cloexec: bool },
}

pub(super) async fn handle(
    listener: Arc<Listener>,
    host: Arc<Host>,
    decider: Arc<dyn Decide>,
    notif: libc::seccomp_notif,
) {
    let tid = notif.pid;
    let answer = match process(&listener, &host, &decider, &notif).await {
        Ok(answer) => answer,
        Err(Stop::Errno(errno)) => Answer::Done(Err(errno)),
        Err(Stop::Gone) => {
            debug!(tid, "caller gone before its call was answered");
            return;
        }
        Err(Stop::Failed(failure)) => {
            error!(tid, "call refused after an internal error: {failure}");
            Answer::Done(Err(libc::EPERM))
        }
        // `process` reported it.
        Err(Stop::Cgroup(_)) => Answer::Done(Err(libc::EACCES)),
    };
    let sent = match answer {
        Answer::Done(result) => listener.respond(notif.id, result),
        Answer::Fd { file, cloexec } => match listener.respond_with_fd(notif.id, &file, cloexec) {
            // The caller could not take the fd (EMFILE, ...): it gets the
            // kernel's reason instead; the file is closed with ours.
            Err(err) if err.raw_os_error().is_some_and(|e| e != libc::ENOENT) => {
                listener.respond(notif.id, Err(err.raw_os_error().unwrap_or(libc::EPERM)))
            }
            other => other,
        },
    };
    if let Err(err) = sent {
        if err.raw_os_error() == Some(libc::ENOENT) {
            debug!(tid, "caller gone before its answer arrived");
        } else {
            error!(tid, "cannot answer a seccomp notification: {err}");
        }
    }
}

async fn process(
    listener: &Listener,
    host: &Arc<Host>,
    decider: &Arc<dyn Decide>,
    notif: &libc::seccomp_notif,
) -> Result<Answer, Stop> {
    let call = calls::decode(notif)?;
    let caller = Caller::open(listener, host, notif)?;
    let done = performed_call(&caller, decider, call).await;
    if let Err(Stop::Cgroup(path)) = &done {
        caller.validate()?;
        let req = caller.request(
            Op::Open,
            Object {
                path: String::from_utf8_lossy(path).into_owned(),
                raw_path: String::new(),
                exists: true,
                dir: false,
            },
            None,
        );
        if catch_unwind(AssertUnwindSafe(|| decider.cgroup_refused(&req))).is_err() {
            error!(path = %req.object.path, "the decider panicked in cgroup_refused()");
        }
    }
    done
}

async fn performed_call(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    call: Call,
) -> Result<Answer, Stop> {
    match call {
        Call::Delete { op, dirfd, path } => {
            super::delete::delete(caller, decider, op, dirfd, path).await
        }
        Call::Rename { .. } | Call::Link { .. } => {
            super::rename::rename_or_link(caller, decider, call).await
        }
        Call::Truncate { .. } | Call::Ftruncate { .. } | Call::Open { .. } => {
            super::truncate::truncate(caller, decider, call).await
        }
        Call::Refuse { op, path, reason } => refuse(caller, decider, op, path, reason).await,
    }
}

/// A refused call: the decider reports it (and may hold it for a human,
/// in freeze mode), but it never proceeds, since it can never be performed
/// on the caller's behalf.
async fn refuse(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    op: Op,
    path: Option<(i32, u64)>,
    reason: &'static str,
) -> Result<Answer, Stop> {
    let raw_path = match path {
        Some((_, addr)) => match caller.target.read_path(addr) {
            Ok(raw) => String::from_utf8_lossy(&raw).into_owned(),
            Err(ReadError::Gone) => return Err(Stop::Gone),
            Err(_) => String::new(),
        },
        None => String::new(),
    };
    caller.validate()?;
    let object = Object {
        path: String::new(),
        raw_path,
        exists: false,
        dir: false,
    };
    let (req, decision) = caller.ask(decider, op, object, None).await?;
    if decision == Decision::Allow {
        debug!(
            ?op,
            reason, "allowed by policy now, but a supervised run cannot be given it"
        );
    }
    let _ = req;
    Err(Stop::Errno(libc::EPERM))
}

/// The calling thread, as read from /proc while it waits in its call.
pub(super) struct Caller<'a> {
    pub listener: &'a Listener,
    pub host: &'a Arc<Host>,
    pub notif: &'a libc::seccomp_notif,
    pub target: Target,
    pub status: Status,
    pub identity: Arc<Identity>,
}

impl<'a> Caller<'a> {
    /// Opens the caller's /proc entry and reads its credentials.
    fn open(
        listener: &'a Listener,
        host: &'a Arc<Host>,
        notif: &'a libc::seccomp_notif,
    ) -> Result<Self, Stop> {
        let gone_or = |stop: Stop| {
            if listener.id_valid(notif.id) {
                stop
            } else {
                Stop::Gone
            }
        };
        let target = Target::open(notif.pid as libc::pid_t)
            .map_err(|e| gone_or(io_failure("opening /proc/TID")(e)))?;
        let facts = (|| {
            Ok::<_, io::Error>((
                target.status()?,
                target.foreign_root(host)?,
                target.same_user_ns(host)?,
            ))
        })();
        let (status, root, same_user_ns) =
            facts.map_err(|e| gone_or(io_failure("reading the caller's credentials")(e)))?;
        let identity = Arc::new(Identity {
            fsuid: status.fsuid,
            fsgid: status.fsgid,
            groups: status.groups.clone(),
            // Capabilities from another user namespace do not apply to ours.
            cap_mask: if same_user_ns { status.cap_eff } else { 0 },
            root,
            umask: status.umask,
        });
        Ok(Self {
            listener,
            host,
            notif,
            target,
            status,
            identity,
        })
    }

    /// A failure while the caller may have died is not an internal error
    /// if it did die.
    pub fn gone_or(&self, stop: Stop) -> Stop {
        if self.listener.id_valid(self.notif.id) {
            stop
        } else {
            Stop::Gone
        }
    }

    /// Checks the notification is still pending, so that nothing read from
    /// /proc since belongs to a recycled TID.
    pub fn validate(&self) -> Result<(), Stop> {
        if self.listener.id_valid(self.notif.id) {
            Ok(())
        } else {
            Err(Stop::Gone)
        }
    }

    /// The path at `addr` in the caller's memory, as the kernel's getname
    /// reads it (ENOENT for an empty one unless `empty_ok`).
    pub fn read_path(&self, addr: u64, empty_ok: bool) -> Result<Vec<u8>, Stop> {
        let raw = self.target.read_path(addr).map_err(|e| match e {
            ReadError::Errno(errno) => Stop::Errno(errno),
            ReadError::Gone => Stop::Gone,
            ReadError::Io(e) => {
                self.gone_or(io_failure("reading a path from the caller's memory")(e))
            }
        })?;
        if raw.is_empty() && !empty_ok {
            return Err(Stop::Errno(libc::ENOENT));
        }
        Ok(raw)
    }

    /// The directory a path is relative to: None for an absolute path (the
    /// caller's root), else its cwd or its fd `dirfd`.
    pub fn base(&self, dirfd: i32, raw: &[u8]) -> Result<Option<OwnedFd>, Stop> {
        if raw.first() == Some(&b'/') {
            return Ok(None);
        }
        if dirfd == guard_common::AT_FDCWD {
            return Ok(Some(self.target.cwd().map_err(|e| {
                self.gone_or(io_failure("opening the caller's cwd")(e))
            })?));
        }
        self.fd(dirfd).map(Some)
    }

    /// The caller's open fd `n` (EBADF if it has none).
    pub fn fd(&self, n: i32) -> Result<OwnedFd, Stop> {
        self.target.fd(n).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                // Not an open fd of the caller (if the caller still exists).
                self.gone_or(Stop::Errno(libc::EBADF))
            } else {
                self.gone_or(io_failure("opening the caller's fd")(e))
            }
        })
    }

    /// The caller's open file `n` itself (the same open file description,
    /// so its mode counts as in the kernel), through a pidfd.
    pub fn file(&self, n: i32) -> Result<OwnedFd, Stop> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        // SAFETY: pidfd_open with a pid and no flags; the new fd is ours.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.status.tgid, 0) };
        if pidfd < 0 {
            let e = io::Error::last_os_error();
            return Err(self.gone_or(io_failure("pidfd_open on the caller")(e)));
        }
        // SAFETY: just returned to us.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        // SAFETY: pidfd_getfd on a live pidfd; the new fd is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBADF) => self.gone_or(Stop::Errno(libc::EBADF)),
                _ => self.gone_or(io_failure("pidfd_getfd on the caller")(e)),
            });
        }
        // SAFETY: just returned to us.
        let file = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // The thread's fd table is its process's unless it was cloned
        // without CLONE_FILES: check it is the same file.
        let by_tid = self.fd(n)?;
        let id = |f: &OwnedFd| super::target::stat_fd(f).map(|s| (s.st_dev, s.st_ino));
        match (id(&file), id(&by_tid)) {
            (Ok(a), Ok(b)) if a == b => Ok(file),
            _ => Err(Failure::Io {
                what: "matching the caller's fd",
                source: io::Error::other("the thread's fd table is not its process's"),
            }
            .into()),
        }
    }

    /// The decider's view of `op` on `object` (and `second`) by this caller.
    fn request(&self, op: Op, object: Object, second: Option<Object>) -> Request {
        Request {
            notif_id: self.notif.id,
            pid: self.status.tgid,
            tid: self.notif.pid,
            uid: self.status.fsuid,
            gid: self.status.fsgid,
            op,
            object,
            second,
        }
    }

    pub async fn ask(
        &self,
        decider: &Arc<dyn Decide>,
        op: Op,
        object: Object,
        second: Option<Object>,
    ) -> Result<(Request, Decision), Stop> {
        let req = self.request(op, object, second);
        // Polled in place (an immediate verdict costs no task); a panic,
        // here or in the future, is a failure (EPERM), never an unanswered
        // notification. The future is dropped with its handler, so no
        // decider outlives its caller.
        let deciding = catch_unwind(AssertUnwindSafe(|| decider.decide(req)))
            .map_err(|_| Failure::DeciderPanicked)?;
        let (req, decision) = CatchUnwind(deciding)
            .await
            .map_err(|()| Failure::DeciderPanicked)?;
        // A call whose thread was SIGKILLed meanwhile must not take effect
        // later.
        self.validate()?;
        Ok((req, decision))
    }
}

/// Tells the decider what an allowed call did.
pub(super) fn performed(decider: &Arc<dyn Decide>, req: &Request, result: Result<(), i32>) {
    if catch_unwind(AssertUnwindSafe(|| decider.performed(req, result))).is_err() {
        error!(path = %req.object.path, "the decider panicked in performed()");
    }
}

/// An absolute real path, or the failure that it is not.
pub(super) fn absolute(path: &[u8]) -> Result<(), Stop> {
    if path.starts_with(b"/") {
        Ok(())
    } else {
        Err(Failure::NotAbsolute(String::from_utf8_lossy(path).into_owned()).into())
    }
}

/// A future whose panic becomes `Err(())`.
pub(super) struct CatchUnwind<F>(pub(super) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}
