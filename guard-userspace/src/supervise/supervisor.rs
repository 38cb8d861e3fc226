//! The supervision loop and the handling of one notification (the scheme is
//! in the module docs of `supervise`).
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

use tokio::task::JoinSet;
use tracing::{debug, error, warn};

use super::{
    Decide, Decision, DeleteOp, DeleteRequest, SuperviseError,
    filter::{self, AUDIT_ARCH_X86_64, Guarded},
    identity::{Identity, run_as},
    listener::Listener,
    path::{self, Last},
    target::{self, Host, ReadError, Target},
};

/// Supervises every process behind `listener` until all of them are gone
/// (then `Ok`). Each notification is handled in its own task, so a call
/// held by the decider never delays another. Dropping the returned future
/// aborts those tasks and closes the listener: held and later calls then
/// fail with ENOSYS (the kernel's fail-closed behaviour).
pub async fn supervise(listener: OwnedFd, decider: Arc<dyn Decide>) -> Result<(), SuperviseError> {
    let listener = Arc::new(Listener::new(listener).map_err(SuperviseError::Register)?);
    let host = Arc::new(Host::current().map_err(SuperviseError::Host)?);
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            next = listener.next() => match next {
                Ok(Some(notif)) => {
                    tasks.spawn(handle(listener.clone(), host.clone(), decider.clone(), notif));
                }
                Ok(None) => return Ok(()),
                Err(err) => return Err(SuperviseError::Receive(err)),
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(err) = done {
                    // A panicked task never answered: its caller stays blocked
                    // until the supervisor ends (then ENOSYS). Never "allow".
                    error!("a seccomp notification handler failed: {err}");
                }
            }
        }
    }
}

/// How handling a notification ended.
enum Flow {
    /// Answer the caller with this result.
    Answer(Result<(), i32>),
    /// The caller is gone; there is nobody to answer.
    Gone,
}

/// An internal failure: the caller gets EPERM and the log gets this.
#[derive(Debug, thiserror::Error)]
enum Failure {
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
    #[error("the directory moved to {now:?} after {approved:?} was approved")]
    Moved { approved: String, now: String },
    #[error("the real path of the parent directory is not absolute: {0:?}")]
    NotAbsolute(String),
}

fn io_failure(what: &'static str) -> impl FnOnce(io::Error) -> Failure {
    move |source| Failure::Io { what, source }
}

async fn handle(listener: Arc<Listener>, host: Arc<Host>, decider: Arc<dyn Decide>, notif: libc::seccomp_notif) {
    let answer = match process(&listener, &host, &decider, &notif).await {
        Ok(Flow::Answer(result)) => result,
        Ok(Flow::Gone) => {
            debug!(tid = notif.pid, "caller gone before its deletion was answered");
            return;
        }
        Err(failure) => {
            error!(tid = notif.pid, "seccomp supervisor denied a deletion after an internal error: {failure}");
            Err(libc::EPERM)
        }
    };
    if let Err(err) = listener.respond(notif.id, answer) {
        if err.raw_os_error() == Some(libc::ENOENT) {
            debug!(tid = notif.pid, "caller gone before its answer arrived");
        } else {
            error!(tid = notif.pid, "cannot answer a seccomp notification: {err}");
        }
    }
}

/// The arguments of a guarded call, decoded for either syscall table.
struct Call {
    op: DeleteOp,
    dirfd: i32,
    path_addr: u64,
}

fn decode(notif: &libc::seccomp_notif) -> Result<Result<Call, i32>, Failure> {
    let data = &notif.data;
    let guarded = filter::classify(data.arch, data.nr).ok_or(Failure::UnexpectedSyscall {
        arch: data.arch,
        nr: data.nr,
    })?;
    // Integer arguments are their low 32 bits, as the kernel reads them;
    // i386 pointers are 32 bits wide.
    let int = |i: usize| data.args[i] as u32 as i32;
    let ptr = |i: usize| {
        if data.arch == AUDIT_ARCH_X86_64 {
            data.args[i]
        } else {
            data.args[i] & 0xffff_ffff
        }
    };
    Ok(Ok(match guarded {
        Guarded::Unlink => Call { op: DeleteOp::Unlink, dirfd: libc::AT_FDCWD, path_addr: ptr(0) },
        Guarded::Rmdir => Call { op: DeleteOp::Rmdir, dirfd: libc::AT_FDCWD, path_addr: ptr(0) },
        Guarded::Unlinkat => {
            let flags = int(2);
            if flags & !libc::AT_REMOVEDIR != 0 {
                return Ok(Err(libc::EINVAL));
            }
            let op = if flags & libc::AT_REMOVEDIR != 0 { DeleteOp::Rmdir } else { DeleteOp::Unlink };
            Call { op, dirfd: int(0), path_addr: ptr(1) }
        }
    }))
}

/// Everything learned about the caller before its notification was
/// re-validated.
struct Context {
    raw: Vec<u8>,
    base: Option<OwnedFd>,
    status: target::Status,
    identity: Arc<Identity>,
}

