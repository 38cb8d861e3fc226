//! truncate, ftruncate, and the opens the filter lets through because they
//! truncate (open/openat/creat with O_TRUNC), plus every openat2.
//!
//! The object is opened as the caller (O_PATH, nothing done to it yet),
//! its real path judged, and the truncation performed on exactly that
//! inode: an O_TRUNC open is redone through `/proc/self/fd/N` of the O_PATH
//! handle with the caller's flags, and the resulting fd installed in the
//! caller. A file that does not exist yet has nothing to truncate: it is
//! created in its parent, held as the caller (O_EXCL, so an object that
//! appears meanwhile is judged again; an O_CREAT through a dangling
//! symlink, which O_EXCL never follows, is therefore refused). What the
//! daemon opens or creates is outside the run's own restrictions
//! (Landlock), so every open is judged at least against the guard's files,
//! and nothing on a cgroup filesystem is opened to be changed (see
//! `ops::on_cgroupfs`).
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, OwnedFd},
    sync::Arc,
};

use guard_common::{O_CREAT, O_EXCL, O_PATH, O_TRUNC};
use tracing::debug;

use super::{
    Decide, Decision, Object, Op,
    calls::Call,
    delete::entry,
    identity::run_as,
    ops::{self, last_errno},
    path,
    supervisor::{Answer, Caller, Failure, Stop, absolute, io_failure, performed},
    target::stat_fd,
};

/// How many times an object that appears or changes between the lookup and
/// the open is looked up again before the call is refused.
const ATTEMPTS: u32 = 3;
/// `sizeof(struct open_how)` in its first version (flags, mode, resolve).
const OPEN_HOW_SIZE_VER0: u64 = 24;
/// open(2) ignores unknown flags; openat2, which the supervisor uses to
/// perform it, refuses them: keep only what open(2) would.
const VALID_OPEN_FLAGS: u32 = (libc::O_ACCMODE
    | libc::O_CREAT
    | libc::O_EXCL
    | libc::O_NOCTTY
    | libc::O_TRUNC
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_SYNC
    | libc::O_DSYNC
    | libc::O_ASYNC
    | libc::O_DIRECT
    | libc::O_LARGEFILE
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_NOATIME
    | libc::O_CLOEXEC
    | libc::O_PATH
    | libc::O_TMPFILE) as u32;
/// What O_PATH keeps of the other flags (fs/open.c: O_PATH_FLAGS).
const O_PATH_FLAGS: u32 =
    (libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_PATH | libc::O_CLOEXEC) as u32;

pub(super) async fn truncate(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    call: Call,
) -> Result<Answer, Stop> {
    match call {
        Call::Truncate { path, length } => by_path(caller, decider, path, length).await,
        Call::Ftruncate { fd, length } => by_fd(caller, decider, fd, length).await,
        Call::Open {
            dirfd,
            path,
            flags,
            mode,
            how,
        } => {
            let how = match how {
                Some((addr, size)) => read_how(caller, addr, size)?,
                // As open(2) builds it (fs/open.c: build_open_how).
                None => {
                    let flags = if flags & O_PATH != 0 {
                        flags & O_PATH_FLAGS
                    } else {
                        flags & VALID_OPEN_FLAGS
                    };
                    let creates = flags & (O_CREAT | libc::O_TMPFILE as u32) != 0;
                    let mode = if creates { mode & 0o7777 } else { 0 };
                    (u64::from(flags), u64::from(mode), 0)
                }
            };
            open(caller, decider, dirfd, path, how).await
        }
        _ => Err(Stop::Errno(libc::EINVAL)),
    }
}

/// Reads openat2's `struct open_how` as the kernel's copy_struct_from_user
/// does: at least the first version, any bytes past it zero.
fn read_how(caller: &Caller<'_>, addr: u64, size: u64) -> Result<(u64, u64, u64), Stop> {
    if size < OPEN_HOW_SIZE_VER0 {
        return Err(Stop::Errno(libc::EINVAL));
    }
    if size > 4096 {
        return Err(Stop::Errno(libc::E2BIG));
    }
    let bytes = caller
        .target
        .read_bytes(addr, size as usize)
        .map_err(|e| match e {
            super::target::ReadError::Errno(errno) => Stop::Errno(errno),
            super::target::ReadError::Gone => Stop::Gone,
            super::target::ReadError::Io(e) => io_failure("reading struct open_how")(e),
        })?;
    if bytes[OPEN_HOW_SIZE_VER0 as usize..].iter().any(|b| *b != 0) {
        return Err(Stop::Errno(libc::E2BIG));
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w)
    };
    Ok((word(0), word(1), word(2)))
}

