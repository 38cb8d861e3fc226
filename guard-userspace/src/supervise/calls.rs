//! Decoding a notification into the call it stands for, for either
//! syscall table.
use guard_common::{AT_FDCWD, CLONE_NEWUSER, MountOp, O_CREAT, O_TRUNC};

use super::{
    Op,
    filter::{self, AUDIT_ARCH_X86_64, Guarded},
    supervisor::{Failure, Stop},
};

/// A guarded call's arguments. Paths are addresses in the caller's memory.
#[derive(Debug, Clone, Copy)]
pub(super) enum Call {
    Delete {
        op: Op,
        dirfd: i32,
        path: u64,
    },
    Rename {
        old_dirfd: i32,
        old: u64,
        new_dirfd: i32,
        new: u64,
        flags: u32,
    },
    Link {
        old_dirfd: i32,
        old: u64,
        new_dirfd: i32,
        new: u64,
        flags: i32,
    },
    Truncate {
        path: u64,
        length: i64,
    },
    Ftruncate {
        fd: i32,
        length: i64,
    },
    /// open, openat, creat (`how` None) and openat2 (`how` the address and
    /// size of its `struct open_how`, whose fields override these).
    Open {
        dirfd: i32,
        path: u64,
        flags: u32,
        mode: u32,
        how: Option<(u64, u64)>,
    },
    /// A call that is refused here with EPERM, whatever the policy says
    /// (the decider reports it): the mount family, io_uring_setup, and an
    /// open_by_handle_at that truncates (it names no path to judge).
    /// `path`: a path argument to report, if the call has one.
    Refuse {
        op: Op,
        path: Option<(i32, u64)>,
        reason: &'static str,
    },
}

pub(super) fn decode(notif: &libc::seccomp_notif) -> Result<Call, Stop> {
    let data = &notif.data;
    let guarded = filter::classify(data.arch, data.nr).ok_or(Failure::UnexpectedSyscall {
        arch: data.arch,
        nr: data.nr,
    })?;
    let x64 = data.arch == AUDIT_ARCH_X86_64;
    // Integer arguments are their low 32 bits, as the kernel reads them;
    // i386 pointers are 32 bits wide.
    let int = |i: usize| data.args[i] as u32 as i32;
    let uint = |i: usize| data.args[i] as u32;
    let ptr = |i: usize| {
        if x64 {
            data.args[i]
        } else {
            data.args[i] & 0xffff_ffff
        }
    };
    // A length: one 64-bit register, or (truncate64/ftruncate64 on i386) a
    // low and a high half.
    let length = |i: usize| {
        if x64 {
            data.args[i] as i64
        } else {
            i64::from(data.args[i] as u32) | (i64::from(data.args[i + 1] as u32) << 32)
        }
    };
    // The i386 truncate/ftruncate take a 32-bit signed length.
    let i386_long = !x64 && matches!(data.nr, 92 | 93);
    let length = |i: usize| {
        if i386_long {
            i64::from(data.args[i] as u32 as i32)
        } else {
            length(i)
        }
    };
    let ns_op = |flags: u32| {
        if flags & CLONE_NEWUSER != 0 {
            MountOp::UserNamespace
        } else {
            MountOp::MountNamespace
        }
    };
    let refuse = |op, path| Call::Refuse {
        op: Op::Mount(op),
        path,
        reason: "",
    };
    Ok(match guarded {
        Guarded::Unlink => Call::Delete {
            op: Op::Unlink,
            dirfd: AT_FDCWD,
            path: ptr(0),
        },
        Guarded::Rmdir => Call::Delete {
            op: Op::Rmdir,
            dirfd: AT_FDCWD,
            path: ptr(0),
        },
        Guarded::Unlinkat => {
            let flags = int(2);
            if flags & !libc::AT_REMOVEDIR != 0 {
                return Err(Stop::Errno(libc::EINVAL));
            }
            let op = if flags & libc::AT_REMOVEDIR != 0 {
                Op::Rmdir
            } else {
                Op::Unlink
            };
            Call::Delete {
                op,
                dirfd: int(0),
                path: ptr(1),
            }
        }
        Guarded::Rename => Call::Rename {
            old_dirfd: AT_FDCWD,
            old: ptr(0),
            new_dirfd: AT_FDCWD,
            new: ptr(1),
            flags: 0,
        },
        Guarded::Renameat | Guarded::Renameat2 => Call::Rename {
            old_dirfd: int(0),
            old: ptr(1),
            new_dirfd: int(2),
            new: ptr(3),
            flags: if guarded == Guarded::Renameat2 {
                uint(4)
            } else {
                0
            },
        },
        Guarded::Link => Call::Link {
            old_dirfd: AT_FDCWD,
            old: ptr(0),
            new_dirfd: AT_FDCWD,
            new: ptr(1),
            flags: 0,
        },
        Guarded::Linkat => Call::Link {
            old_dirfd: int(0),
            old: ptr(1),
            new_dirfd: int(2),
            new: ptr(3),
            flags: int(4),
        },
        Guarded::Truncate => Call::Truncate {
            path: ptr(0),
            length: length(1),
        },
        Guarded::Ftruncate => Call::Ftruncate {
            fd: int(0),
            length: length(1),
        },
        Guarded::Open => Call::Open {
            dirfd: AT_FDCWD,
            path: ptr(0),
            flags: uint(1),
            mode: uint(2),
            how: None,
        },
        Guarded::Openat => Call::Open {
            dirfd: int(0),
            path: ptr(1),
            flags: uint(2),
            mode: uint(3),
            how: None,
        },
        Guarded::Creat => Call::Open {
            dirfd: AT_FDCWD,
            path: ptr(0),
            flags: O_CREAT | libc::O_WRONLY as u32 | O_TRUNC,
            mode: uint(1),
            how: None,
        },
        Guarded::Openat2 => Call::Open {
            dirfd: int(0),
            path: ptr(1),
            flags: 0,
            mode: 0,
            how: Some((ptr(2), data.args[3])),
        },
        Guarded::OpenByHandleAt => Call::Refuse {
            op: Op::Truncate,
            path: None,
            reason: "open_by_handle_at with O_TRUNC names no path the policy could judge",
        },
        Guarded::Mount => refuse(MountOp::Mount, Some((AT_FDCWD, ptr(1)))),
        Guarded::MoveMount => refuse(MountOp::MoveMount, Some((int(2), ptr(3)))),
        Guarded::OpenTree => refuse(MountOp::OpenTree, Some((int(0), ptr(1)))),
        Guarded::Fsopen | Guarded::Fsmount | Guarded::Fspick => refuse(MountOp::FsMount, None),
        Guarded::MountSetattr => refuse(MountOp::MountSetattr, Some((int(0), ptr(1)))),
        Guarded::PivotRoot => refuse(MountOp::PivotRoot, Some((AT_FDCWD, ptr(0)))),
        Guarded::Chroot => refuse(MountOp::Chroot, Some((AT_FDCWD, ptr(0)))),
        Guarded::Unshare | Guarded::Clone => refuse(ns_op(uint(0)), None),
        Guarded::Setns => refuse(ns_op(uint(1)), None),
        // The filter answers these itself; a notification would be a bug.
        Guarded::Clone3 | Guarded::Bpf | Guarded::ProcessMadvise => {
            return Err(Stop::Failed(Failure::UnexpectedSyscall {
                arch: data.arch,
                nr: data.nr,
            }));
        }
        Guarded::IoUringSetup => Call::Refuse {
            op: Op::IoUringSetup,
            path: None,
            reason: "",
        },
    })
}
