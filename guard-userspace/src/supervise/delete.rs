//! unlink, unlinkat and rmdir: steps 2–5 of the module docs.
use std::{ffi::CString, io, sync::Arc};

use tracing::{debug, warn};

use super::{
    Decide, Decision, Object, Op,
    identity::run_as_creating_nothing,
    ops::{self, Acted, OpenError},
    path::{self, Last},
    supervisor::{Answer, Caller, Stop, absolute, io_failure, performed},
};

/// The parent directory of the entry a path names, opened as the caller,
/// with the entry's name and its absolute path as the caller sees it.
pub(super) struct Entry {
    pub held: Arc<ops::Held>,
    pub name: CString,
    pub path: String,
    pub raw_path: String,
    /// The path ended in '/' after a normal final component.
    pub trailing_slash: bool,
}

/// Opens the parent of `raw` (relative to `base`) as the caller and names
/// the entry. `last` maps a final component that is not a name ("."
/// "..", "/") to the errno the kernel gives for this call.
pub(super) async fn entry(
    caller: &Caller<'_>,
    base: Option<std::os::fd::OwnedFd>,
    raw: &[u8],
    last: impl FnOnce(&Last<'_>) -> Result<(), i32>,
) -> Result<Entry, Stop> {
    let split = path::split(raw).ok_or(Stop::Errno(libc::ENOENT))?;
    let parent = CString::new(if split.parent.is_empty() {
        b"."
    } else {
        split.parent
    })
    .map_err(|e| io_failure("parent path")(io::Error::other(e)))?;
    let host = caller.host.clone();
    let held = run_as_creating_nothing(caller.identity.clone(), &caller.host.own, move || {
        ops::open_parent(base.as_ref(), &parent, &host)
    })
    .await
    .map_err(io_failure("running the open thread"))?
    .map_err(|e| match e {
        OpenError::Errno(errno) => Stop::Errno(errno),
        OpenError::Io(e) => io_failure("reading the parent directory's real path")(e),
        OpenError::Cgroup(path) => Stop::Cgroup(path),
    })?;
    absolute(&held.path)?;
    last(&split.last).map_err(Stop::Errno)?;
    let Last::Name(name) = split.last else {
        // `last` answered every other kind.
        return Err(Stop::Errno(libc::EINVAL));
    };
    if name.len() > path::NAME_MAX {
        return Err(Stop::Errno(libc::ENAMETOOLONG));
    }
    let path = String::from_utf8_lossy(&path::join(&held.path, name)).into_owned();
    let name =
        CString::new(name).map_err(|e| io_failure("final component")(io::Error::other(e)))?;
    Ok(Entry {
        held: Arc::new(held),
        name,
        path,
        raw_path: String::from_utf8_lossy(raw).into_owned(),
        trailing_slash: split.trailing_slash && !matches!(split.last, Last::Root),
    })
}

pub(super) async fn delete(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    op: Op,
    dirfd: i32,
    path_addr: u64,
) -> Result<Answer, Stop> {
    // Steps 1–2: the path, and the directory it is relative to.
    let raw = caller.read_path(path_addr, false)?;
    let base = caller.base(dirfd, &raw)?;
    caller.validate()?;

    // Step 3: open the parent as the caller, and read its real path.
    let e = entry(caller, base, &raw, |last| {
        path::final_name(last, op).map(|_| ())
    })
    .await?;

    // Deletions that cannot happen get the kernel's errno, unasked.
    let (held, name, trailing) = (e.held.clone(), e.name.clone(), e.trailing_slash);
    let is_dir = if caller.identity.is(&caller.host.own) {
        // On the supervisor thread (the fast path): one lookup, no hop.
        ops::preflight(&held.dir, &name, op, trailing)
    } else {
        tokio::task::spawn_blocking(move || ops::preflight(&held.dir, &name, op, trailing))
            .await
            .map_err(|e| io_failure("pre-flight lookup")(io::Error::other(e)))?
    }
    .map_err(Stop::Errno)?;

    // Step 4: ask, about the path of the directory actually held.
    let object = Object {
        path: e.path.clone(),
        raw_path: e.raw_path.clone(),
        exists: true,
        dir: is_dir,
    };
    let (req, decision) = caller.ask(decider, op, object, None).await?;
    if decision == Decision::Deny {
        debug!(path = %req.object.path, "deletion denied");
        return Err(Stop::Errno(libc::EPERM));
    }

    // Step 5: act, as the caller, on the entry in the held directory.
    let host = caller.host.clone();
    let (held, name) = (e.held, e.name);
    let acted = run_as_creating_nothing(caller.identity.clone(), &caller.host.own, move || {
        ops::delete_entry(&host, &held, &name, op)
    })
    .await
    .map_err(io_failure("running the delete thread"))?
    .map_err(io_failure("re-reading the parent directory's path"))?;
    let result = match acted {
        Acted::Done(result) => result,
        Acted::Moved { now } => {
            // Not attempted: what was approved is no longer what we hold.
            warn!(path = %req.object.path, now = %String::from_utf8_lossy(&now), "deletion refused: the directory was renamed after approval");
            return Err(Stop::Errno(libc::EPERM));
        }
    };
    performed(decider, &req, result);
    Ok(Answer::Done(result))
}
