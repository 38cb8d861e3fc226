//! Self-defense: what the kernel programs need to keep agents away from the
//! guard itself (its processes, files and kernel objects) and inside their
//! own cgroup tree. Layouts shared by guard-ebpf's `selfdefense` modules
//! and the daemon.

/// How an agent process tried to leave its agent's cgroup tree
/// ([`EscapeRecord::how`]).
pub const ESCAPE_ATTACH: u32 = 1;
/// clone3(CLONE_INTO_CGROUP) put a new child outside the agent.
pub const ESCAPE_CLONE: u32 = 2;
/// Opened a cgroup file outside its tree for writing (refused, BPF LSM).
pub const ESCAPE_OPEN: u32 = 3;

/// What was done about it ([`EscapeRecord::action`], [`TamperRecord::action`]).
pub const ACTION_REFUSED: u32 = 1;
/// The escaping process was sent SIGKILL before the call returned.
pub const ACTION_KILLED: u32 = 2;
/// Another process left: it is killed when it next leaves a system call.
pub const ACTION_KILL_PENDING: u32 = 3;

/// What an agent process reached for ([`TamperRecord::what`]).
pub const TAMPER_SIGNAL: u32 = 1;
/// ptrace, process_vm_readv/writev, pidfd_getfd, /proc/PID/mem and the like
/// (everything that goes through ptrace_may_access).
pub const TAMPER_PTRACE: u32 = 2;
/// bpf(2), any command.
pub const TAMPER_BPF: u32 = 3;
/// A protected file or directory (state dir, policy, chain key, event log).
pub const TAMPER_FILE: u32 = 4;

/// Kinds of guard process in `GUARD_PIDS` ([`GuardProcess::role`]).
pub const ROLE_DAEMON: u32 = 1;
pub const ROLE_LAUNCHER: u32 = 2;

/// Superblock magic numbers of the cgroup filesystems (linux/magic.h).
pub const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
pub const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;

/// clone3's flag that places the child in a cgroup chosen by the caller.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Kernel struct member offsets the self-defense programs read, from the
/// running kernel's BTF (no CO-RE for Rust eBPF objects). Zero in
/// `task_tgid` means "not provided": the programs then do nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    /// task_struct.start_boottime (ns): tells a pid's owner from a later one.
    pub task_start_boottime: u32,
    pub task_group_leader: u32,
    /// task_struct.cgroups (struct css_set *)
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_level: u32,
    /// cgroup.ancestors (struct cgroup *[], indexed by level; 6.0+)
    pub cgroup_ancestors: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub file_f_path: u32,
    pub file_f_mode: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_inode: u32,
    pub dentry_d_sb: u32,
    pub inode_i_ino: u32,
    pub super_block_s_dev: u32,
    pub super_block_s_magic: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<GuardOffsets>() == 80);

/// Value of `AGENT_PROCS`, keyed by tgid: the agent a process belongs to,
/// kept outside the cgroup so that the kernel still knows it once the
/// process has left the cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentProc {
    /// The agent's own cgroup (an AGENTS key).
    pub agent_cgroup_id: u64,
    /// Start of the process in USER_HZ ticks since boot (/proc/PID/stat
    /// field 22), so an entry never outlives its process into a reused pid.
    pub start_ticks: u64,
}
const _: () = assert!(core::mem::size_of::<AgentProc>() == 16);

/// Value of `GUARD_PIDS`: a process of the guard itself, keyed by its
/// tgid, and each of its threads, keyed by the thread's id (signals,
/// ptrace and process_vm_readv name threads as well as processes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardProcess {
    /// The process's start (every thread's entry carries its process's).
    pub start_ticks: u64,
    /// [`ROLE_DAEMON`] or [`ROLE_LAUNCHER`].
    pub role: u32,
    /// The process (tgid) the entry belongs to.
    pub tgid: u32,
}
const _: () = assert!(core::mem::size_of::<GuardProcess>() == 16);

/// Key of `PROTECTED`: a directory or file no agent may open, by the
/// kernel's device number of its filesystem (MAJOR << 20 | MINOR) and inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u64,
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);

