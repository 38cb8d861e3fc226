//! Running one filesystem operation with the caller's identity, on a thread
//! of its own that ends with the operation (see the module docs of
//! `supervise` for why no thread is ever switched back).
use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
    sync::Arc,
};

use super::target::cvt;

/// The identity the kernel would check the agent's call with.
#[derive(Debug)]
pub(super) struct Identity {
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    /// Effective capabilities the thread may keep (ours ∩ this mask).
    pub cap_mask: u64,
    /// The caller's root, when it differs from ours: chroot into it.
    pub root: Option<OwnedFd>,
    /// The caller's umask, for what is created on its behalf.
    pub umask: u32,
}

/// Runs `op` on a new thread that first takes on `identity`. The thread ends
/// when `op` returns, so its identity dies with it.
pub(super) async fn run_as<T, F>(identity: Arc<Identity>, op: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("guard-unlink".into())
        .spawn(move || {
            let result = identity.assume().map(|()| op());
            // The receiver is gone only if the notification's task was
            // aborted; the result no longer matters then.
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| io::Error::other("the identity thread died without an answer"))?
}

/// Like [`run_as`], for an `op` that creates nothing (so the umask does
/// not matter): when the caller's identity is the daemon's own, `op` runs
/// right here, since the thread would switch nothing. That is the
/// supervisor's fast path: no thread to start and wait for.
pub(super) async fn run_as_creating_nothing<T, F>(
    identity: Arc<Identity>,
    own: &Own,
    op: F,
) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if identity.is(own) {
        return Ok(op());
    }
    run_as(identity, op).await
}

/// The daemon's own identity, read once when supervision starts (the
/// daemon never changes its credentials; only identity threads do, and
/// they end).
#[derive(Debug)]
pub(super) struct Own {
    fsuid: u32,
    fsgid: u32,
    /// Sorted, without duplicates.
    groups: Vec<u32>,
    cap_eff: u64,
}

impl Own {
    /// Reads the calling thread's identity; never call it on an identity
    /// thread.
    pub(super) fn current() -> io::Result<Self> {
        let mut groups = thread_groups()?;
        groups.sort_unstable();
        groups.dedup();
        // SAFETY: (u32)-1 is never a valid id, so these only query.
        let (fsuid, fsgid) = unsafe {
            (
                libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32,
                libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32,
            )
        };
        Ok(Self {
            fsuid,
            fsgid,
            groups,
            cap_eff: effective_caps()?,
        })
    }
}

impl Identity {
    /// Takes on this identity on the calling thread. Must only run on a
    /// thread that ends afterwards.
    fn assume(&self) -> io::Result<()> {
        // A private fs_struct first, so the umask (and a chroot) touch this
        // thread only.
        // SAFETY: plain system calls on a live fd and static strings.
        unsafe {
            cvt(libc::unshare(libc::CLONE_FS))?;
            libc::umask(self.umask & 0o777);
            if let Some(root) = &self.root {
                cvt(libc::fchdir(root.as_raw_fd()))?;
                cvt(libc::chroot(c".".as_ptr()))?;
            }
        }
        self.switch_ids()?;
        restrict_caps(self.cap_mask)
    }

    /// Whether taking on this identity would change nothing the kernel
    /// checks a call with: the same root, ids, groups, and no capability
    /// of ours to drop.
    pub(super) fn is(&self, own: &Own) -> bool {
        if self.root.is_some() || self.fsuid != own.fsuid || self.fsgid != own.fsgid {
            return false;
        }
        if own.cap_eff & !self.cap_mask != 0 {
            return false;
        }
        let mut groups = self.groups.clone();
        groups.sort_unstable();
        groups.dedup();
        groups == own.groups
    }

    fn switch_ids(&self) -> io::Result<()> {
        let mut want = self.groups.clone();
        want.sort_unstable();
        want.dedup();
        let mut have = thread_groups()?;
        have.sort_unstable();
        have.dedup();
        if want != have {
            // The raw system call changes this thread only (glibc's wrapper
            // would broadcast to every thread of the daemon).
            // SAFETY: setgroups reads `want.len()` gids from a live vector.
            let rc = unsafe { libc::syscall(libc::SYS_setgroups, want.len(), want.as_ptr()) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut now = thread_groups()?;
            now.sort_unstable();
            now.dedup();
            if now != want {
                return Err(io::Error::other("setgroups did not take effect"));
            }
        }
        // setfsgid/setfsuid report no error; (u32)-1 is never a valid id,
        // so calling with it only returns the current value, to verify.
        // SAFETY: setfsgid/setfsuid take plain integers.
        unsafe {
            if libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 != self.fsgid {
                libc::syscall(libc::SYS_setfsgid, self.fsgid);
                if libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 != self.fsgid {
                    return Err(io::Error::other(format!("cannot set fsgid {}", self.fsgid)));
                }
            }
            if libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 != self.fsuid {
                libc::syscall(libc::SYS_setfsuid, self.fsuid);
                if libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 != self.fsuid {
                    return Err(io::Error::other(format!("cannot set fsuid {}", self.fsuid)));
                }
            }
        }
        Ok(())
    }
}

/// This thread's supplementary groups (raw syscall: per thread).
fn thread_groups() -> io::Result<Vec<u32>> {
    // SAFETY: size 0 only asks for the count.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<u32>()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0u32; n as usize];
    // SAFETY: room for `n` gids; no other thread changes ours meanwhile.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, groups.len(), groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    Ok(groups)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
const CAP_V3: u32 = 0x2008_0522;

/// This thread's capabilities (capget with pid 0: the calling thread).
fn capget() -> io::Result<(CapHeader, [CapData; 2])> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two CapData from a live header.
    cvt(
        unsafe { libc::syscall(libc::SYS_capget, &raw mut hdr, data.as_mut_ptr()) } as libc::c_int,
    )?;
    Ok((hdr, data))
}

fn effective_caps() -> io::Result<u64> {
    let (_, data) = capget()?;
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

/// Lowers this thread's effective capabilities to those also in `mask`.
/// (capget/capset with pid 0 act on the calling thread only.)
fn restrict_caps(mask: u64) -> io::Result<()> {
    let (mut hdr, mut data) = capget()?;
    let eff = u64::from(data[0].effective) | (u64::from(data[1].effective) << 32);
    let keep = eff & mask;
    if keep == eff {
        return Ok(());
    }
    data[0].effective = keep as u32;
    data[1].effective = (keep >> 32) as u32;
    // SAFETY: capset reads the header and two CapData; only lowering the
    // effective set, which needs no privilege.
    cvt(unsafe { libc::syscall(libc::SYS_capset, &raw mut hdr, data.as_ptr()) } as libc::c_int)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn own_identity_needs_no_privilege_and_leaves_us_alone() {
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let groups = thread_groups().expect("groups");
        let me = Arc::new(Identity {
            fsuid: uid,
            fsgid: gid,
            groups,
            cap_mask: 0,
            root: None,
            umask: 0o22,
        });
        let seen = run_as(me, || {
            // SAFETY: query-only calls.
            unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 }
        })
        .await
        .expect("ran");
        assert_eq!(seen, uid);
        // The capability drop happened on the other thread only.
        let mut hdr = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: as in restrict_caps.
        unsafe { libc::syscall(libc::SYS_capget, &raw mut hdr, data.as_mut_ptr()) };
        if uid == 0 {
            assert_ne!(
                data[0].effective, 0,
                "root test thread kept its capabilities"
            );
        }
    }
}
