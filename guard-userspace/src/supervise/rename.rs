//! rename, renameat, renameat2 and link, linkat. Both sides are resolved
//! as for a deletion (the parent held open as the caller, its real path
//! judged); the call is performed on those held directories, as the
//! caller, after checking they still have the approved paths.
use std::{ffi::CString, io, os::fd::AsRawFd as _, sync::Arc};

use guard_common::{RENAME_EXCHANGE, RENAME_NOREPLACE};
use tracing::{debug, warn};

use super::{
    Decide, Decision, Object, Op,
    calls::Call,
    delete::{Entry, entry},
    identity::run_as_creating_nothing,
    ops::{self, last_errno},
    path,
    supervisor::{Answer, Caller, Failure, Stop, absolute, io_failure, performed},
};

/// RENAME_WHITEOUT (include/uapi/linux/fs.h).
const RENAME_WHITEOUT: u32 = 4;
/// CAP_DAC_READ_SEARCH: what linkat's AT_EMPTY_PATH needs.
const CAP_DAC_READ_SEARCH: u64 = 1 << 2;
/// A rename whose destination appears between judging and acting is
/// judged again; more races than this in a row are refused.
const ATTEMPTS: u32 = 3;

pub(super) async fn rename_or_link(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    call: Call,
) -> Result<Answer, Stop> {
    for _ in 0..ATTEMPTS {
        let attempt = match call {
            Call::Rename {
                old_dirfd,
                old,
                new_dirfd,
                new,
                flags,
            } => rename(caller, decider, (old_dirfd, old), (new_dirfd, new), flags).await?,
            Call::Link {
                old_dirfd,
                old,
                new_dirfd,
                new,
                flags,
            } => link(caller, decider, (old_dirfd, old), (new_dirfd, new), flags).await?,
            _ => return Err(Stop::Errno(libc::EINVAL)),
        };
        if let Some(answer) = attempt {
            return Ok(answer);
        }
    }
    Err(Failure::Unstable(ATTEMPTS).into())
}

fn object(e: &Entry, exists: bool, dir: bool) -> Object {
    Object {
        path: e.path.clone(),
        raw_path: e.raw_path.clone(),
        exists,
        dir,
    }
}

/// One attempt; None if the destination appeared meanwhile (judge again).
async fn rename(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    (old_dirfd, old): (i32, u64),
    (new_dirfd, new): (i32, u64),
    flags: u32,
) -> Result<Option<Answer>, Stop> {
    let exchange = flags & RENAME_EXCHANGE != 0;
    let known = RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT;
    if flags & !known != 0 || (exchange && flags & (RENAME_NOREPLACE | RENAME_WHITEOUT) != 0) {
        return Err(Stop::Errno(libc::EINVAL));
    }
    let raw_old = caller.read_path(old, false)?;
    let raw_new = caller.read_path(new, false)?;
    let base_old = caller.base(old_dirfd, &raw_old)?;
    let base_new = caller.base(new_dirfd, &raw_new)?;
    caller.validate()?;
    let src = entry(caller, base_old, &raw_old, |l| {
        path::rename_name(l, libc::EBUSY)
    })
    .await?;
    let busy = if flags & RENAME_NOREPLACE != 0 {
        libc::EEXIST
    } else {
        libc::EBUSY
    };
    let dst = entry(caller, base_new, &raw_new, |l| path::rename_name(l, busy)).await?;

    // What the kernel would refuse without deciding anything.
    let src_dir = ops::entry_kind(&src.held.dir, &src.name).map_err(Stop::Errno)?;
    let dst_kind = match ops::entry_kind(&dst.held.dir, &dst.name) {
        Ok(dir) => Some(dir),
        Err(libc::ENOENT) => None,
        Err(errno) => return Err(Stop::Errno(errno)),
    };
    if exchange && dst_kind.is_none() {
        return Err(Stop::Errno(libc::ENOENT));
    }
    if flags & RENAME_NOREPLACE != 0 && dst_kind.is_some() {
        return Err(Stop::Errno(libc::EEXIST));
    }
    if !src_dir && (src.trailing_slash || dst.trailing_slash) {
        return Err(Stop::Errno(libc::ENOTDIR));
    }

    let (req, decision) = caller
        .ask(
            decider,
            Op::Rename { exchange },
            object(&src, true, src_dir),
            Some(object(&dst, dst_kind.is_some(), dst_kind == Some(true))),
        )
        .await?;
    if decision == Decision::Deny {
        debug!(path = %req.object.path, "rename denied");
        return Err(Stop::Errno(libc::EPERM));
    }
    // A destination judged absent must still be absent when it is renamed
    // onto: RENAME_NOREPLACE makes the kernel check it atomically.
    let added_noreplace = dst_kind.is_none() && !exchange && flags & RENAME_NOREPLACE == 0;
    let act_flags = if added_noreplace {
        flags | RENAME_NOREPLACE
    } else {
        flags
    };
    let host = caller.host.clone();
    let (s, d) = (src.held.clone(), dst.held.clone());
    let (sn, dn) = (src.name.clone(), dst.name.clone());
    let acted = run_as_creating_nothing(
        caller.identity.clone(),
        &caller.host.own,
        move || -> io::Result<Result<(), i32>> {
            if ops::moved(&host, &s)?.is_some() || ops::moved(&host, &d)?.is_some() {
                return Ok(Err(libc::EPERM));
            }
            // SAFETY: renameat2 on live dirfds and NUL-terminated names.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    s.dir.as_raw_fd(),
                    sn.as_ptr(),
                    d.dir.as_raw_fd(),
                    dn.as_ptr(),
                    act_flags,
                )
            };
            Ok(if rc == 0 { Ok(()) } else { Err(last_errno()) })
        },
    )
    .await
    .map_err(io_failure("running the rename thread"))?
    .map_err(io_failure("re-reading the parent directories' paths"))?;
    if acted == Err(libc::EEXIST) && added_noreplace {
        warn!(path = %req.second.as_ref().map_or("", |o| o.path.as_str()), "the rename's destination appeared after it was judged; judging again");
        return Ok(None);
    }
    performed(decider, &req, acted);
    Ok(Some(Answer::Done(acted)))
}

