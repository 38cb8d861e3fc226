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
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 80);

/// `net.connect`: an outbound connect by an agent process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectRecord {
    pub header: EventHeader,
    /// [`crate::AF_INET`] or [`crate::AF_INET6`].
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    pub _pad: u32,
    /// IPv6 address, or IPv4 in the first four bytes.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ConnectRecord>() == 80 + 8 + 16);

/// How much of a [`FileRecord`]'s path is known.
pub const PATH_COMPLETE: u8 = 0;
/// The path is longer than the record holds; the first bytes are given.
pub const PATH_TRUNCATED: u8 = 1;
/// The kernel could not produce the path at all (bpf_d_path failed).
pub const PATH_UNKNOWN: u8 = 2;

/// `file.unlink` / `file.rmdir`: a delete by an agent process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub header: EventHeader,
    /// Absolute path as the calling process sees it (relative to its root).
    pub path: [u8; crate::PATH_KEY_BYTES],
    /// Bytes of `path` that are the path.
    pub path_len: u16,
    /// [`PATH_COMPLETE`], [`PATH_TRUNCATED`] or [`PATH_UNKNOWN`].
    pub path_state: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<FileRecord>() == 80 + 252 + 4);

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
const _: () = assert!(core::mem::size_of::<ObservedDeleteRecord>() == 80 + 16 + 256);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain repr(C) integers and arrays with explicit padding fields.
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for ConnectRecord {}
    unsafe impl aya::Pod for FileRecord {}
    unsafe impl aya::Pod for ObservedDeleteRecord {}
}
