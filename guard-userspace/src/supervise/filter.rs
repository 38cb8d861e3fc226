//! The classic BPF seccomp filter and its installation between fork and exec.
//!
//! The filter is generated from [`SYSCALLS`], one row per guarded system
//! call; adding a call is adding a row (and its handling in `calls.rs`).
use std::{mem::offset_of, os::fd::RawFd};

use guard_common::{CLONE_NEWNS, CLONE_NEWUSER, O_TRUNC};

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "the seccomp supervisor's filter knows the x86_64 and i386 syscall tables only; \
     add this architecture's AUDIT_ARCH and syscall numbers"
);

/// `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE` (linux/audit.h).
pub(super) const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `EM_386 | __AUDIT_ARCH_LE`: `int 0x80` and 32-bit binaries.
pub(super) const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// Set in the syscall number of every x32-ABI call.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// open_tree(2): make a detached copy of the tree.
const OPEN_TREE_CLONE: u32 = 1;

/// Calls the refusal observer (guard-ebpf refused.rs) watches that this
/// filter hands the supervisor, which judges and reports them itself: the
/// observer leaves them alone, with (for opens) the flags that make the
/// filter hand them over. A row the filter notifies belongs here, or its
/// refusals are reported twice (`notified_calls_are_left_to_the_supervisor`).
pub const SUPERVISED_WATCHED: &[(guard_common::Call, Option<u32>)] = {
    use guard_common::Call as C;
    &[
        (C::Rename, None),
        (C::Renameat, None),
        (C::Renameat2, None),
        (C::Link, None),
        (C::Linkat, None),
        (C::Truncate, None),
        (C::Open, Some(O_TRUNC)),
        (C::Openat, Some(O_TRUNC)),
        (C::Creat, None),
        (C::Openat2, None),
    ]
};

/// A guarded system call, whatever table it came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Guarded {
    Unlink,
    Rmdir,
    Unlinkat,
    Rename,
    Renameat,
    Renameat2,
    Link,
    Linkat,
    Truncate,
    Ftruncate,
    Open,
    Openat,
    Creat,
    Openat2,
    OpenByHandleAt,
    Mount,
    MoveMount,
    OpenTree,
    Fsopen,
    Fsmount,
    Fspick,
    MountSetattr,
    PivotRoot,
    Chroot,
    Unshare,
    Clone,
    Clone3,
    Setns,
    IoUringSetup,
    Bpf,
    ProcessMadvise,
}

/// Which policy switch lifts a row: rows of a group the agent's policy
/// allows are left out of its runs' filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Group {
    /// Destructive file operations: always guarded.
    Files,
    /// Second paths to an object: lifted by `allow_mounts = true`.
    Mounts,
    /// io_uring, which this backend cannot see: lifted by `allow_io_uring`.
    IoUring,
    /// The guard's own defence: never lifted.
    SelfDefense,
}

/// What the filter does with a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// The supervisor judges it (and performs it, if allowed).
    Notify,
    /// Fails at once with this errno (no event): for calls whose arguments
    /// the filter cannot read and whose callers fall back to one it can.
    Errno(i32),
}

/// When a row applies, beyond its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum When {
    Always,
    /// The argument's low 32 bits have some bit of `mask` set.
    AnyBit {
        arg: u8,
        mask: u32,
    },
    /// As AnyBit, or the argument is 0 (setns: any namespace type).
    AnyBitOrZero {
        arg: u8,
        mask: u32,
    },
}

pub(super) struct Row {
    pub call: Guarded,
    /// arch/x86/entry/syscalls/syscall_64.tbl; None if the table has none.
    pub x64: Option<u32>,
    /// arch/x86/entry/syscalls/syscall_32.tbl.
    pub i386: Option<u32>,
    pub when: When,
    pub action: Action,
    pub group: Group,
}

const fn row(call: Guarded, x64: u32, i386: u32, when: When, group: Group) -> Row {
    Row {
        call,
        x64: Some(x64),
        i386: Some(i386),
        when,
        action: Action::Notify,
        group,
    }
}

const NS_FLAGS: u32 = CLONE_NEWNS | CLONE_NEWUSER;
const ALWAYS: When = When::Always;
use Group::{Files, IoUring, Mounts, SelfDefense};
use Guarded as G;