/// N of "/proc/self/fd/N" or "/proc/thread-self/fd/N".
fn own_fd(raw: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(raw).ok()?;
    let n = text
        .strip_prefix("/proc/self/fd/")
        .or_else(|| text.strip_prefix("/proc/thread-self/fd/"))?;
    n.parse().ok()
}

/// The file a link names: its entry (no flags), or, with
/// AT_SYMLINK_FOLLOW or AT_EMPTY_PATH, the object itself, held open.
enum Source {
    Entry(Entry),
    Object {
        fd: std::os::fd::OwnedFd,
        path: Vec<u8>,
        raw: String,
    },
}

async fn link(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    (old_dirfd, old): (i32, u64),
    (new_dirfd, new): (i32, u64),
    flags: i32,
) -> Result<Option<Answer>, Stop> {
    if flags & !(libc::AT_SYMLINK_FOLLOW | libc::AT_EMPTY_PATH) != 0 {
        return Err(Stop::Errno(libc::EINVAL));
    }
    let empty_ok = flags & libc::AT_EMPTY_PATH != 0;
    let raw_old = caller.read_path(old, empty_ok)?;
    let raw_new = caller.read_path(new, false)?;
    let base_new = caller.base(new_dirfd, &raw_new)?;
    let source = if raw_old.is_empty() {
        // linkat(fd, "", ..., AT_EMPTY_PATH): the open file itself.
        if caller.status.cap_eff & CAP_DAC_READ_SEARCH == 0 {
            return Err(Stop::Errno(libc::ENOENT));
        }
        let fd = caller.fd(old_dirfd)?;
        caller.validate()?;
        let path = ops::fd_path(caller.host, fd.as_raw_fd())
            .map_err(io_failure("reading the linked file's real path"))?;
        Source::Object {
            fd,
            path,
            raw: String::new(),
        }
    } else if flags & libc::AT_SYMLINK_FOLLOW != 0 {
        let base = caller.base(old_dirfd, &raw_old)?;
        caller.validate()?;
        let name = CString::new(raw_old.clone())
            .map_err(|e| io_failure("link source")(io::Error::other(e)))?;
        let host = caller.host.clone();
        let opened =
            run_as_creating_nothing(caller.identity.clone(), &caller.host.own, move || {
                let fd = ops::open_as(base.as_ref(), &name, libc::O_PATH as u64, 0, 0)?;
                let path = ops::fd_path(&host, fd.as_raw_fd())
                    .map_err(|e| e.raw_os_error().unwrap_or(libc::EPERM))?;
                Ok::<_, i32>((fd, path))
            })
            .await
            .map_err(io_failure("running the open thread"))?;
        let (fd, path) = match (opened, own_fd(&raw_old)) {
            (Ok(found), _) => found,
            // "/proc/self/fd/N", the way an O_TMPFILE file gets its name:
            // a magic link the supervisor resolves as the caller's fd N.
            (Err(libc::ELOOP), Some(n)) => {
                let fd = caller.fd(n)?;
                caller.validate()?;
                let path = ops::fd_path(caller.host, fd.as_raw_fd())
                    .map_err(io_failure("reading the linked file's real path"))?;
                (fd, path)
            }
            (Err(errno), _) => return Err(Stop::Errno(errno)),
        };
        Source::Object {
            fd,
            path,
            raw: String::from_utf8_lossy(&raw_old).into_owned(),
        }
    } else {
        let base = caller.base(old_dirfd, &raw_old)?;
        caller.validate()?;
        let e = entry(caller, base, &raw_old, |l| {
            path::rename_name(l, libc::EPERM)
        })
        .await?;
        ops::entry_kind(&e.held.dir, &e.name).map_err(Stop::Errno)?;
        Source::Entry(e)
    };
    let dst = entry(caller, base_new, &raw_new, |l| {
        path::rename_name(l, libc::EEXIST)
    })
    .await?;
    match ops::entry_kind(&dst.held.dir, &dst.name) {
        Ok(_) => return Err(Stop::Errno(libc::EEXIST)),
        Err(libc::ENOENT) => {}
        Err(errno) => return Err(Stop::Errno(errno)),
    }
    let src_object = match &source {
        Source::Entry(e) => object(e, true, false),
        Source::Object { path, raw, .. } => {
            absolute(path)?;
            Object {
                path: String::from_utf8_lossy(path).into_owned(),
                raw_path: raw.clone(),
                exists: true,
                dir: false,
            }
        }
    };
    let (req, decision) = caller
        .ask(
            decider,
            Op::Link,
            src_object,
            Some(object(&dst, false, false)),
        )
        .await?;
    if decision == Decision::Deny {
        debug!(path = %req.object.path, "link denied");
        return Err(Stop::Errno(libc::EPERM));
    }
    let host = caller.host.clone();
    let (d, dn) = (dst.held.clone(), dst.name.clone());
    let acted = run_as_creating_nothing(
        caller.identity.clone(),
        &caller.host.own,
        move || -> io::Result<Result<(), i32>> {
            if ops::moved(&host, &d)?.is_some() {
                return Ok(Err(libc::EPERM));
            }
            // SAFETY (both arms): linkat on live fds and NUL-terminated names.
            let rc = match &source {
                Source::Entry(e) => {
                    if ops::moved(&host, &e.held)?.is_some() {
                        return Ok(Err(libc::EPERM));
                    }
                    unsafe {
                        libc::linkat(
                            e.held.dir.as_raw_fd(),
                            e.name.as_ptr(),
                            d.dir.as_raw_fd(),
                            dn.as_ptr(),
                            0,
                        )
                    }
                }
                Source::Object { fd, .. } => {
                    // Through /proc/self/fd/N: exactly the file judged.
                    let n = CString::new(fd.as_raw_fd().to_string()).map_err(io::Error::other)?;
                    unsafe {
                        libc::linkat(
                            host.proc_fd.as_raw_fd(),
                            n.as_ptr(),
                            d.dir.as_raw_fd(),
                            dn.as_ptr(),
                            libc::AT_SYMLINK_FOLLOW,
                        )
                    }
                }
            };
            Ok(if rc == 0 { Ok(()) } else { Err(last_errno()) })
        },
    )
    .await
    .map_err(io_failure("running the link thread"))?
    .map_err(io_failure("re-reading the parent directories' paths"))?;
    performed(decider, &req, acted);
    Ok(Some(Answer::Done(acted)))
}