/// The daemon's own TCP listeners that agents may not reach
/// ([`ListenKey`] values in `GUARD_LISTEN`): the approval page and the
/// metrics endpoint. A connect refused for reaching one carries the rule id
/// [`crate::RULE_GUARD`] + the surface.
pub const SURFACE_WEB: u32 = 1;
pub const SURFACE_METRICS: u32 = 2;

/// Key of `GUARD_LISTEN`, an LPM trie: a TCP port of the daemon's, then an
/// address prefix that reaches it (IPv4 as IPv4-mapped IPv6, as in
/// [`crate::NetKey`]). The prefix length always covers the whole port
/// ([`LISTEN_KEY_PORT_BITS`] + the address bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenKey {
    /// Big-endian, so that the trie's bytewise prefix covers it whole.
    pub port: [u8; 2],
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ListenKey>() == 18);

/// Bits of [`ListenKey`] taken by the port.
pub const LISTEN_KEY_PORT_BITS: u32 = 16;

/// Ticks per second of /proc's start times (USER_HZ; 100 on every Linux
/// architecture agent-guard builds for).
pub const USER_HZ: u64 = 100;
/// Nanoseconds per USER_HZ tick.
pub const NS_PER_TICK: u64 = 1_000_000_000 / USER_HZ;

/// How far up the directory tree a file's protection is looked for.
pub const MAX_PROTECTED_DEPTH: u32 = 24;

/// Bytes of the destination cgroup path an [`EscapeRecord`] carries.
pub const ESCAPE_PATH_BYTES: usize = 128;

/// `agent.escape`: an agent process left (or tried to leave) its agent's
/// cgroup tree. The header names the agent left and the process that made
/// the call (the writer); `moved_pid` is the process that left.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EscapeRecord {
    pub header: crate::EventHeader,
    pub moved_pid: u32,
    /// [`ESCAPE_ATTACH`], [`ESCAPE_CLONE`] or [`ESCAPE_OPEN`].
    pub how: u32,
    /// [`ACTION_REFUSED`], [`ACTION_KILLED`] or [`ACTION_KILL_PENDING`].
    pub action: u32,
    /// Bytes of `path` used.
    pub path_len: u32,
    /// The cgroup it went to (0 when refused before it went anywhere).
    pub dst_cgroup_id: u64,
    /// The destination cgroup's path, relative to the cgroup2 root, when
    /// the kernel gives it (cgroup_attach_task does).
    pub path: [u8; ESCAPE_PATH_BYTES],
}
const _: () = assert!(
    core::mem::size_of::<EscapeRecord>() == crate::record::HEADER_BYTES + 24 + ESCAPE_PATH_BYTES
);

/// `guard.tamper`: an agent process reached for the guard's processes,
/// files or kernel objects.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TamperRecord {
    pub header: crate::EventHeader,
    /// [`TAMPER_SIGNAL`], [`TAMPER_PTRACE`], [`TAMPER_BPF`] or [`TAMPER_FILE`].
    pub what: u32,
    /// [`ACTION_REFUSED`] or [`ACTION_KILLED`].
    pub action: u32,
    /// Signal and ptrace: the guard process aimed at; 0 otherwise.
    pub target_pid: u32,
    /// Signal: its number; ptrace: the access mode; bpf: the command;
    /// file: the file's open mode bits (FMODE_READ 1, FMODE_WRITE 2).
    pub arg: u32,
    /// File: the protected directory or file that covers it.
    pub protected: InodeKey,
    /// The system call ([`crate::Call`] as a number), when known: the
    /// observer at system call exit knows it, the BPF LSM hooks do not (0).
    pub call: u32,
    pub _pad: u32,
}
const _: () =
    assert!(core::mem::size_of::<TamperRecord>() == crate::record::HEADER_BYTES + 16 + 16 + 8);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain repr(C) integers and arrays with explicit padding fields.
    unsafe impl aya::Pod for GuardOffsets {}
    unsafe impl aya::Pod for AgentProc {}
    unsafe impl aya::Pod for GuardProcess {}
    unsafe impl aya::Pod for InodeKey {}
    unsafe impl aya::Pod for ListenKey {}
    unsafe impl aya::Pod for EscapeRecord {}
    unsafe impl aya::Pod for TamperRecord {}
}