/// Every guarded call. Numbers from the kernel's syscall tables (user ABI,
/// never renumbered); the new-API calls share one number on both.
pub(super) const SYSCALLS: &[Row] = &[
    row(G::Unlink, 87, 10, ALWAYS, Files),
    row(G::Rmdir, 84, 40, ALWAYS, Files),
    row(G::Unlinkat, 263, 301, ALWAYS, Files),
    row(G::Rename, 82, 38, ALWAYS, Files),
    row(G::Renameat, 264, 302, ALWAYS, Files),
    row(G::Renameat2, 316, 353, ALWAYS, Files),
    row(G::Link, 86, 9, ALWAYS, Files),
    row(G::Linkat, 265, 303, ALWAYS, Files),
    row(G::Truncate, 76, 92, ALWAYS, Files),
    Row {
        call: G::Truncate,
        x64: None,
        i386: Some(193), // truncate64
        when: ALWAYS,
        action: Action::Notify,
        group: Files,
    },
    row(G::Ftruncate, 77, 93, ALWAYS, Files),
    Row {
        call: G::Ftruncate,
        x64: None,
        i386: Some(194), // ftruncate64
        when: ALWAYS,
        action: Action::Notify,
        group: Files,
    },
    // Only opens that truncate: every other open runs at full speed.
    row(
        G::Open,
        2,
        5,
        When::AnyBit {
            arg: 1,
            mask: O_TRUNC,
        },
        Files,
    ),
    row(
        G::Openat,
        257,
        295,
        When::AnyBit {
            arg: 2,
            mask: O_TRUNC,
        },
        Files,
    ),
    row(G::Creat, 85, 8, ALWAYS, Files),
    // Its flags are in memory the filter cannot read; glibc never uses it
    // for open().
    row(G::Openat2, 437, 437, ALWAYS, Files),
    row(
        G::OpenByHandleAt,
        304,
        342,
        When::AnyBit {
            arg: 2,
            mask: O_TRUNC,
        },
        Files,
    ),
    row(G::Mount, 165, 21, ALWAYS, Mounts),
    row(G::MoveMount, 429, 429, ALWAYS, Mounts),
    row(
        G::OpenTree,
        428,
        428,
        When::AnyBit {
            arg: 2,
            mask: OPEN_TREE_CLONE,
        },
        Mounts,
    ),
    row(G::Fsopen, 430, 430, ALWAYS, Mounts),
    row(G::Fsmount, 432, 432, ALWAYS, Mounts),
    row(G::Fspick, 433, 433, ALWAYS, Mounts),
    row(G::MountSetattr, 442, 442, ALWAYS, Mounts),
    row(G::PivotRoot, 155, 217, ALWAYS, Mounts),
    row(G::Chroot, 161, 61, ALWAYS, Mounts),
    row(
        G::Unshare,
        272,
        310,
        When::AnyBit {
            arg: 0,
            mask: NS_FLAGS,
        },
        Mounts,
    ),
    row(
        G::Clone,
        56,
        120,
        When::AnyBit {
            arg: 0,
            mask: NS_FLAGS,
        },
        Mounts,
    ),
    // clone3's flags are in memory: ENOSYS, on which glibc (and every libc
    // that knows clone3) falls back to clone, whose flags the row above
    // sees. Always, also with allow_mounts: clone3 could place the child in
    // any cgroup (CLONE_INTO_CGROUP).
    Row {
        call: G::Clone3,
        x64: Some(435),
        i386: Some(435),
        when: ALWAYS,
        action: Action::Errno(libc::ENOSYS),
        group: SelfDefense,
    },
    // bpf(2) could detach the guard's links or rewrite its maps.
    Row {
        call: G::Bpf,
        x64: Some(321),
        i386: Some(357),
        when: ALWAYS,
        action: Action::Errno(libc::EPERM),
        group: SelfDefense,
    },
    // process_madvise could page a guard process's memory out (MADV_COLD,
    // MADV_PAGEOUT): Landlock does not refuse it on 6.18 (measured), so the
    // filter does, whatever the target (a filter cannot see whose pidfd it
    // is).
    Row {
        call: G::ProcessMadvise,
        x64: Some(440),
        i386: Some(440),
        when: ALWAYS,
        action: Action::Errno(libc::EPERM),
        group: SelfDefense,
    },
    row(
        G::Setns,
        308,
        346,
        When::AnyBitOrZero {
            arg: 1,
            mask: NS_FLAGS,
        },
        Mounts,
    ),
    row(G::IoUringSetup, 425, 425, ALWAYS, IoUring),
];

/// Maps a notification's `(arch, nr)` back to the call; `None` for anything
/// the filter should not have sent.
pub(super) fn classify(arch: u32, nr: i32) -> Option<Guarded> {
    let nr = u32::try_from(nr).ok()?;
    SYSCALLS
        .iter()
        .find(|r| match arch {
            AUDIT_ARCH_X86_64 => r.x64 == Some(nr),
            AUDIT_ARCH_I386 => r.i386 == Some(nr),
            _ => false,
        })
        .map(|r| r.call)
}

/// Which groups a run's filter leaves out (from the agent's policy when the
/// run started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterOptions {
    pub allow_mounts: bool,
    pub allow_io_uring: bool,
}

impl FilterOptions {
    fn includes(self, group: Group) -> bool {
        match group {
            Group::Files | Group::SelfDefense => true,
            Group::Mounts => !self.allow_mounts,
            Group::IoUring => !self.allow_io_uring,
        }
    }
}

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const OFF_NR: u32 = offset_of!(libc::seccomp_data, nr) as u32;
const OFF_ARCH: u32 = offset_of!(libc::seccomp_data, arch) as u32;
const OFF_ARGS: u32 = offset_of!(libc::seccomp_data, args) as u32;

