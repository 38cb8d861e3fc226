//! Refusals seen at system call exit (guard-ebpf `refused.rs`), where the
//! BPF LSM self-defense hooks are not in force. Runs are confined there by
//! Landlock and the seccomp filter, which refuse without telling anyone;
//! the observer turns an agent's refused reach for the guard into a record:
//! [`crate::TamperRecord`] for signals, ptrace and bpf(2),
//! [`crate::EscapeRecord`] for clone3 into another cgroup, and
//! [`RefusedPathRecord`] for path calls, which the daemon resolves.
//!
//! Every self-defense record, from these observers and from the LSM hooks
//! alike, draws on a per-agent allowance ([`RefusalBudget`]), so that an
//! agent refused in a loop cannot flood the ring buffer or the log.

use crate::{InodeKey, TAMPER_BPF, TAMPER_FILE, TAMPER_PTRACE, TAMPER_SIGNAL, abi::stable_enum};

stable_enum! {
    /// The system call behind a self-defense record, whatever table it came
    /// through. 0 in a record means "not known" (the BPF LSM hooks see the
    /// operation, not the call). 1x signals, 2x ptrace and its kin, 30
    /// bpf(2), 4x-5x path calls, 60 clone3.
    Call: u16 {
        Kill = 10,
        Tkill = 11,
        Tgkill = 12,
        RtSigqueueinfo = 13,
        RtTgsigqueueinfo = 14,
        PidfdSendSignal = 15,
        Ptrace = 20,
        ProcessVmReadv = 21,
        ProcessVmWritev = 22,
        PidfdGetfd = 23,
        ProcessMadvise = 24,
        Kcmp = 25,
        Bpf = 30,
        Open = 40,
        Openat = 41,
        Openat2 = 42,
        Creat = 43,
        Truncate = 44,
        Mkdir = 45,
        Mkdirat = 46,
        Mknod = 47,
        Mknodat = 48,
        Rename = 50,
        Renameat = 51,
        Renameat2 = 52,
        Link = 53,
        Linkat = 54,
        Symlink = 55,
        Symlinkat = 56,
        Clone3 = 60,
    }
}

// errno values (include/uapi/asm-generic/errno-base.h), kept private to
// this module: the refusals each call can end with.
const EPERM: i64 = 1;
const EACCES: i64 = 13;
const EXDEV: i64 = 18;
const ENOSYS: i64 = 38;

/// [`RefusalBudget`] class of refusals that leave the agent's cgroup
/// (refused cgroup writes, clone3 into another cgroup); the other classes
/// are the [`crate::TamperRecord::what`] numbers.
pub const REFUSAL_ESCAPE: u32 = 5;
/// Slots per agent in a [`RefusalBudget`] (classes 1..=5 used).
pub const REFUSAL_CLASSES: usize = 8;
/// Refusals of one class an agent may have reported one by one before the
/// allowance applies, and how often one more is reported after that: the
/// numbers the control plane uses for `control.refused`.
pub const REFUSAL_BURST: u64 = 10;
pub const REFUSAL_INTERVAL_NS: u64 = 1_000_000_000;

