//! Seccomp user-notification backend: guards the destructive file
//! operations (unlink, rmdir, rename, link, truncate, opens that truncate)
//! and refuses the mount family and io_uring for processes started by
//! `agent-guard run`, on kernels that cannot load BPF LSM programs (see
//! shared KERNEL.md). The filter's rows are in `filter.rs`.
//!
//! # Pieces and where they run
//!
//! 1. **Launcher child, between fork and exec** ([`FilterProgram`],
//!    [`send_with_fd`]): sets `PR_SET_NO_NEW_PRIVS` and installs a classic BPF
//!    filter with `SECCOMP_FILTER_FLAG_NEW_LISTENER |
//!    SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`, then hands the listener fd to
//!    the daemon over a Unix socket (`SCM_RIGHTS`) and closes its own copy
//!    (the kernel creates it close-on-exec as well: the agent must never hold
//!    the listener, or it could answer its own notifications). Both functions
//!    are async-signal-safe: no allocation, no locks.
//! 2. **Daemon** ([`recv_with_fds`], [`supervise`]): receives the fd and
//!    sets `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` on it (6.6+), so caller
//!    and supervisor hand the CPU to each other instead of waking across
//!    CPUs. One thread per listener receives each notification and handles
//!    it at once; an allowed or denied call is answered from that thread.
//!    A handler that has to wait (a call held for a human, an identity
//!    thread) moves to a task of its own, so it never delays the others.
//!    The held thread waits in the kernel; with `WAIT_KILLABLE_RECV` only
//!    SIGKILL ends the wait once the daemon has received the notification.
//!
//! # The filter
//!
//! Generated from one table of system calls ([`filter`]), for the x86_64
//! and the i386 table (`int 0x80` is a real bypass otherwise); the x32
//! table answers ENOSYS to everything, as a kernel without x32 does, and
//! any other architecture is killed. Opens reach the supervisor only with
//! O_TRUNC (matched in the filter, so ordinary opens cost nothing);
//! openat2, whose flags are in memory, always. Calls whose arguments the
//! filter cannot read and that have a readable fallback (clone3) get
//! ENOSYS. Rows of the mount group are left out when the agent's policy
//! says `allow_mounts = true`, io_uring_setup when `allow_io_uring = true`.
//!
//! # Handling one notification (the TOCTOU-free scheme)
//!
//! The scheme below is the deletion's; renames, links and truncations
//! follow it (`rename.rs`, `truncate.rs`): every path is resolved from a
//! directory or object the supervisor holds open as the caller, the real
//! path of what it holds is judged, and the operation is performed on
//! exactly that, as the caller. An O_TRUNC open is performed too, and the
//! resulting fd installed in the caller (SECCOMP_IOCTL_NOTIF_ADDFD). The
//! mount family and io_uring_setup are refused with EPERM (and an event):
//! they can never be performed on the caller's behalf.
//!
//! The supervisor never answers `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: between
//! a check and a continue another thread of the agent could rewrite the path
//! in memory or swap a directory for a symlink. Instead it **performs the
//! deletion itself and answers with its result**:
//!
//! 1. Read the path string from the target thread's memory
//!    (`process_vm_readv`, page by page, at most `PATH_MAX` bytes). From here
//!    on only this private copy is used.
//! 2. Open the base directory the kernel would use: `/proc/TID/cwd`, or
//!    `/proc/TID/fd/N` for `unlinkat(N, ...)`, and read the caller's
//!    credentials from `/proc/TID/status` (fs uid/gid, supplementary groups,
//!    effective capabilities). Then `SECCOMP_IOCTL_NOTIF_ID_VALID`: the
//!    thread was still blocked in the call after all `/proc` reads, so its
//!    TID was not recycled.
//! 3. On a fresh thread running with the caller's identity (below), open the
//!    parent directory with `openat2(base, parent, O_PATH | O_DIRECTORY,
//!    RESOLVE_NO_MAGICLINKS)`. Symlinks in intermediate components are
//!    followed, as the kernel would; magic links (`/proc/PID/fd/...`, which
//!    would resolve in the daemon's context, not the agent's) fail with
//!    ELOOP. The path that policy sees is the **real path of the directory
//!    fd we hold** (`readlink /proc/self/fd/N`) joined with the final
//!    component — never the string the agent passed.
//! 4. Ask the [`Decide`] implementation with that path ([`Request`]).
//! 5. If allowed and the caller is still waiting (`NOTIF_ID_VALID` again: a
//!    call whose thread was SIGKILLed meanwhile must not take effect later):
//!    on another fresh thread with the caller's identity, check that the
//!    held directory still has the approved path (if it was renamed
//!    meanwhile: EPERM, not attempted), then `unlinkat(dirfd, name, 0 |
//!    AT_REMOVEDIR)` and answer with its result (`0` or `-errno`).
//!
//! The object deleted is therefore always the entry `name` inside the very
//! directory whose path was approved; what the agent's memory or the
//! filesystem's symlinks say after step 1 does not matter.
//!
//! # Acting with the caller's identity
//!
//! Each open (step 3) and delete (step 5) runs on a dedicated
//! `std::thread` that ends right after the one operation, so no thread is
//! ever returned to a pool with a foreign identity and nothing has to be
//! switched back. (When the caller's identity is exactly the daemon's,
//! same root, ids, groups and no capability to drop, there is nothing to
//! switch: an operation that creates nothing then runs on the supervisor's
//! thread itself, the fast path.) The thread, in this order:
//!
//! * if the target's root directory or mount namespace differs from the
//!   daemon's (a chroot, `bwrap`, `unshare -m`): `unshare(CLONE_FS)` and
//!   `chroot` into `/proc/TID/root`, so absolute paths and `..` resolve as
//!   they do for the agent — and the policy path is the agent's view, as
//!   with the LSM backend (`bpf_d_path`);
//! * raw `SYS_setgroups`, `SYS_setfsgid`, `SYS_setfsuid` (per thread at the
//!   syscall level; glibc's `setgroups` would change every thread), each
//!   verified. Moving fsuid from 0 to non-zero drops the filesystem
//!   capabilities (`CAP_DAC_OVERRIDE`, `CAP_FOWNER`, ...), which is exactly
//!   the permission check the agent would get;
//! * reduces its effective capabilities to those the caller has (none if the
//!   caller lives in another user namespace, where its capabilities do not
//!   apply to our objects — conservative).
//!
//! When the caller's identity already equals the daemon's (tests, an agent
//! run as the daemon's user), nothing is switched; that needs no privilege.
//! The pre-flight `lstat` of the final component (below) runs with the
//! daemon's identity, like the kernel's own lookup, which checks no
//! permission before `may_delete`.
//!
//! # Errors the agent sees
//!
//! The answer is the errno the real call would give where it can be
//! computed without deleting: an empty path → ENOENT, no NUL within
//! `PATH_MAX` → ENAMETOOLONG, an unreadable pointer → EFAULT, a bad dirfd →
//! EBADF/ENOTDIR, errors opening the parent as they come, final component
//! `.`/`..`/`/` → EISDIR (unlink) or EINVAL/ENOTEMPTY/EBUSY (rmdir), a
//! missing entry → ENOENT, unlink of a directory → EISDIR, rmdir of a
//! non-directory → ENOTDIR. The decider is asked only about deletions that
//! can happen. A denial is EPERM. Any internal error is EPERM plus a
//! `tracing::error!`, and so is a decider or handler that panics — no path
//! ever answers "continue". A notification whose process is gone is
//! dropped. If the supervisor dies (or its future is dropped), the kernel
//! fails held and later calls with ENOSYS.
//!
//! The receive ioctl is only issued after `poll` reported POLLIN on the
//! listener; POLLHUP (every filtered process gone) ends [`supervise`] with
//! `Ok`. An operation on a filesystem that hangs stalls that run's
//! supervisor thread, and so only that run's own supervised calls.
//!
//! Known differences: errno precedence can differ in corner cases (e.g.
//! unlink of a directory inside an unwritable directory gives EISDIR, not
//! EACCES); paths through magic links give ELOOP; non-UTF-8 bytes reach the
//! decider as U+FFFD.
mod calls;
mod delete;
mod dispatch;
mod fdpass;
mod filter;
mod identity;
mod listener;
mod ops;
mod path;
mod rename;
mod supervisor;
mod target;
#[cfg(test)]
mod tests;
mod truncate;

