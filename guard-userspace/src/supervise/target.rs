//! What the supervisor learns about a calling thread from `/proc` and its
//! memory, and the small system-call helpers shared by the other files.
use std::{
    ffi::{CStr, CString},
    io, mem,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

/// Largest path the kernel accepts, terminating NUL included (PATH_MAX).
const PATH_MAX: usize = 4096;
/// Reads never cross this boundary, so a string that ends just before an
/// unmapped page is still read (bigger pages are multiples of it).
const PAGE: u64 = 4096;

pub(super) fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `openat(dir, path, flags | O_CLOEXEC)`.
pub(super) fn open_at(dir: RawFd, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: openat with a NUL-terminated path; on success the new fd is
    // ours alone.
    unsafe {
        let fd = cvt(libc::openat(dir, path.as_ptr(), flags | libc::O_CLOEXEC))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// `fstatat(dir, path, flags)`.
pub(super) fn stat_at(dir: RawFd, path: &CStr, flags: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data, filled by the kernel.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: NUL-terminated path and a live out-parameter.
    cvt(unsafe { libc::fstatat(dir, path.as_ptr(), &raw mut st, flags) })?;
    Ok(st)
}

/// `fstat(fd)`.
pub(super) fn stat_fd(fd: &OwnedFd) -> io::Result<libc::stat> {
    stat_at(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

/// Identity of a file: (device, inode).
pub(super) type FileId = (u64, u64);

fn file_id(dir: RawFd, path: &CStr) -> io::Result<FileId> {
    let st = stat_at(dir, path, 0)?;
    Ok((st.st_dev, st.st_ino))
}

/// What the daemon compares a target against.
pub(super) struct Host {
    root: FileId,
    mnt_ns: FileId,
    user_ns: FileId,
    /// `/proc/self/fd`, opened while our root is still the real one, so the
    /// path of a held fd can be read from a thread chrooted elsewhere.
    pub proc_fd: OwnedFd,
    /// The daemon's identity: callers with the same need no switch.
    pub own: super::identity::Own,
}

impl Host {
    pub(super) fn current() -> io::Result<Self> {
        Ok(Self {
            root: file_id(libc::AT_FDCWD, c"/")?,
            mnt_ns: file_id(libc::AT_FDCWD, c"/proc/self/ns/mnt")?,
            user_ns: file_id(libc::AT_FDCWD, c"/proc/self/ns/user")?,
            proc_fd: open_at(
                libc::AT_FDCWD,
                c"/proc/self/fd",
                libc::O_PATH | libc::O_DIRECTORY,
            )?,
            own: super::identity::Own::current()?,
        })
    }
}

/// Why a string could not be read from the caller's memory.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The kernel would fail the call with this errno (EFAULT, ENAMETOOLONG).
    Errno(i32),
    /// The thread is gone.
    Gone,
    /// We may not read it (or another failure): an internal error.
    Io(io::Error),
}

/// Credentials of the caller, from `/proc/TID/status`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Status {
    pub tgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    pub cap_eff: u64,
    /// The file-creation mask (4.7+), applied to what is created for it.
    pub umask: u32,
}

/// Parses the lines of `/proc/PID/status` the supervisor needs; `None` if
/// one is missing or malformed.
pub(super) fn parse_status(text: &str) -> Option<Status> {
    let (mut tgid, mut fsuid, mut fsgid, mut groups, mut cap_eff) = (None, None, None, None, None);
    let mut umask = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let mut fields = value.split_whitespace();
        match key {
            "Tgid" => tgid = fields.next()?.parse().ok(),
            // Real, effective, saved, filesystem: permission checks use the last.
            "Uid" => fsuid = fields.nth(3)?.parse().ok(),
            "Gid" => fsgid = fields.nth(3)?.parse().ok(),
            "Groups" => groups = fields.map(str::parse).collect::<Result<Vec<u32>, _>>().ok(),
            "CapEff" => cap_eff = u64::from_str_radix(fields.next()?, 16).ok(),
            "Umask" => umask = u32::from_str_radix(fields.next()?, 8).ok(),
            _ => {}
        }
    }
    Some(Status {
        tgid: tgid?,
        fsuid: fsuid?,
        fsgid: fsgid?,
        groups: groups?,
        cap_eff: cap_eff?,
        umask: umask?,
    })
}

/// A calling thread, through its `/proc/TID` directory. Every lookup goes
/// through that one directory handle, which stays bound to the thread (it
/// fails rather than switching to a new owner of a recycled TID).
pub(super) struct Target {
    tid: libc::pid_t,
    dir: OwnedFd,
}

impl Target {
    pub(super) fn open(tid: libc::pid_t) -> io::Result<Self> {
        let path = CString::new(format!("/proc/{tid}")).map_err(io::Error::other)?;
        Ok(Self {
            tid,
            dir: open_at(libc::AT_FDCWD, &path, libc::O_PATH | libc::O_DIRECTORY)?,
        })
    }

    pub(super) fn status(&self) -> io::Result<Status> {
        let fd = open_at(self.dir.as_raw_fd(), c"status", libc::O_RDONLY)?;
        let text = guard_host::proc::read_small_file(std::fs::File::from(fd))?;
        parse_status(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected /proc/{}/status", self.tid),
            )
        })
    }

    /// The caller's working directory.
    pub(super) fn cwd(&self) -> io::Result<OwnedFd> {
        open_at(
            self.dir.as_raw_fd(),
            c"cwd",
            libc::O_PATH | libc::O_DIRECTORY,
        )
    }

    /// The caller's fd `n` (ENOENT if it is not open).
    pub(super) fn fd(&self, n: i32) -> io::Result<OwnedFd> {
        let name = CString::new(format!("fd/{n}")).map_err(io::Error::other)?;
        open_at(self.dir.as_raw_fd(), &name, libc::O_PATH)
    }

    /// The caller's root directory, if it differs from ours in directory or
    /// mount namespace (then paths must be resolved from inside it).
    pub(super) fn foreign_root(&self, host: &Host) -> io::Result<Option<OwnedFd>> {
        let dir = self.dir.as_raw_fd();
        // Compared through the magic link first: the common case (the
        // daemon's root) needs no fd to open and close.
        let same = file_id(dir, c"root")? == host.root && file_id(dir, c"ns/mnt")? == host.mnt_ns;
        if same {
            return Ok(None);
        }
        Ok(Some(open_at(
            dir,
            c"root",
            libc::O_PATH | libc::O_DIRECTORY,
        )?))
    }

    /// Whether the caller lives in the daemon's user namespace.
    pub(super) fn same_user_ns(&self, host: &Host) -> io::Result<bool> {
        Ok(file_id(self.dir.as_raw_fd(), c"ns/user")? == host.user_ns)
    }

    /// Reads exactly `len` bytes at `addr` in the caller's memory (EFAULT if
    /// any is unmapped).
    pub(super) fn read_bytes(&self, addr: u64, len: usize) -> Result<Vec<u8>, ReadError> {
        let mut buf = vec![0u8; len];
        let mut got = 0usize;
        while got < len {
            let at = addr
                .checked_add(got as u64)
                .ok_or(ReadError::Errno(libc::EFAULT))?;
            let chunk = ((PAGE - at % PAGE) as usize).min(len - got);
            let n = self.read_once(&mut buf[got..got + chunk], at)?;
            got += n;
        }
        Ok(buf)
    }

    /// One process_vm_readv of `buf.len()` bytes (within a page) at `at`.
    fn read_once(&self, buf: &mut [u8], at: u64) -> Result<usize, ReadError> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: the local iovec covers `buf`; the remote one is only
        // dereferenced by the kernel, in the target.
        let n = unsafe {
            libc::process_vm_readv(self.tid, &raw const local, 1, &raw const remote, 1, 0)
        };
        if n <= 0 {
            let err = io::Error::last_os_error();
            return Err(match (n, err.raw_os_error()) {
                (0, _) | (_, Some(libc::EFAULT)) => ReadError::Errno(libc::EFAULT),
                (_, Some(libc::ESRCH)) => ReadError::Gone,
                _ => ReadError::Io(err),
            });
        }
        Ok(n as usize)
    }

    /// Reads the NUL-terminated string at `addr` in the caller's memory, as
    /// the kernel's `getname` would: ENAMETOOLONG without a NUL within
    /// PATH_MAX bytes, EFAULT on unmapped memory before the NUL.
    pub(super) fn read_path(&self, addr: u64) -> Result<Vec<u8>, ReadError> {
        let mut buf = vec![0u8; PATH_MAX];
        let mut got = 0usize;
        while got < PATH_MAX {
            let at = addr
                .checked_add(got as u64)
                .ok_or(ReadError::Errno(libc::EFAULT))?;
            let chunk = ((PAGE - at % PAGE) as usize).min(PATH_MAX - got);
            let n = self.read_once(&mut buf[got..got + chunk], at)?;
            if let Some(end) = buf[got..got + n].iter().position(|&b| b == 0) {
                buf.truncate(got + end);
                return Ok(buf);
            }
            got += n;
        }
        Err(ReadError::Errno(libc::ENAMETOOLONG))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let text = "Name:\tpython3\nTgid:\t42\nPid:\t43\nUid:\t1000\t1001\t1002\t1003\n\
                    Gid:\t2000\t2001\t2002\t2003\nGroups:\t4 24 27 \nCapEff:\t000001ffffffffff\n\
                    Umask:\t0022\n";
        assert_eq!(
            parse_status(text),
            Some(Status {
                tgid: 42,
                fsuid: 1003,
                fsgid: 2003,
                groups: vec![4, 24, 27],
                cap_eff: 0x1ff_ffff_ffff,
                umask: 0o22,
            })
        );
        let no_groups = text.replace("Groups:\t4 24 27 ", "Groups:\t");
        assert_eq!(parse_status(&no_groups).map(|s| s.groups), Some(vec![]));
        assert_eq!(parse_status("Tgid:\t1\n"), None);
    }

    #[test]
    fn reads_own_memory_and_status() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let target = Target::open(tid).expect("own /proc entry");
        let s = c"/some/path";
        let got = target.read_path(s.as_ptr() as u64).expect("readable");
        assert_eq!(got, b"/some/path");
        assert!(matches!(
            target.read_path(8),
            Err(ReadError::Errno(libc::EFAULT))
        ));
        let long = vec![b'a'; PATH_MAX + 10];
        assert!(matches!(
            target.read_path(long.as_ptr() as u64),
            Err(ReadError::Errno(libc::ENAMETOOLONG))
        ));
        let status = target.status().expect("status");
        // SAFETY: getpid has no preconditions.
        assert_eq!(status.tgid, unsafe { libc::getpid() } as u32);
        let host = Host::current().expect("host");
        assert!(target.foreign_root(&host).expect("root").is_none());
        assert!(target.same_user_ns(&host).expect("userns"));
    }
}