/// Reads the path and the caller's context, then checks the notification
/// is still valid, so nothing read belongs to a recycled TID.
fn gather(listener: &Listener, host: &Host, notif: &libc::seccomp_notif, call: &Call) -> Result<Result<Context, Flow>, Failure> {
    let tid = notif.pid as libc::pid_t;
    // Any failure while the caller may have died is first checked against
    // the notification: a vanished caller is not an internal error.
    let gone_or = |failure: Failure| if listener.id_valid(notif.id) { Err(failure) } else { Ok(Err(Flow::Gone)) };
    let target = match Target::open(tid) {
        Ok(t) => t,
        Err(e) => return gone_or(io_failure("opening /proc/TID")(e)),
    };
    let raw = match target.read_path(call.path_addr) {
        Ok(raw) => raw,
        Err(ReadError::Errno(errno)) => return Ok(Err(Flow::Answer(Err(errno)))),
        Err(ReadError::Gone) => return Ok(Err(Flow::Gone)),
        Err(ReadError::Io(e)) => return gone_or(io_failure("reading the path from the caller's memory")(e)),
    };
    if raw.is_empty() {
        return Ok(Err(Flow::Answer(Err(libc::ENOENT))));
    }
    // An absolute path ignores the dirfd, as in the kernel.
    let base = if raw[0] == b'/' {
        None
    } else if call.dirfd == libc::AT_FDCWD {
        match target.cwd() {
            Ok(fd) => Some(fd),
            Err(e) => return gone_or(io_failure("opening the caller's cwd")(e)),
        }
    } else {
        match target.fd(call.dirfd) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && listener.id_valid(notif.id) => {
                return Ok(Err(Flow::Answer(Err(libc::EBADF))));
            }
            Err(e) => return gone_or(io_failure("opening the caller's dirfd")(e)),
        }
    };
    let facts = (|| Ok::<_, io::Error>((target.status()?, target.foreign_root(host)?, target.same_user_ns(host)?)))();
    let (status, root, same_user_ns) = match facts {
        Ok(facts) => facts,
        Err(e) => return gone_or(io_failure("reading the caller's credentials")(e)),
    };
    if !listener.id_valid(notif.id) {
        return Ok(Err(Flow::Gone));
    }
    let identity = Arc::new(Identity {
        fsuid: status.fsuid,
        fsgid: status.fsgid,
        groups: status.groups.clone(),
        // Capabilities from another user namespace do not apply to ours.
        cap_mask: if same_user_ns { status.cap_eff } else { 0 },
        root,
    });
    Ok(Ok(Context { raw, base, status, identity }))
}