use std::{future::Future, io, pin::Pin};

#[cfg(test)]
pub use dispatch::supervise;
pub use dispatch::{Journal, Resume, supervise_resuming};
pub use fdpass::{recv_fds_now, recv_with_fds, send_with_fd};
pub use filter::{FilterOptions, FilterProgram, SUPERVISED_WATCHED};

/// What the agent asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `unlink`, or `unlinkat` without `AT_REMOVEDIR`.
    Unlink,
    /// `rmdir`, or `unlinkat` with `AT_REMOVEDIR`.
    Rmdir,
    /// rename/renameat/renameat2: `object` moves to `second`.
    Rename {
        /// RENAME_EXCHANGE: `second` moves to `object` as well.
        exchange: bool,
    },
    /// link/linkat: `object` gets the second name `second`.
    Link,
    /// truncate, ftruncate, or an open with O_TRUNC of an existing file.
    Truncate,
    /// An open (or creation) the supervisor performs that truncates
    /// nothing: not a policy matter, but the daemon performs it outside the
    /// run's own restrictions, so it is judged against the guard's files.
    Open,
    /// A mount-family call: always refused here (see the module docs).
    Mount(guard_common::MountOp),
    /// io_uring_setup: always refused here.
    IoUringSetup,
}

/// One object a call acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Absolute path as the caller sees it: the real path of what the
    /// supervisor holds open (its parent directory's, plus the final
    /// component). This is what the operation acts on; match policy
    /// against it. Empty for a refused call whose path is not resolved.
    pub path: String,
    /// The path exactly as the process passed it (relative, with symlinks,
    /// `..`, ...), for display only.
    pub raw_path: String,
    /// It exists (a rename's destination may not).
    pub exists: bool,
    /// It is a directory: whatever is below it moves with it.
    pub dir: bool,
}