impl Call {
    /// The call's name, as events give it.
    pub const fn name(self) -> &'static str {
        match self {
            Call::Kill => "kill",
            Call::Tkill => "tkill",
            Call::Tgkill => "tgkill",
            Call::RtSigqueueinfo => "rt_sigqueueinfo",
            Call::RtTgsigqueueinfo => "rt_tgsigqueueinfo",
            Call::PidfdSendSignal => "pidfd_send_signal",
            Call::Ptrace => "ptrace",
            Call::ProcessVmReadv => "process_vm_readv",
            Call::ProcessVmWritev => "process_vm_writev",
            Call::PidfdGetfd => "pidfd_getfd",
            Call::ProcessMadvise => "process_madvise",
            Call::Kcmp => "kcmp",
            Call::Bpf => "bpf",
            Call::Open => "open",
            Call::Openat => "openat",
            Call::Openat2 => "openat2",
            Call::Creat => "creat",
            Call::Truncate => "truncate",
            Call::Mkdir => "mkdir",
            Call::Mkdirat => "mkdirat",
            Call::Mknod => "mknod",
            Call::Mknodat => "mknodat",
            Call::Rename => "rename",
            Call::Renameat => "renameat",
            Call::Renameat2 => "renameat2",
            Call::Link => "link",
            Call::Linkat => "linkat",
            Call::Symlink => "symlink",
            Call::Symlinkat => "symlinkat",
            Call::Clone3 => "clone3",
        }
    }

    /// The watched call behind x86_64 system call `nr`
    /// (arch/x86/entry/syscalls/syscall_64.tbl, user ABI).
    #[inline(always)]
    pub const fn from_x86_64(nr: u64) -> Option<Self> {
        Some(match nr {
            62 => Call::Kill,
            200 => Call::Tkill,
            234 => Call::Tgkill,
            129 => Call::RtSigqueueinfo,
            297 => Call::RtTgsigqueueinfo,
            424 => Call::PidfdSendSignal,
            101 => Call::Ptrace,
            310 => Call::ProcessVmReadv,
            311 => Call::ProcessVmWritev,
            438 => Call::PidfdGetfd,
            440 => Call::ProcessMadvise,
            312 => Call::Kcmp,
            321 => Call::Bpf,
            2 => Call::Open,
            257 => Call::Openat,
            437 => Call::Openat2,
            85 => Call::Creat,
            76 => Call::Truncate,
            83 => Call::Mkdir,
            258 => Call::Mkdirat,
            133 => Call::Mknod,
            259 => Call::Mknodat,
            82 => Call::Rename,
            264 => Call::Renameat,
            316 => Call::Renameat2,
            86 => Call::Link,
            265 => Call::Linkat,
            88 => Call::Symlink,
            266 => Call::Symlinkat,
            435 => Call::Clone3,
            _ => return None,
        })
    }

    /// The watched call behind i386 system call `nr` (`int 0x80`, 32-bit
    /// binaries; arch/x86/entry/syscalls/syscall_32.tbl, user ABI).
    #[inline(always)]
    pub const fn from_i386(nr: u64) -> Option<Self> {
        Some(match nr {
            37 => Call::Kill,
            238 => Call::Tkill,
            270 => Call::Tgkill,
            178 => Call::RtSigqueueinfo,
            335 => Call::RtTgsigqueueinfo,
            424 => Call::PidfdSendSignal,
            26 => Call::Ptrace,
            347 => Call::ProcessVmReadv,
            348 => Call::ProcessVmWritev,
            438 => Call::PidfdGetfd,
            440 => Call::ProcessMadvise,
            349 => Call::Kcmp,
            357 => Call::Bpf,
            5 => Call::Open,
            295 => Call::Openat,
            437 => Call::Openat2,
            8 => Call::Creat,
            92 | 193 => Call::Truncate, // truncate, truncate64
            39 => Call::Mkdir,
            296 => Call::Mkdirat,
            14 => Call::Mknod,
            297 => Call::Mknodat,
            38 => Call::Rename,
            302 => Call::Renameat,
            353 => Call::Renameat2,
            9 => Call::Link,
            303 => Call::Linkat,
            83 => Call::Symlink,
            304 => Call::Symlinkat,
            435 => Call::Clone3,
            _ => return None,
        })
    }

    /// What the call reaches for: a [`crate::TamperRecord::what`] number,
    /// or [`REFUSAL_ESCAPE`].
    #[inline(always)]
    pub const fn class(self) -> u32 {
        match self as u16 {
            10..=19 => TAMPER_SIGNAL,
            20..=29 => TAMPER_PTRACE,
            30 => TAMPER_BPF,
            60 => REFUSAL_ESCAPE,
            _ => TAMPER_FILE,
        }
    }

    /// Whether returning `ret` means the call was refused: EPERM or EACCES
    /// (Landlock, the seccomp filter, permissions), EXDEV for renames and
    /// links (Landlock's refusal to move an entry between directories),
    /// ENOSYS for clone3 (the seccomp filter's answer).
    #[inline(always)]
    pub const fn refused_with(self, ret: i64) -> bool {
        match self {
            Call::Clone3 => ret == -ENOSYS,
            Call::Rename | Call::Renameat | Call::Renameat2 | Call::Link | Call::Linkat => {
                ret == -EPERM || ret == -EACCES || ret == -EXDEV
            }
            _ => ret == -EPERM || ret == -EACCES,
        }
    }
}

