//! The supervision loop and the handling of one notification (the scheme is
//! in the module docs of `supervise`).
use std::{
    collections::HashMap,
    ffi::CString,
    io,
    os::fd::OwnedFd,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

use tokio::task::{self, JoinSet};
use tracing::{debug, error, warn};

use super::{
    Decide, Decision, DeleteOp, DeleteRequest, SuperviseError,
    filter::{self, AUDIT_ARCH_X86_64, Guarded},
    identity::{Identity, run_as},
    listener::Listener,
    ops::{self, Acted, OpenError},
    path::{self, Last},
    target::{Host, ReadError, Status, Target},
};

/// Supervises every process behind `listener` until all of them are gone
/// (then `Ok`). Each notification is handled in its own task, so a call
/// held by the decider never delays another. Dropping the returned future
/// aborts those tasks and closes this copy of the listener: if it was the
/// last copy, held and later calls fail with ENOSYS (the kernel's
/// fail-closed behaviour); if the `run` launcher keeps another, they wait
/// for a successor (see [`Resume`]).
#[cfg(test)]
pub async fn supervise(listener: OwnedFd, decider: Arc<dyn Decide>) -> Result<(), SuperviseError> {
    supervise_resuming(listener, decider, Resume::default()).await
}

/// Like [`supervise`], journaling every notification from receipt to
/// answer, and first handling `resume.received`: notifications that a
/// previous supervisor of the same listener received and never answered.
/// The kernel keeps such a call waiting as long as any copy of the listener
/// is open, and accepts the answer from whoever holds one.
pub async fn supervise_resuming(
    listener: OwnedFd,
    decider: Arc<dyn Decide>,
    resume: Resume,
) -> Result<(), SuperviseError> {
    let listener = Arc::new(Listener::new(listener).map_err(SuperviseError::Register)?);
    let host = Arc::new(Host::current().map_err(SuperviseError::Host)?);
    let journal = resume.journal;
    let mut tasks = JoinSet::new();
    // Which notification each handler answers, to fail it closed if the
    // handler panics instead of leaving its caller blocked.
    let mut pending: HashMap<task::Id, u64> = HashMap::new();
    for notif in resume.received {
        let handler = handle(listener.clone(), host.clone(), decider.clone(), notif);
        pending.insert(tasks.spawn(handler).id(), notif.id);
    }
    loop {
        tokio::select! {
            next = listener.next() => match next {
                Ok(Some(notif)) => {
                    // Recorded before anything is acted on, so that a
                    // successor can still answer it.
                    if let Some(journal) = &journal {
                        journal.received(&notif);
                    }
                    let handler = handle(listener.clone(), host.clone(), decider.clone(), notif);
                    pending.insert(tasks.spawn(handler).id(), notif.id);
                }
                Ok(None) => return Ok(()),
                Err(err) => return Err(SuperviseError::Receive(err)),
            },
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let notif_id = match done {
                    Ok((id, ())) => pending.remove(&id),
                    Err(err) => {
                        error!("a seccomp notification handler failed ({err}); denying its call");
                        let notif_id = pending.remove(&err.id());
                        if let Some(notif_id) = notif_id {
                            let _ = listener.respond(notif_id, Err(libc::EPERM));
                        }
                        notif_id
                    }
                };
                if let (Some(journal), Some(notif_id)) = (&journal, notif_id) {
                    journal.answered(notif_id);
                }
            }
        }
    }
}

/// Where a supervisor records the notifications it has received and not
/// yet answered, and what a predecessor left unanswered.
#[derive(Default)]
pub struct Resume {
    pub journal: Option<Arc<dyn Journal>>,
    /// Received by a previous supervisor of the same listener, never
    /// answered; handled first (each is re-validated: a caller that died
    /// meanwhile is dropped).
    pub received: Vec<libc::seccomp_notif>,
}

/// A record of notifications in flight, kept outside the supervisor's
/// process so that it survives it.
pub trait Journal: Send + Sync {
    /// `notif` was received; called before it is acted on.
    fn received(&self, notif: &libc::seccomp_notif);
    /// Notification `id` was answered, or its caller is gone.
    fn answered(&self, id: u64);
}

/// Why handling stopped before the deletion was performed.
enum Stop {
    /// Answer the caller with this errno (what the kernel would say, or EPERM).
    Errno(i32),
    /// The caller is gone; there is nobody to answer.
    Gone,
    /// An internal failure: the caller gets EPERM and the log gets this.
    Failed(Failure),
}

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
    #[error("the real path of the parent directory is not absolute: {0:?}")]
    NotAbsolute(String),
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Self {
        Stop::Failed(failure)
    }
}