fn cstring(raw: &[u8]) -> Result<CString, Stop> {
    CString::new(raw.to_vec()).map_err(|e| io_failure("path")(io::Error::other(e)))
}

/// The judged object's request fields.
fn object(path: &[u8], raw: &[u8]) -> Result<Object, Stop> {
    absolute(path)?;
    Ok(Object {
        path: String::from_utf8_lossy(path).into_owned(),
        raw_path: String::from_utf8_lossy(raw).into_owned(),
        exists: true,
        dir: false,
    })
}

/// Asks about truncating the file at real path `path`; Err(EPERM) if denied.
async fn judge(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    path: &[u8],
    raw: &[u8],
) -> Result<super::Request, Stop> {
    let (req, decision) = caller
        .ask(decider, Op::Truncate, object(path, raw)?, None)
        .await?;
    if decision == Decision::Deny {
        debug!(path = %req.object.path, "truncation denied");
        return Err(Stop::Errno(libc::EPERM));
    }
    Ok(req)
}

/// `openat(proc_fd, "N", flags)`: reopens exactly the inode our fd N holds.
fn reopen(host: &super::target::Host, fd: &OwnedFd, flags: u32) -> Result<OwnedFd, i32> {
    let n = CString::new(fd.as_raw_fd().to_string()).map_err(|_| libc::EINVAL)?;
    super::target::open_at(host.proc_fd.as_raw_fd(), &n, flags as i32)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EPERM))
}

async fn by_path(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    addr: u64,
    length: i64,
) -> Result<Answer, Stop> {
    if length < 0 {
        return Err(Stop::Errno(libc::EINVAL));
    }
    let raw = caller.read_path(addr, false)?;
    let base = caller.base(guard_common::AT_FDCWD, &raw)?;
    caller.validate()?;
    let name = cstring(&raw)?;
    let host = caller.host.clone();
    let found = run_as(caller.identity.clone(), move || {
        let fd = ops::open_as(base.as_ref(), &name, u64::from(O_PATH), 0, 0)?;
        let st = stat_fd(&fd).map_err(|e| e.raw_os_error().unwrap_or(libc::EPERM))?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(libc::EISDIR),
            _ => return Err(libc::EINVAL),
        }
        let path = ops::fd_path(&host, fd.as_raw_fd()).map_err(|_| libc::EPERM)?;
        let on_cgroupfs = ops::on_cgroupfs(&fd).map_err(|_| libc::EPERM)?;
        Ok((fd, path, on_cgroupfs))
    })
    .await
    .map_err(io_failure("running the open thread"))?
    .map_err(Stop::Errno)?;
    let (fd, path) = match found {
        (_, path, true) => return Err(Stop::Cgroup(path)),
        (fd, path, false) => (fd, path),
    };
    let req = judge(caller, decider, &path, &raw).await?;
    let host = caller.host.clone();
    let result = run_as(caller.identity.clone(), move || {
        // Opening for write checks what truncate(2) checks (write access,
        // append-only, ETXTBSY), as the caller.
        ftruncate(
            &reopen(&host, &fd, (libc::O_WRONLY | libc::O_CLOEXEC) as u32)?,
            length,
        )
    })
    .await
    .map_err(io_failure("running the truncate thread"))?;
    performed(decider, &req, result);
    Ok(Answer::Done(result))
}