const fn ins(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn ret(action: Action) -> libc::sock_filter {
    let k = match action {
        Action::Notify => libc::SECCOMP_RET_USER_NOTIF,
        Action::Errno(errno) => libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA),
    };
    ins(RET, k, 0, 0)
}

/// The rows of one table: each a block that returns if its number matches
/// (after its argument check) and otherwise jumps past itself, then allow.
/// The accumulator holds the number on entry to every block.
fn table(out: &mut Vec<libc::sock_filter>, nrs: impl Iterator<Item = (u32, When, Action)>) {
    let allow = ins(RET, libc::SECCOMP_RET_ALLOW, 0, 0);
    for (nr, when, action) in nrs {
        // Low 32 bits of the argument (little endian), as the kernel reads
        // an int flags argument.
        let arg = |a: u8| ins(LD_ABS, OFF_ARGS + 8 * u32::from(a), 0, 0);
        match when {
            When::Always => out.extend([ins(JEQ, nr, 0, 1), ret(action)]),
            When::AnyBit { arg: a, mask } => out.extend([
                ins(JEQ, nr, 0, 4),
                arg(a),
                ins(JSET, mask, 0, 1),
                ret(action),
                allow,
            ]),
            When::AnyBitOrZero { arg: a, mask } => out.extend([
                ins(JEQ, nr, 0, 5),
                arg(a),
                ins(JEQ, 0, 1, 0),
                ins(JSET, mask, 0, 1),
                ret(action),
                allow,
            ]),
        }
    }
    out.push(allow);
}

/// The filter, built before the fork so the child only makes system calls.
pub struct FilterProgram {
    insns: Vec<libc::sock_filter>,
}

impl Default for FilterProgram {
    fn default() -> Self {
        Self::new(FilterOptions::default())
    }
}

impl FilterProgram {
    /// * `AUDIT_ARCH_X86_64`, number below `0x4000_0000`: the x86_64 rows;
    ///   anything else → allow.
    /// * `AUDIT_ARCH_X86_64` with the x32 bit: every call → `ERRNO(ENOSYS)`,
    ///   which is what a kernel without x32 support answers, so an x32
    ///   binary cannot reach an unguarded call through that table.
    /// * `AUDIT_ARCH_I386` (`int 0x80`, 32-bit binaries): the i386 rows
    ///   (`int 0x80` is a real bypass otherwise: it works on this kernel).
    /// * Any other architecture → `KILL_PROCESS`.
    pub fn new(options: FilterOptions) -> Self {
        let rows = || SYSCALLS.iter().filter(|r| options.includes(r.group));
        let mut x64 = vec![
            ins(LD_ABS, OFF_NR, 0, 0),
            ins(JGE, X32_SYSCALL_BIT, 0, 1),
            ret(Action::Errno(libc::ENOSYS)),
        ];
        table(
            &mut x64,
            rows().filter_map(|r| Some((r.x64?, r.when, r.action))),
        );
        let mut i386 = vec![
            ins(JEQ, AUDIT_ARCH_I386, 1, 0),
            ins(RET, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
            ins(LD_ABS, OFF_NR, 0, 0),
        ];
        table(
            &mut i386,
            rows().filter_map(|r| Some((r.i386?, r.when, r.action))),
        );
        let mut insns = vec![
            ins(LD_ABS, OFF_ARCH, 0, 0),
            ins(JEQ, AUDIT_ARCH_X86_64, 1, 0),
            // Past the x64 table, to the i386 one.
            ins(JA, x64.len() as u32, 0, 0),
        ];
        insns.extend(x64);
        insns.extend(i386);
        Self { insns }
    }

    /// Sets `PR_SET_NO_NEW_PRIVS` and installs the filter on the calling
    /// thread; returns the listener fd (close-on-exec) or the errno.
    /// Async-signal-safe: two system calls on memory owned by `self`.
    ///
    /// # Safety
    ///
    /// Meant for the child between fork and exec (std `pre_exec`). From then
    /// on every guarded call of this thread and its descendants blocks
    /// until the returned fd is supervised (or fails with ENOSYS once the fd
    /// is closed), and no-new-privs disables setuid binaries; calling it in
    /// a process that is not about to exec would deadlock its own guarded
    /// calls. The caller must pass the fd on and close its copy before
    /// exec.
    pub unsafe fn install(&self) -> Result<RawFd, i32> {
        let prog = libc::sock_fprog {
            len: self.insns.len() as libc::c_ushort,
            // The kernel only reads the program (it copies it in).
            filter: self.insns.as_ptr().cast_mut(),
        };
        // SAFETY: prctl and seccomp with arguments that point at `prog` and
        // `self.insns`, both alive for the duration of the calls; reading
        // errno through its thread-local location allocates nothing.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(*libc::__errno_location());
            }
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
                    | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                &raw const prog,
            );
            if fd < 0 {
                return Err(*libc::__errno_location());
            }
            Ok(fd as RawFd)
        }
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