async fn process(listener: &Listener, host: &Arc<Host>, decider: &Arc<dyn Decide>, notif: &libc::seccomp_notif) -> Result<Flow, Failure> {
    let call = match decode(notif)? {
        Ok(call) => call,
        Err(errno) => return Ok(Flow::Answer(Err(errno))),
    };
    let ctx = match gather(listener, host, notif, &call)? {
        Ok(ctx) => ctx,
        Err(flow) => return Ok(flow),
    };
    let Some(split) = path::split(&ctx.raw) else {
        return Ok(Flow::Answer(Err(libc::ENOENT)));
    };
    let parent = CString::new(if split.parent.is_empty() { b"." } else { split.parent })
        .map_err(|e| io_failure("parent path")(io::Error::other(e)))?;

    // Step 3: open the parent as the caller, and read its real path.
    let base = ctx.base.map(Arc::new);
    let opened = {
        let (host, base) = (host.clone(), base.clone());
        run_as(ctx.identity.clone(), move || open_parent(base.as_deref(), &parent, &host))
            .await
            .map_err(io_failure("starting the open thread"))?
    };
    let (dir, dir_path) = match opened {
        Ok(opened) => opened,
        Err(OpenError::Errno(errno)) => return Ok(Flow::Answer(Err(errno))),
        Err(OpenError::Io(e)) => return Err(io_failure("reading the parent directory's real path")(e)),
    };
    if !dir_path.starts_with(b"/") {
        return Err(Failure::NotAbsolute(String::from_utf8_lossy(&dir_path).into_owned()));
    }
    let name = match path::final_name(&split.last, call.op) {
        Ok(name) => CString::new(name).map_err(|e| io_failure("final component")(io::Error::other(e)))?,
        Err(errno) => return Ok(Flow::Answer(Err(errno))),
    };

    // Pre-flight with the daemon's identity, like the kernel's own lookup:
    // deletions that cannot happen get the kernel's errno, unasked.
    let dir = Arc::new(dir);
    let trailing_slash = split.trailing_slash && !matches!(split.last, Last::Root);
    let check = {
        let (dir, name) = (dir.clone(), name.clone());
        tokio::task::spawn_blocking(move || target::stat_at(dir.as_raw_fd(), &name, libc::AT_SYMLINK_NOFOLLOW))
            .await
            .map_err(|e| io_failure("pre-flight lstat")(io::Error::other(e)))?
    };
    let is_dir = match check {
        Ok(st) => st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        Err(e) => return Ok(Flow::Answer(Err(e.raw_os_error().unwrap_or(libc::EPERM)))),
    };
    match call.op {
        DeleteOp::Unlink if trailing_slash => return Ok(Flow::Answer(Err(path::unlink_with_trailing_slash(is_dir)))),
        DeleteOp::Unlink if is_dir => return Ok(Flow::Answer(Err(libc::EISDIR))),
        DeleteOp::Rmdir if !is_dir => return Ok(Flow::Answer(Err(libc::ENOTDIR))),
        _ => {}
    }

    // Step 4: ask, about the path of the directory actually held.
    let full = path::join(&dir_path, name.as_bytes());
    let req = DeleteRequest {
        pid: ctx.status.tgid,
        tid: notif.pid,
        uid: ctx.status.fsuid,
        gid: ctx.status.fsgid,
        op: call.op,
        path: String::from_utf8_lossy(&full).into_owned(),
        raw_path: String::from_utf8_lossy(&ctx.raw).into_owned(),
    };
    // On its own task so that a panicking decider becomes a JoinError (EPERM)
    // instead of a notification nobody answers.
    let deciding = AbortOnDrop(tokio::spawn(decider.decide(req)));
    let (req, decision) = (&mut { deciding }.0).await.map_err(|_| Failure::DeciderPanicked)?;
    if decision == Decision::Deny {
        debug!(path = %req.path, "deletion denied");
        return Ok(Flow::Answer(Err(libc::EPERM)));
    }

    // Step 5: act, as the caller, on the entry in the held directory.
    let flags = if call.op == DeleteOp::Rmdir { libc::AT_REMOVEDIR } else { 0 };
    let acted = {
        let host = host.clone();
        run_as(ctx.identity.clone(), move || {
            let now = fd_path(&host, dir.as_raw_fd())?;
            if now != dir_path {
                return Ok(Err((dir_path, now)));
            }
            // SAFETY: unlinkat on a live dirfd and a NUL-terminated name.
            let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) };
            Ok(Ok(if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EPERM)) }))
        })
        .await
        .map_err(io_failure("starting the delete thread"))?
    };
    let result = match acted {
        Ok(Ok(result)) => result,
        Ok(Err((approved, now))) => {
            let failure = Failure::Moved {
                approved: String::from_utf8_lossy(&approved).into_owned(),
                now: String::from_utf8_lossy(&now).into_owned(),
            };
            warn!("deletion refused: {failure}");
            Err(libc::EPERM)
        }
        Err(e) => return Err(io_failure("re-reading the parent directory's path")(e)),
    };
    if catch_unwind(AssertUnwindSafe(|| decider.performed(&req, result))).is_err() {
        error!(path = %req.path, "the decider panicked in performed()");
    }
    Ok(Flow::Answer(result))
}

/// Aborts a spawned task when its awaiting side is dropped (the
/// notification's task was aborted), so no decider outlives its caller.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum OpenError {
    /// The kernel would have failed the call with this errno.
    Errno(i32),
    Io(io::Error),
}

/// On the identity thread: opens the parent directory of the entry and
/// returns it with its real path (as seen from this thread's root).
fn open_parent(base: Option<&OwnedFd>, parent: &CString, host: &Host) -> Result<(OwnedFd, Vec<u8>), OpenError> {
    // SAFETY: open_how is plain old data (non_exhaustive in libc, hence
    // zeroed and filled field by field); zero means "no option".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_MAGICLINKS;
    let dirfd = base.map_or(libc::AT_FDCWD, |b| b.as_raw_fd());
    // SAFETY: openat2 with a NUL-terminated path and a live open_how of the
    // size passed; on success the fd is ours alone.
    let fd = unsafe { libc::syscall(libc::SYS_openat2, dirfd, parent.as_ptr(), &raw const how, size_of::<libc::open_how>()) };
    if fd < 0 {
        return Err(OpenError::Errno(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EPERM)));
    }
    // SAFETY: openat2 just returned this new descriptor.
    let dir = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) };
    // A removed directory keeps working as an fd but has no entries; its
    // path would read "... (deleted)". The kernel's answer is ENOENT.
    let st = target::stat_at(dir.as_raw_fd(), c"", libc::AT_EMPTY_PATH).map_err(OpenError::Io)?;
    if st.st_nlink == 0 {
        return Err(OpenError::Errno(libc::ENOENT));
    }
    let path = fd_path(host, dir.as_raw_fd()).map_err(OpenError::Io)?;
    Ok((dir, path))
}

/// The path of our fd `fd`, read through `/proc/self/fd` as opened at start
/// (it works even after this thread chrooted).
fn fd_path(host: &Host, fd: RawFd) -> io::Result<Vec<u8>> {
    let name = CString::new(fd.to_string()).map_err(io::Error::other)?;
    // d_path output is bounded by one page; one byte more detects truncation.
    let mut buf = vec![0u8; 4097];
    // SAFETY: readlinkat into a live buffer of the given length.
    let n = unsafe { libc::readlinkat(host.proc_fd.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n >= buf.len() {
        return Err(io::Error::other("directory path longer than a page"));
    }
    buf.truncate(n);
    Ok(buf)
}