/// One call, as the decider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The seccomp notification this call arrived as: unique per listener,
    /// and stable across a supervisor restart.
    pub notif_id: u64,
    /// Thread-group id (the process) of the caller.
    pub pid: u32,
    /// The calling thread (the notification's `pid` field is the thread id).
    pub tid: u32,
    /// The caller's filesystem uid, the one the kernel checks permissions with.
    pub uid: u32,
    /// The caller's filesystem gid.
    pub gid: u32,
    pub op: Op,
    /// The object acted on: the file deleted or truncated, a rename's
    /// source, a link's existing file, where a mount would go.
    pub object: Object,
    /// A rename's destination or a link's new name.
    pub second: Option<Object>,
}

/// The decider's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The call fails with EPERM.
    Deny,
}

/// Policy hook of the supervisor. `decide` may take as long as it likes
/// (e.g. waiting for a human); only the calling thread of the agent waits.
pub trait Decide: Send + Sync {
    /// Decide about `req`; hand `req` back with the verdict. The future runs
    /// on its own task; it is dropped unfinished if the supervisor ends. A
    /// panic (here or in the future) denies the call.
    fn decide(&self, req: Request) -> Pin<Box<dyn Future<Output = (Request, Decision)> + Send>>;

    /// Called after an allowed call was attempted, with its outcome
    /// (`Err(errno)` is what the agent got).
    fn performed(&self, req: &Request, result: Result<(), i32>) {
        let _ = (req, result);
    }

    /// A call reached for what lies on a cgroup filesystem, at
    /// `req.object.path`: refused (EACCES) without a question, since a run
    /// may only read those; the decider reports it.
    fn cgroup_refused(&self, req: &Request) {
        let _ = req;
    }
}

/// Why [`supervise`] stopped before every supervised process was gone.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot watch the seccomp listener fd: {0}")]
    Register(#[source] io::Error),
    #[error("cannot inspect the daemon's own process: {0}")]
    Host(#[source] io::Error),
    #[error("receiving a seccomp notification failed: {0}")]
    Receive(#[source] io::Error),
}