/// Whether a system call's return value can be a refusal the observer
/// reports: the one comparison every process on the host pays.
#[inline(always)]
pub const fn maybe_refused(ret: i64) -> bool {
    ret == -EPERM || ret == -EACCES || ret == -EXDEV || ret == -ENOSYS
}

/// Value of `REFUSAL_BUDGET`, keyed by the agent's cgroup id: one
/// allowance per class (GCRA: the time from which one more record is
/// within the allowance), in CLOCK_BOOTTIME ns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusalBudget {
    pub next_ns: [u64; REFUSAL_CLASSES],
}
const _: () = assert!(core::mem::size_of::<RefusalBudget>() == 8 * REFUSAL_CLASSES);

/// Value of the per-CPU `REFUSAL_SUPPRESSED`, keyed by the agent's cgroup
/// id: per class, how many records the allowance held back (monotonic;
/// the daemon sums the CPUs and reports each increase in one event).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusalCounts {
    pub suppressed: [u64; REFUSAL_CLASSES],
}
const _: () = assert!(core::mem::size_of::<RefusalCounts>() == 8 * REFUSAL_CLASSES);

/// Value of `REFUSAL_SKIP`, indexed by [`Call`]: path calls the seccomp
/// supervisor of a run judges (and reports) itself, which the observer
/// leaves to it so that one attempt gives one event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusalSkip {
    /// [`SKIP_NEVER`], [`SKIP_ALWAYS`] or [`SKIP_FLAGS`].
    pub when: u32,
    /// SKIP_FLAGS: skipped when the call's open flags have any of these.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<RefusalSkip>() == 8);
pub const SKIP_NEVER: u32 = 0;
pub const SKIP_ALWAYS: u32 = 1;
pub const SKIP_FLAGS: u32 = 2;
/// Slots of `REFUSAL_SKIP`: every [`Call`] number is below it.
pub const REFUSAL_SKIP_SLOTS: u32 = 64;

/// Kernel struct member offsets the observer reads beyond
/// [`crate::GuardOffsets`], from the running kernel's BTF. Zero in
/// `task_files` means "not provided": the observer then does nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusedOffsets {
    /// task_struct.files, files_struct.fdt, fdtable.fd, fdtable.max_fds:
    /// from a descriptor number to its struct file.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_f_inode: u32,
    /// A pidfd's struct pid before pidfs (5.3-6.8).
    pub file_private_data: u32,
    /// A pidfs inode's struct pid (6.9+); a kernfs inode's kernfs_node.
    pub inode_i_private: u32,
    pub inode_i_sb: u32,
    /// struct pid.numbers[0].nr: the pid as the host's namespace numbers it.
    pub pid_numbers: u32,
    pub upid_nr: u32,
    /// A /proc/PID directory used as a pidfd: proc_inode.pid.
    pub proc_inode_pid: u32,
    pub proc_inode_vfs_inode: u32,
    /// A cgroup directory's kernfs_node.priv: its struct cgroup.
    pub kernfs_node_priv: u32,
    /// fs_struct.pwd: the base of a path relative to AT_FDCWD.
    pub fs_pwd: u32,
    /// task_struct.thread_info + thread_info.status (x86: TS_COMPAT says
    /// the call came through the i386 table).
    pub thread_status: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<RefusedOffsets>() == 64);

