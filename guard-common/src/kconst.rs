//! Kernel-wide numbers, named once for the eBPF programs, the seccomp
//! supervisor and the daemon. All but [`PF_IO_WORKER`] are user ABI
//! (include/uapi/...), never renumbered; x86_64 values where they differ
//! by architecture.

/// Address families as the kernel numbers them (AF_INET, AF_INET6, AF_UNIX).
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// Socket type of TCP (and MPTCP) sockets.
pub const SOCK_STREAM: u32 = 1;

/// x86_64 syscall numbers the delete observer watches (arch/x86/entry/
/// syscalls/syscall_64.tbl: part of the user ABI, never renumbered).
pub const NR_RMDIR: i64 = 84;
pub const NR_UNLINK: i64 = 87;
pub const NR_UNLINKAT: i64 = 263;

/// errno values a guarded call can end with.
pub const EPERM: i32 = 1;
pub const ENOSYS: i32 = 38;
/// Kernel-internal "restart this system call after the signal"
/// (include/linux/errno.h). Never reaches a process on a path that a
/// signal interrupts, which is how holds rewind a call; it must never
/// reach one anywhere else (an io_uring completion, say).
pub const ERESTARTNOINTR: i32 = 513;

/// The stop signal a kernel hold sends.
pub const SIGSTOP: u32 = 19;

/// "Relative to the working directory" in the *at() calls.
pub const AT_FDCWD: i32 = -100;
/// unlinkat flag that makes it an rmdir.
pub const AT_REMOVEDIR: u32 = 0x200;

/// open(2) flags (include/uapi/asm-generic/fcntl.h).
pub const O_CREAT: u32 = 0o100;
pub const O_EXCL: u32 = 0o200;
pub const O_TRUNC: u32 = 0o1000;
pub const O_PATH: u32 = 0o10_000_000;

/// renameat2(2) flags (include/uapi/linux/fs.h).
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

/// Namespace flags of clone/unshare/setns (include/uapi/linux/sched.h):
/// the two that let a process build a second path to an object.
pub const CLONE_NEWNS: u32 = 0x0002_0000;
pub const CLONE_NEWUSER: u32 = 0x1000_0000;

/// File type bits of `st_mode` / `inode->i_mode`.
pub const S_IFMT: u16 = 0o170_000;
pub const S_IFDIR: u16 = 0o040_000;
pub const S_IFREG: u16 = 0o100_000;

/// `task_struct->flags` bit of an io_uring worker thread (include/linux/
/// sched.h). Not user ABI, but 0x10 from 5.12 (when io workers became
/// threads of the submitting process) through 6.18.
pub const PF_IO_WORKER: u32 = 0x10;