async fn by_fd(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    fd: i32,
    length: i64,
) -> Result<Answer, Stop> {
    if length < 0 {
        return Err(Stop::Errno(libc::EINVAL));
    }
    // The caller's own open file (its mode decides, as in the kernel).
    let file = caller.file(fd)?;
    caller.validate()?;
    let st = stat_fd(&file).map_err(io_failure("inspecting the caller's fd"))?;
    // SAFETY: fcntl F_GETFL on a descriptor we own.
    let fl = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    let writable = fl >= 0 && fl & libc::O_ACCMODE != libc::O_RDONLY;
    let judged = if st.st_mode & libc::S_IFMT == libc::S_IFREG && writable {
        let path = ops::fd_path(caller.host, file.as_raw_fd())
            .map_err(io_failure("reading the file's real path"))?;
        Some(judge(caller, decider, &path, &[]).await?)
    } else {
        // Nothing can be truncated: the kernel's own errno, unasked.
        None
    };
    let result = run_as(caller.identity.clone(), move || ftruncate(&file, length))
        .await
        .map_err(io_failure("running the truncate thread"))?;
    if let Some(req) = &judged {
        performed(decider, req, result);
    }
    Ok(Answer::Done(result))
}

fn ftruncate(file: &OwnedFd, length: i64) -> Result<(), i32> {
    // SAFETY: ftruncate on a descriptor we own.
    if unsafe { libc::ftruncate(file.as_raw_fd(), length) } == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// An open to perform as the caller: (flags, mode, resolve) as openat2
/// takes them. Done outside the run's own restrictions (Landlock), so every
/// object opened or created is put to the decider: a truncation against the
/// policy, anything else against the guard's own files only (`Op::Open`,
/// which reports nothing unless refused).
async fn open(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    dirfd: i32,
    addr: u64,
    (flags, mode, resolve): (u64, u64, u64),
) -> Result<Answer, Stop> {
    let raw = caller.read_path(addr, false)?;
    let base = Arc::new(caller.base(dirfd, &raw)?);
    caller.validate()?;
    let cloexec = flags & libc::O_CLOEXEC as u64 != 0;
    let name = cstring(&raw)?;
    for _ in 0..ATTEMPTS {
        let (b, n, host) = (base.clone(), name.clone(), caller.host.clone());
        let found = run_as(caller.identity.clone(), move || {
            find(&host, b.as_ref().as_ref(), &n, flags, resolve)
        })
        .await
        .map_err(io_failure("running the open thread"))?
        .map_err(Stop::Errno)?;
        let answer = match found {
            Found::Existing { held, path, kind } => {
                opened(caller, decider, held, (&path, &raw), kind, flags).await?
            }
            Found::Missing => create(caller, decider, &base, &raw, flags, mode).await?,
            Found::Cgroup(path) => return Err(Stop::Cgroup(path)),
        };
        if let Some(file) = answer {
            return Ok(Answer::Fd { file, cloexec });
        }
    }
    Err(Failure::Unstable(ATTEMPTS).into())
}

/// What the lookup found, as O_PATH (nothing opened or created yet).
enum Found {
    Existing {
        held: OwnedFd,
        path: Vec<u8>,
        kind: Kind,
    },
    /// Not there, and the call may create it.
    Missing,
    /// On a cgroup filesystem, opened to change it: refused.
    Cgroup(Vec<u8>),
}

/// Whether an open changes what it opens: for writing, or truncating
/// (O_PATH opens nothing).
fn writes(flags: u64) -> bool {
    let flags = flags as i32;
    flags & libc::O_PATH == 0
        && (flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A regular file: O_TRUNC would truncate it.
    Regular,
    /// A symlink (only with O_NOFOLLOW).
    Symlink,
    Other,
}

/// On the identity thread: the object an open of `name` names, as the
/// caller's lookup finds it (its O_NOFOLLOW, O_DIRECTORY and resolve flags).
fn find(
    host: &super::target::Host,
    base: Option<&OwnedFd>,
    name: &CString,
    flags: u64,
    resolve: u64,
) -> Result<Found, i32> {
    let lookup = u64::from(O_PATH) | (flags & (libc::O_NOFOLLOW | libc::O_DIRECTORY) as u64);
    match ops::open_as(base, name, lookup, 0, resolve) {
        Ok(held) => {
            if flags & u64::from(O_CREAT | O_EXCL) == u64::from(O_CREAT | O_EXCL) {
                return Err(libc::EEXIST);
            }
            let st = stat_fd(&held).map_err(|e| e.raw_os_error().unwrap_or(libc::EPERM))?;
            let kind = match st.st_mode & libc::S_IFMT {
                libc::S_IFREG => Kind::Regular,
                libc::S_IFLNK => Kind::Symlink,
                _ => Kind::Other,
            };
            let path = ops::fd_path(host, held.as_raw_fd()).map_err(|_| libc::EPERM)?;
            let on_cgroupfs = ops::on_cgroupfs(&held).map_err(|_| libc::EPERM)?;
            if on_cgroupfs && writes(flags) {
                return Ok(Found::Cgroup(path));
            }
            Ok(Found::Existing { held, path, kind })
        }
        Err(libc::ENOENT) if flags & u64::from(O_CREAT) != 0 => Ok(Found::Missing),
        Err(errno) => Err(errno),
    }
}

/// An existing object: judged (a truncation by the policy, anything else
/// against the guard's files), then opened through its O_PATH handle with
/// the caller's flags, so what was judged is what is opened.
async fn opened(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    held: OwnedFd,
    (path, raw): (&[u8], &[u8]),
    kind: Kind,
    flags: u64,
) -> Result<Option<OwnedFd>, Stop> {
    let o_path = flags & u64::from(O_PATH) != 0;
    let truncates = kind == Kind::Regular && flags & u64::from(O_TRUNC) != 0 && !o_path;
    let req = if truncates {
        judge(caller, decider, path, raw).await?
    } else {
        let (req, decision) = caller
            .ask(decider, Op::Open, object(path, raw)?, None)
            .await?;
        if decision == Decision::Deny {
            return Err(Stop::Errno(libc::EACCES));
        }
        req
    };
    if o_path {
        // The lookup's own handle is what O_PATH asked for.
        return Ok(Some(held));
    }
    if kind == Kind::Symlink {
        return Err(Stop::Errno(libc::ELOOP));
    }
    let keep = !u64::from(O_CREAT | O_EXCL) & !(libc::O_NOFOLLOW as u64);
    let reflags = (flags & keep) as u32 | libc::O_CLOEXEC as u32;
    let host = caller.host.clone();
    let reopened = run_as(caller.identity.clone(), move || {
        reopen(&host, &held, reflags)
    })
    .await
    .map_err(io_failure("running the open thread"))?;
    if truncates {
        performed(decider, &req, reopened.as_ref().map(|_| ()).map_err(|e| *e));
    }
    reopened.map(Some).map_err(Stop::Errno)
}

/// A file to create: its parent is opened as the caller and its real path
/// judged against the guard's files, then the file is made there with
/// O_EXCL (so nothing that appears meanwhile is truncated unjudged: that
/// is looked up again). None: it appeared; look again.
async fn create(
    caller: &Caller<'_>,
    decider: &Arc<dyn Decide>,
    base: &Arc<Option<OwnedFd>>,
    raw: &[u8],
    flags: u64,
    mode: u64,
) -> Result<Option<OwnedFd>, Stop> {
    let base = base.as_ref().as_ref().map(|b| b.try_clone()).transpose();
    let base = base.map_err(io_failure("duplicating the base directory"))?;
    let e = entry(caller, base, raw, |l| path::rename_name(l, libc::EISDIR)).await?;
    let (_, decision) = caller
        .ask(
            decider,
            Op::Open,
            Object {
                path: e.path.clone(),
                raw_path: e.raw_path.clone(),
                exists: false,
                dir: false,
            },
            None,
        )
        .await?;
    if decision == Decision::Deny {
        return Err(Stop::Errno(libc::EACCES));
    }
    let cflags = (flags & !u64::from(O_TRUNC)) | u64::from(O_EXCL);
    let created = run_as(caller.identity.clone(), move || {
        ops::open_as(Some(&e.held.dir), &e.name, cflags, mode, 0)
    })
    .await
    .map_err(io_failure("running the open thread"))?;
    match created {
        Ok(file) => Ok(Some(file)),
        // It appeared (or is a dangling symlink, which O_EXCL never
        // follows): look it up again.
        Err(libc::EEXIST) if flags & u64::from(O_EXCL) == 0 => Ok(None),
        Err(errno) => Err(Stop::Errno(errno)),
    }
}