/// Bytes of a path, and of its base directory, a [`RefusedPath`] carries.
pub const REFUSED_PATH_BYTES: usize = 256;

/// One path argument of a refused call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedPath {
    /// The directory descriptor a relative path starts from (AT_FDCWD,
    /// -100: the working directory).
    pub dirfd: i32,
    /// Bytes of `path` used; 0: no path in this slot.
    pub path_len: u16,
    /// Bytes of `base` used: the directory a relative path starts from,
    /// as the calling process sees it; 0 for an absolute path, or when the
    /// kernel could not name it.
    pub base_len: u16,
    /// The protected directory or file that `base` lies in, if any
    /// (all zero otherwise): found by inode, so no name can hide it.
    pub protected: InodeKey,
    /// The path as the call passed it.
    pub path: [u8; REFUSED_PATH_BYTES],
    pub base: [u8; REFUSED_PATH_BYTES],
}
const _: () = assert!(core::mem::size_of::<RefusedPath>() == 24 + 2 * REFUSED_PATH_BYTES);

/// A path call by an agent process that the kernel refused (Landlock,
/// permissions), seen at system call exit: the daemon resolves the paths
/// and reports `guard.tamper` for the guard's files (and for /proc entries
/// of its processes), `agent.escape` for a cgroup file outside the agent's
/// tree, and nothing for the rest.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedPathRecord {
    pub header: crate::EventHeader,
    /// [`Call`] as a number.
    pub call: u16,
    pub _pad: u16,
    /// The errno it failed with.
    pub errno: u32,
    /// Open flags (open, openat, openat2, creat), else 0.
    pub flags: u32,
    pub _pad2: u32,
    /// The path arguments: one, or for renames and links the source and
    /// the destination.
    pub paths: [RefusedPath; 2],
}
const _: () = assert!(
    core::mem::size_of::<RefusedPathRecord>()
        == crate::record::HEADER_BYTES + 16 + 2 * size_of::<RefusedPath>()
);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain repr(C) integers and arrays with explicit padding fields.
    unsafe impl aya::Pod for RefusalBudget {}
    unsafe impl aya::Pod for RefusalCounts {}
    unsafe impl aya::Pod for RefusalSkip {}
    unsafe impl aya::Pod for RefusedOffsets {}
    unsafe impl aya::Pod for RefusedPathRecord {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_has_a_number_in_both_tables() {
        for call in Call::ALL {
            let x64 = (0..512).filter(|nr| Call::from_x86_64(*nr) == Some(*call));
            let i386 = (0..512).filter(|nr| Call::from_i386(*nr) == Some(*call));
            assert_eq!(x64.count(), 1, "{call:?}");
            assert!(i386.count() >= 1, "{call:?}");
            assert!((call.raw() as u32) < REFUSAL_SKIP_SLOTS);
            assert!((call.class() as usize) < REFUSAL_CLASSES);
        }
    }

    #[test]
    fn refusals_by_call() {
        assert!(Call::Bpf.refused_with(-EPERM));
        assert!(!Call::Bpf.refused_with(-ENOSYS));
        assert!(Call::Clone3.refused_with(-ENOSYS));
        assert!(!Call::Clone3.refused_with(-EPERM));
        assert!(Call::Renameat2.refused_with(-EXDEV));
        assert!(!Call::Openat.refused_with(-EXDEV));
        assert!(Call::Openat.refused_with(-EACCES));
        assert!(!maybe_refused(0) && !maybe_refused(-2) && maybe_refused(-13));
        assert_eq!(Call::PidfdGetfd.class(), TAMPER_PTRACE);
        assert_eq!(Call::Symlinkat.class(), TAMPER_FILE);
    }
}
