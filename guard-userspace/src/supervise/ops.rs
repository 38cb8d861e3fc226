//! The filesystem operations of one notification: opening the parent as the
//! caller, the pre-flight lookup, and the deletion itself.
use std::{
    ffi::{CStr, CString},
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use super::{
    Op, path,
    target::{Host, stat_at},
};

/// The parent directory, held open, and its real path when it was opened.
pub(super) struct Held {
    pub dir: OwnedFd,
    pub path: Vec<u8>,
}

pub(super) enum OpenError {
    /// The kernel would have failed the call with this errno.
    Errno(i32),
    Io(io::Error),
    /// It lies on a cgroup filesystem (its real path given).
    Cgroup(Vec<u8>),
}

/// `statfs.f_type` of cgroup2 and of a cgroup v1 hierarchy.
const CGROUP2_SUPER_MAGIC: libc::__fsword_t = 0x6367_7270;
const CGROUP_SUPER_MAGIC: libc::__fsword_t = 0x0027_e0eb;

/// Whether `fd` lies on a cgroup filesystem (either version), wherever it
/// is mounted. A run may only read those (its Landlock ruleset), and the
/// daemon acts outside that ruleset: it must never change one for a run,
/// or the run could leave its cgroup through a supervised open of
/// cgroup.procs, or remove another agent's cgroup.
pub(super) fn on_cgroupfs(fd: &OwnedFd) -> io::Result<bool> {
    // SAFETY: statfs is plain old data, filled by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs on a descriptor we own, into a live statfs.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let magic = st.f_type;
    Ok(magic == CGROUP2_SUPER_MAGIC || magic == CGROUP_SUPER_MAGIC)
}

pub(super) fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EPERM)
}

/// On the identity thread: `openat2(base, path, how)` with magic links
/// refused (they would resolve in the daemon's context, not the
/// caller's) on top of the caller's own `resolve` flags; the errno as the
/// kernel gives it.
pub(super) fn open_as(
    base: Option<&OwnedFd>,
    path: &CStr,
    flags: u64,
    mode: u64,
    resolve: u64,
) -> Result<OwnedFd, i32> {
    // SAFETY: open_how is plain old data (non_exhaustive in libc, hence
    // zeroed and filled field by field); zero means "no option".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags | libc::O_CLOEXEC as u64;
    how.mode = mode;
    how.resolve = resolve | libc::RESOLVE_NO_MAGICLINKS;
    let dirfd = base.map_or(libc::AT_FDCWD, |b| b.as_raw_fd());
    // SAFETY: openat2 with a NUL-terminated path and a live open_how of the
    // size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &raw const how,
            size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: openat2 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// On the identity thread: opens `parent` (relative to `base`, or to this
/// thread's root if absolute) and reads the real path of what it got.
/// Intermediate symlinks are followed as the kernel would; magic links are
/// refused (they would resolve in the daemon's context).
pub(super) fn open_parent(
    base: Option<&OwnedFd>,
    parent: &CStr,
    host: &Host,
) -> Result<Held, OpenError> {
    let dir = open_as(
        base,
        parent,
        (libc::O_PATH | libc::O_DIRECTORY) as u64,
        0,
        0,
    )
    .map_err(OpenError::Errno)?;
    // A removed directory still works as an fd but can hold no entry (its
    // path would read "... (deleted)"); the kernel answers ENOENT.
    let st = stat_at(dir.as_raw_fd(), c"", libc::AT_EMPTY_PATH).map_err(OpenError::Io)?;
    if st.st_nlink == 0 {
        return Err(OpenError::Errno(libc::ENOENT));
    }
    let path = fd_path(host, dir.as_raw_fd()).map_err(OpenError::Io)?;
    if on_cgroupfs(&dir).map_err(OpenError::Io)? {
        return Err(OpenError::Cgroup(path));
    }
    Ok(Held { dir, path })
}

/// With the daemon's identity, like the kernel's own lookup of the last
/// component (which checks no permission): the errno of a deletion that
/// cannot happen, so nobody is asked about it. Ok(whether it is a
/// directory).
pub(super) fn preflight(
    dir: &OwnedFd,
    name: &CStr,
    op: Op,
    trailing_slash: bool,
) -> Result<bool, i32> {
    let is_dir = entry_kind(dir, name)?;
    match op {
        Op::Unlink if trailing_slash => Err(path::unlink_with_trailing_slash(is_dir)),
        Op::Unlink if is_dir => Err(libc::EISDIR),
        Op::Rmdir if !is_dir => Err(libc::ENOTDIR),
        _ => Ok(is_dir),
    }
}

/// Whether entry `name` of `dir` is a directory (not following a final
/// symlink); its errno (ENOENT, ...) if it cannot be looked up.
pub(super) fn entry_kind(dir: &OwnedFd, name: &CStr) -> Result<bool, i32> {
    let st = stat_at(dir.as_raw_fd(), name, libc::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EPERM))?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// What happened on the delete thread.
pub(super) enum Acted {
    /// `unlinkat` ran; its result.
    Done(Result<(), i32>),
    /// The held directory was renamed after its path was approved.
    Moved { now: Vec<u8> },
}

/// On the identity thread: deletes `name` in the held directory, provided
/// the directory still has the path that was approved.
pub(super) fn delete_entry(host: &Host, held: &Held, name: &CString, op: Op) -> io::Result<Acted> {
    if let Some(now) = moved(host, held)? {
        return Ok(Acted::Moved { now });
    }
    let flags = if op == Op::Rmdir {
        libc::AT_REMOVEDIR
    } else {
        0
    };
    // SAFETY: unlinkat on a live dirfd and a NUL-terminated name.
    let rc = unsafe { libc::unlinkat(held.dir.as_raw_fd(), name.as_ptr(), flags) };
    Ok(Acted::Done(if rc == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }))
}

/// The held directory's path now, if it is no longer the approved one.
pub(super) fn moved(host: &Host, held: &Held) -> io::Result<Option<Vec<u8>>> {
    let now = fd_path(host, held.dir.as_raw_fd())?;
    Ok((now != held.path).then_some(now))
}

/// The path of our fd `fd`, through `/proc/self/fd` as opened at start, so
/// it also works on a thread chrooted into the caller's root (and is then
/// the path as the caller sees it).
pub(super) fn fd_path(host: &Host, fd: RawFd) -> io::Result<Vec<u8>> {
    let name = CString::new(fd.to_string()).map_err(io::Error::other)?;
    // d_path output is bounded by a page; one byte more detects truncation.
    let mut buf = vec![0u8; 4097];
    // SAFETY: readlinkat into a live buffer of the given length.
    let n = unsafe {
        libc::readlinkat(
            host.proc_fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
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