fn io_failure(what: &'static str) -> impl FnOnce(io::Error) -> Stop {
    move |source| Stop::Failed(Failure::Io { what, source })
}

async fn handle(
    listener: Arc<Listener>,
    host: Arc<Host>,
    decider: Arc<dyn Decide>,
    notif: libc::seccomp_notif,
) {
    let tid = notif.pid;
    let answer = match process(&listener, &host, &decider, &notif).await {
        Ok(result) => result,
        Err(Stop::Errno(errno)) => Err(errno),
        Err(Stop::Gone) => {
            debug!(tid, "caller gone before its deletion was answered");
            return;
        }
        Err(Stop::Failed(failure)) => {
            error!(tid, "deletion refused after an internal error: {failure}");
            Err(libc::EPERM)
        }
    };
    if let Err(err) = listener.respond(notif.id, answer) {
        if err.raw_os_error() == Some(libc::ENOENT) {
            debug!(tid, "caller gone before its answer arrived");
        } else {
            error!(tid, "cannot answer a seccomp notification: {err}");
        }
    }
}

/// The arguments of a guarded call, decoded for either syscall table.
struct Call {
    op: DeleteOp,
    dirfd: i32,
    path_addr: u64,
}

fn decode(notif: &libc::seccomp_notif) -> Result<Call, Stop> {
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
    let (op, dirfd, path_addr) = match guarded {
        Guarded::Unlink => (DeleteOp::Unlink, libc::AT_FDCWD, ptr(0)),
        Guarded::Rmdir => (DeleteOp::Rmdir, libc::AT_FDCWD, ptr(0)),
        Guarded::Unlinkat => {
            let flags = int(2);
            if flags & !libc::AT_REMOVEDIR != 0 {
                return Err(Stop::Errno(libc::EINVAL));
            }
            let op = if flags & libc::AT_REMOVEDIR != 0 {
                DeleteOp::Rmdir
            } else {
                DeleteOp::Unlink
            };
            (op, int(0), ptr(1))
        }
    };
    Ok(Call {
        op,
        dirfd,
        path_addr,
    })
}

/// Everything learned about the caller, all read before its notification
/// was re-validated.
struct Context {
    raw: Vec<u8>,
    base: Option<OwnedFd>,
    status: Status,
    identity: Arc<Identity>,
}

/// Reads the path and the caller's context, then checks that the
/// notification is still valid, so nothing read belongs to a recycled TID.
fn gather(
    listener: &Listener,
    host: &Host,
    notif: &libc::seccomp_notif,
    call: &Call,
) -> Result<Context, Stop> {
    // A failure while the caller may have died is not an internal error if
    // it did die.
    let gone_or = |stop: Stop| {
        if listener.id_valid(notif.id) {
            stop
        } else {
            Stop::Gone
        }
    };
    let target = Target::open(notif.pid as libc::pid_t)
        .map_err(|e| gone_or(io_failure("opening /proc/TID")(e)))?;
    let raw = target.read_path(call.path_addr).map_err(|e| match e {
        ReadError::Errno(errno) => Stop::Errno(errno),
        ReadError::Gone => Stop::Gone,
        ReadError::Io(e) => gone_or(io_failure("reading the path from the caller's memory")(e)),
    })?;
    if raw.is_empty() {
        return Err(Stop::Errno(libc::ENOENT));
    }
    // An absolute path ignores the dirfd, as in the kernel.
    let base = if raw[0] == b'/' {
        None
    } else if call.dirfd == libc::AT_FDCWD {
        Some(
            target
                .cwd()
                .map_err(|e| gone_or(io_failure("opening the caller's cwd")(e)))?,
        )
    } else {
        Some(target.fd(call.dirfd).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                // Not an open fd of the caller (if the caller still exists).
                gone_or(Stop::Errno(libc::EBADF))
            } else {
                gone_or(io_failure("opening the caller's dirfd")(e))
            }
        })?)
    };
    let facts = (|| {
        Ok::<_, io::Error>((
            target.status()?,
            target.foreign_root(host)?,
            target.same_user_ns(host)?,
        ))
    })();
    let (status, root, same_user_ns) =
        facts.map_err(|e| gone_or(io_failure("reading the caller's credentials")(e)))?;
    if !listener.id_valid(notif.id) {
        return Err(Stop::Gone);
    }
    let identity = Arc::new(Identity {
        fsuid: status.fsuid,
        fsgid: status.fsgid,
        groups: status.groups.clone(),
        // Capabilities from another user namespace do not apply to ours.
        cap_mask: if same_user_ns { status.cap_eff } else { 0 },
        root,
    });
    Ok(Context {
        raw,
        base,
        status,
        identity,
    })
}

