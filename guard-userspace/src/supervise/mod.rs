//! Seccomp user-notification backend: guards `unlink`, `unlinkat` and `rmdir`
//! of processes started by `agent-guard run` on kernels that cannot load BPF
//! LSM programs (see shared KERNEL.md).
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
//!    handles each notification in its own task, so a call held for a human
//!    never delays the others. The held thread waits in the kernel; with
//!    `WAIT_KILLABLE_RECV` only SIGKILL ends the wait once the daemon has
//!    received the notification.
//!
//! # The filter
//!
//! * `AUDIT_ARCH_X86_64`, syscall number below `0x4000_0000`: unlink (87),
//!   unlinkat (263) and rmdir (84) → `SECCOMP_RET_USER_NOTIF`; anything else
//!   → allow.
//! * `AUDIT_ARCH_X86_64` with the x32 bit (number ≥ `0x4000_0000`): every
//!   call → `ERRNO(ENOSYS)`. That is exactly what a kernel without x32
//!   support answers (Debian's default, and this machine's kernel), so an
//!   x32 binary behaves as on such a kernel and cannot reach an unguarded
//!   `unlink` through the x32 table.
//! * `AUDIT_ARCH_I386` (`int 0x80` from any process, or a 32-bit binary):
//!   unlink (10), unlinkat (301) and rmdir (40) are supervised exactly like
//!   their 64-bit twins (`int 0x80` is a real bypass otherwise: it works on
//!   this kernel); anything else → allow, so 32-bit helpers keep working.
//! * Any other architecture (impossible on x86_64) → `KILL_PROCESS`:
//!   fail closed for what we cannot classify.
//!
//! # Handling one notification (the TOCTOU-free scheme)
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
//! 4. Ask the [`Decide`] implementation with that path ([`DeleteRequest`]).
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
//! switched back. The thread, in this order:
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
//! The receive ioctl is only issued after a zero-timeout `poll` of the
//! listener reported POLLIN, so it never blocks a runtime worker; POLLHUP
//! (every filtered process gone) ends [`supervise`] with `Ok`.
//!
//! Known differences: errno precedence can differ in corner cases (e.g.
//! unlink of a directory inside an unwritable directory gives EISDIR, not
//! EACCES); paths through magic links give ELOOP; non-UTF-8 bytes reach the
//! decider as U+FFFD.
mod fdpass;
mod filter;
mod identity;
mod listener;
mod ops;
mod path;
mod supervisor;
mod target;
#[cfg(test)]
mod tests;

use std::{future::Future, io, pin::Pin};

pub use fdpass::{recv_fds_now, recv_with_fds, send_with_fd};
pub use filter::{FilterProgram, SUPERVISED_WATCHED};
#[cfg(test)]
pub use supervisor::supervise;
pub use supervisor::{Journal, Resume, supervise_resuming};

/// Which deletion the agent asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOp {
    /// `unlink`, or `unlinkat` without `AT_REMOVEDIR`.
    Unlink,
    /// `rmdir`, or `unlinkat` with `AT_REMOVEDIR`.
    Rmdir,
}

/// One deletion, as the decider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
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
    pub op: DeleteOp,
    /// Absolute path of the entry to delete: the real path of the parent
    /// directory the supervisor holds open, plus the final component. This is
    /// what the operation acts on; match policy against it.
    pub path: String,
    /// The path exactly as the process passed it (relative, with symlinks,
    /// `..`, ...), for display only.
    pub raw_path: String,
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
    fn decide(
        &self,
        req: DeleteRequest,
    ) -> Pin<Box<dyn Future<Output = (DeleteRequest, Decision)> + Send>>;

    /// Called after an allowed deletion was attempted, with its outcome
    /// (`Err(errno)` is what the agent got).
    fn performed(&self, req: &DeleteRequest, result: Result<(), i32>) {
        let _ = (req, result);
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
