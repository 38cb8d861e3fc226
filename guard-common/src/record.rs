//! Records the kernel programs write into the `EVENTS` ring buffer. The
//! daemon turns them into JSON in exactly one place (`events::decode`).

/// Common head of every record. `kind` says which record follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// [`crate::EventKind`] as a number.
    pub kind: u16,
    /// [`crate::Outcome`] as a number.
    pub outcome: u8,
    /// [`crate::Verdict`] as a number: the verdict the policy gave (in audit
    /// mode, the one enforce mode would have applied).
    pub verdict: u8,
    pub agent_id: u32,
    /// CLOCK_BOOTTIME nanoseconds (bpf_ktime_get_boot_ns).
    pub ktime_ns: u64,
    /// The calling task's own cgroup (the run's session cgroup, or a nested one).
    pub cgroup_id: u64,
    /// The agent cgroup the call was attributed to.
    pub agent_cgroup_id: u64,
    /// Hold id for `held` outcomes; 0 otherwise.
    pub hold_id: u64,
    /// Thread group id (the user-visible pid) and thread id.
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Matched rule, or [`crate::RULE_DEFAULT`].
    pub rule_id: u32,
    /// The grant that let an `ask` through without a hold; 0 if none.
    pub grant_id: u32,
    pub comm: [u8; 16],
    /// The calling task's `self_exec_id`: it changes with every exec, so
    /// an agent that execs another binary under the same name (same
    /// comm, same pid) cannot keep its events attributed to the old image.
    /// 0 where the kernel's BTF lacks the member (the daemon then checks
    /// the comm only).
    pub exec_id: u64,
}
/// Bytes of [`EventHeader`]: every record starts with one.
pub const HEADER_BYTES: usize = 88;
const _: () = assert!(core::mem::size_of::<EventHeader>() == HEADER_BYTES);

/// `net.connect`: an outbound connect by an agent process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectRecord {
    pub header: EventHeader,
    /// [`crate::AF_INET`] or [`crate::AF_INET6`].
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// `CALL_*` bits.
    pub flags: u32,
    /// IPv6 address, or IPv4 in the first four bytes.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ConnectRecord>() == HEADER_BYTES + 8 + 16);

/// How much of a [`FileRecord`]'s path is known.
pub const PATH_COMPLETE: u8 = 0;
/// The path is longer than the record holds; the first bytes are given.
pub const PATH_TRUNCATED: u8 = 1;
/// The kernel could not produce the path at all (bpf_d_path failed).
pub const PATH_UNKNOWN: u8 = 2;

/// Flag of a call record: it came from an io_uring worker, where a hold
/// cannot rewind the call (an `ask` became a deny).
pub const CALL_IO_URING: u8 = 1;
/// Flag of a unix record: the peer is an abstract socket (`path` holds
/// its name, without the leading NUL).
pub const CALL_ABSTRACT: u8 = 2;

/// Flag of a call record: the agent's budget, not a rule, held or refused
/// this call (its verdict is allow).
pub const CALL_BUDGET: u8 = 4;
/// Flag of a call record: this call exhausted the budget's window (with
/// [`CALL_BUDGET`]); the daemon reports the exhaustion once, from it.
pub const CALL_BUDGET_EXHAUSTED: u8 = 8;

/// One path as the calling process sees it (relative to its root).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPath {
    pub bytes: [u8; crate::PATH_KEY_BYTES],
    /// Bytes of `bytes` that are the path.
    pub len: u16,
    /// [`PATH_COMPLETE`], [`PATH_TRUNCATED`] or [`PATH_UNKNOWN`].
    pub state: u8,
    /// `CALL_*` bits.
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<RecordPath>() == 252 + 4);

/// `file.unlink`, `file.rmdir`, `file.truncate`: a call on one file by an
/// agent process; also `net.unix_connect` and `net.unix_send`, whose path
/// is the peer socket's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub header: EventHeader,
    pub path: RecordPath,
}
const _: () = assert!(core::mem::size_of::<FileRecord>() == HEADER_BYTES + 252 + 4);

/// [`RenameRecord::rename_flags`]: RENAME_EXCHANGE (both objects move).
pub const RENAME_EXCHANGES: u8 = 1;
/// The destination existed and is replaced (or exchanged).
pub const RENAME_REPLACES: u8 = 2;
/// The source is a directory: everything below it moves with it.
pub const RENAME_DIR: u8 = 4;
/// The destination's verdict decided (it was the stricter one).
pub const RENAME_DEST_DECIDED: u8 = 8;

/// `file.rename` (source and destination) and `file.link` (the existing
/// file and the new name).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenameRecord {
    pub header: EventHeader,
    pub path: RecordPath,
    pub new_path: RecordPath,
    /// `RENAME_*` bits above.
    pub rename_flags: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<RenameRecord>() == HEADER_BYTES + 2 * 256 + 8);

/// `file.mount`: a refused (or audited) mount-family call; `path` is where
/// it would have mounted (or the new root), when the hook gives one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountRecord {
    pub header: EventHeader,
    pub path: RecordPath,
    /// [`crate::MountOp`] as a number.
    pub op: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<MountRecord>() == HEADER_BYTES + 256 + 8);

/// A delete seen at syscall entry: the raw arguments, which userspace
/// resolves (dirfd/cwd) and judges against the policy for the event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObservedDeleteRecord {
    pub header: EventHeader,
    /// x86_64 syscall number: [`crate::NR_UNLINK`], [`crate::NR_UNLINKAT`] or [`crate::NR_RMDIR`].
    pub nr: u32,
    /// unlinkat's dirfd (AT_FDCWD = -100 for the cwd); -100 for unlink/rmdir.
    pub dirfd: i32,
    /// unlinkat's flags.
    pub flags: u32,
    /// Bytes of `path` read (without the NUL); 0 when unreadable.
    pub path_len: u32,
    /// The path argument as the process passed it.
    pub path: [u8; 256],
}
const _: () = assert!(core::mem::size_of::<ObservedDeleteRecord>() == HEADER_BYTES + 16 + 256);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain repr(C) integers and arrays with explicit padding fields.
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for ConnectRecord {}
    unsafe impl aya::Pod for FileRecord {}
    unsafe impl aya::Pod for RecordPath {}
    unsafe impl aya::Pod for RenameRecord {}
    unsafe impl aya::Pod for MountRecord {}
    unsafe impl aya::Pod for ObservedDeleteRecord {}
}