/// Steps 1–5 of the module docs; `Ok` carries the result of the deletion
/// the supervisor performed.
async fn process(
    listener: &Listener,
    host: &Arc<Host>,
    decider: &Arc<dyn Decide>,
    notif: &libc::seccomp_notif,
) -> Result<Result<(), i32>, Stop> {
    let call = decode(notif)?;
    let ctx = gather(listener, host, notif, &call)?;
    let split = path::split(&ctx.raw).ok_or(Stop::Errno(libc::ENOENT))?;

    // Step 3: open the parent as the caller, and read its real path.
    let parent = CString::new(if split.parent.is_empty() {
        b"."
    } else {
        split.parent
    })
    .map_err(|e| io_failure("parent path")(io::Error::other(e)))?;
    let (host2, base) = (host.clone(), ctx.base);
    let held = run_as(ctx.identity.clone(), move || {
        ops::open_parent(base.as_ref(), &parent, &host2)
    })
    .await
    .map_err(io_failure("running the open thread"))?
    .map_err(|e| match e {
        OpenError::Errno(errno) => Stop::Errno(errno),
        OpenError::Io(e) => io_failure("reading the parent directory's real path")(e),
    })?;
    if !held.path.starts_with(b"/") {
        return Err(Failure::NotAbsolute(String::from_utf8_lossy(&held.path).into_owned()).into());
    }
    let name = path::final_name(&split.last, call.op).map_err(Stop::Errno)?;
    let name =
        CString::new(name).map_err(|e| io_failure("final component")(io::Error::other(e)))?;

    // Deletions that cannot happen get the kernel's errno, unasked.
    let trailing_slash = split.trailing_slash && !matches!(split.last, Last::Root);
    let held = Arc::new(held);
    let (held2, name2, op) = (held.clone(), name.clone(), call.op);
    tokio::task::spawn_blocking(move || ops::preflight(&held2.dir, &name2, op, trailing_slash))
        .await
        .map_err(|e| io_failure("pre-flight lookup")(io::Error::other(e)))?
        .map_err(Stop::Errno)?;

    // Step 4: ask, about the path of the directory actually held.
    let req = DeleteRequest {
        notif_id: notif.id,
        pid: ctx.status.tgid,
        tid: notif.pid,
        uid: ctx.status.fsuid,
        gid: ctx.status.fsgid,
        op: call.op,
        path: String::from_utf8_lossy(&path::join(&held.path, name.as_bytes())).into_owned(),
        raw_path: String::from_utf8_lossy(&ctx.raw).into_owned(),
    };
    // On its own task, so a panicking decider becomes a JoinError (EPERM)
    // rather than a notification nobody answers.
    let mut deciding = AbortOnDrop(tokio::spawn(decider.decide(req)));
    let (req, decision) = (&mut deciding.0)
        .await
        .map_err(|_| Failure::DeciderPanicked)?;
    if decision == Decision::Deny {
        debug!(path = %req.path, "deletion denied");
        return Err(Stop::Errno(libc::EPERM));
    }

    // Step 5: act, as the caller, on the entry in the held directory —
    // unless the caller died while the decider thought (a SIGKILLed call
    // must not take effect later).
    if !listener.id_valid(notif.id) {
        return Err(Stop::Gone);
    }
    let host2 = host.clone();
    let acted = run_as(ctx.identity, move || {
        ops::delete_entry(&host2, &held, &name, op)
    })
    .await
    .map_err(io_failure("running the delete thread"))?
    .map_err(io_failure("re-reading the parent directory's path"))?;
    let result = match acted {
        Acted::Done(result) => result,
        Acted::Moved { now } => {
            // Not attempted: what was approved is no longer what we hold.
            warn!(path = %req.path, now = %String::from_utf8_lossy(&now), "deletion refused: the directory was renamed after approval");
            return Err(Stop::Errno(libc::EPERM));
        }
    };
    if catch_unwind(AssertUnwindSafe(|| decider.performed(&req, result))).is_err() {
        error!(path = %req.path, "the decider panicked in performed()");
    }
    Ok(result)
}

/// Aborts a spawned task when its awaiting side is dropped (the
/// notification's handler was aborted), so no decider outlives its caller.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
