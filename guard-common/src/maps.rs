//! Map keys and values. Policy lives in maps keyed by agent; the daemon
//! writes them, the kernel programs only read them.

use crate::abi::MAX_CGROUP_LEVEL;

/// Value of the `AGENTS` hash map, keyed by the agent cgroup's id (u64, the
/// inode number of its directory).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentEntry {
    /// Daemon-assigned id, never reused within a daemon run. Rule maps are keyed
    /// by it, so a reload writes new rules under a new id and then flips this
    /// entry in one map update.
    pub agent_id: u32,
    /// [`crate::Mode`] as a number.
    pub mode: u8,
    /// [`crate::Verdict`] applied to connects no rule matches.
    pub connect_default: u8,
    /// [`crate::Verdict`] applied to deletes no rule matches.
    pub delete_default: u8,
    /// `AGENT_*` bits below.
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<AgentEntry>() == 8);

/// [`AgentEntry::flags`]: the policy says `allow_mounts = true`.
pub const AGENT_ALLOW_MOUNTS: u8 = 1;
/// [`AgentEntry::flags`]: some unix socket can be refused (a unix rule that
/// is not `allow`, or a connect default that is not): a unix address the
/// kernel cannot name is then refused rather than let through.
pub const AGENT_UNIX_GUARDED: u8 = 2;

/// Bytes of a held call's target: room for two paths of
/// [`PATH_KEY_BYTES`] (a rename's source and destination).
pub const HOLD_TARGET_BYTES: usize = 512;
/// Where a second path (a rename's destination) starts in
/// [`HeldCall::target`].
pub const HOLD_SECOND_PATH: usize = 256;

/// What a held call does, and to what: a decision applies only to the call
/// that was held, so a restarted call is compared with this whole (with
/// the thread, which keys the map, and its process).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldCall {
    /// [`crate::EventKind`] of the call.
    pub kind: u16,
    /// Connects: the destination port (host byte order); 0 otherwise.
    pub port: u16,
    pub _pad: u32,
    /// Connects: the address (IPv6, or IPv4-mapped) in the first 16
    /// bytes. File operations: the path as the rule lookup reads it (see
    /// [`PathKey`]), and a second path from [`HOLD_SECOND_PATH`] for
    /// operations with two. Every byte past the target is zero.
    pub target: [u8; HOLD_TARGET_BYTES],
}
const _: () = assert!(core::mem::size_of::<HeldCall>() == 8 + HOLD_TARGET_BYTES);
const _: () = assert!(HOLD_SECOND_PATH >= PATH_KEY_BYTES);
const _: () = assert!(HOLD_SECOND_PATH + PATH_KEY_BYTES <= HOLD_TARGET_BYTES);

impl Default for HeldCall {
    fn default() -> Self {
        Self {
            kind: 0,
            port: 0,
            _pad: 0,
            target: [0; HOLD_TARGET_BYTES],
        }
    }
}

/// Value of the `HOLDS` hash map, keyed by the held thread's id. The kernel
/// creates it (Pending) when it stops a thread for an `ask`; the daemon
/// writes the decision, then sends SIGCONT; the restarted call consumes it,
/// provided it is the same call (same process, kind and target). Any other
/// call of the thread is judged afresh.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldEntry {
    pub hold_id: u64,
    /// Thread group of the held thread (who gets SIGCONT).
    pub pid: u32,
    /// [`crate::HoldState`] as a number.
    pub state: u8,
    /// Connect holds: SIGSTOP still to be sent at this thread's sys_exit.
    pub stop_pending: u8,
    pub _pad: [u8; 2],
    /// The call this hold is for.
    pub call: HeldCall,
}
const _: () = assert!(core::mem::size_of::<HoldEntry>() == 16 + size_of::<HeldCall>());

/// Version of the [`HoldEntry`] layout, part of the HOLDS map's pin name:
/// a daemon never takes up a pinned map whose entries it would misread.
/// Bump it with every change to [`HoldEntry`] or [`HeldCall`].
pub const HOLDS_LAYOUT: u32 = 2;

/// Value of the grant maps: an approval that lets later `ask` calls of the
/// same agent through without a hold until `expires_ns` (CLOCK_BOOTTIME,
/// checked by the kernel itself, so a grant ends on time even if the daemon
/// is gone).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub expires_ns: u64,
    pub grant_id: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Grant>() == 16);

/// Key of the `NET_GRANTS` hash map: one destination of one agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NetGrantKey {
    pub agent_id: u32,
    pub port: u16,
    pub _pad: u16,
    /// IPv6, or IPv4-mapped, as in [`NetKey`].
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<NetGrantKey>() == 24);

/// Single-slot `CONFIG` array value: global knobs the daemon can change live.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bit N set: some agent cgroup sits at cgroup level N. The kernel only
    /// looks up ancestors at these levels, so a process costs one lookup per
    /// distinct agent depth, not one per level.
    pub agent_levels: u64,
    /// The `HOLDS_MADE` count at which the daemon last found the HOLDS map
    /// empty. While the count still equals it, no thread has a hold, and a
    /// counted call need not look for one (see guard-ebpf's decide.rs).
    /// [`HOLDS_UNSETTLED`] until the daemon has looked.
    pub holds_settled: u64,
}
const _: () = assert!(core::mem::size_of::<Config>() == 16);

/// [`Config::holds_settled`] before the daemon has seen the HOLDS map
/// empty: no count of holds ever equals it, so every call looks.
pub const HOLDS_UNSETTLED: u64 = u64::MAX;

impl Default for Config {
    fn default() -> Self {
        Self {
            agent_levels: 0,
            holds_settled: HOLDS_UNSETTLED,
        }
    }
}

/// Slots of the `GRANTED` array: an agent's is `agent_id % GRANT_SLOTS`
/// ([`grant_slot`]). Agents that share a slot share its count, which only
/// makes one of them look for grants it does not have.
pub const GRANT_SLOTS: u32 = 1024;
const _: () = assert!(GRANT_SLOTS.is_power_of_two());

/// The `GRANTED` slot of `agent_id`.
#[inline(always)]
pub const fn grant_slot(agent_id: u32) -> u32 {
    agent_id & (GRANT_SLOTS - 1)
}
const _: () = assert!(MAX_CGROUP_LEVEL < 64);

/// Data part of the `NET_RULES` LPM-trie key. The prefix length counts the 32
/// agent bits plus the address prefix bits; IPv4 is stored IPv4-mapped
/// (::ffff:a.b.c.d), so a v4 rule also governs a dual-stack socket's
/// connect to a mapped address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetKey {
    /// Agent id, big-endian so that the trie's bytewise prefix covers it whole.
    pub agent_id: [u8; 4],
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<NetKey>() == 20);

/// Bits of [`NetKey`] taken by the agent id.
pub const NET_KEY_AGENT_BITS: u32 = 32;
/// IPv4-mapped IPv6 prefix: an IPv4 /N rule is stored as /(96 + N).
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;

/// One port-range rule inside a [`NetRuleSet`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRule {
    /// Inclusive port range, host byte order. 0..=65535 is "any port".
    pub lo: u16,
    pub hi: u16,
    /// Identifies the policy entry for events; never [`crate::RULE_DEFAULT`].
    pub rule_id: u32,
    /// [`crate::Verdict`] as a number.
    pub verdict: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<PortRule>() == 12);

/// Most port rules one address prefix (with the prefixes that contain it) may
/// carry. `policy check` rejects a policy that needs more.
pub const MAX_PORT_RULES: usize = 16;

/// Value of the `NET_RULES` LPM trie. Userspace stores, under each address
/// prefix, its own rules *and* those of every shorter prefix of the same agent
/// that contains it, already in precedence order (longest prefix, then
/// narrowest port range, then deny > ask > allow). The kernel does one trie
/// lookup and takes the first rule whose port range holds the port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetRuleSet {
    pub count: u32,
    pub _pad: u32,
    pub rules: [PortRule; MAX_PORT_RULES],
}
const _: () = assert!(core::mem::size_of::<NetRuleSet>() == 8 + 12 * MAX_PORT_RULES);

impl Default for NetRuleSet {
    fn default() -> Self {
        Self {
            count: 0,
            _pad: 0,
            rules: [PortRule::default(); MAX_PORT_RULES],
        }
    }
}

/// Bytes of path in a [`PathKey`]. The LPM trie caps key data at 256 bytes;
/// 4 go to the agent id. Policy prefixes must be shorter (see `policy check`);
/// longer paths are matched on their first bytes, which still contain every
/// prefix a rule can name.
pub const PATH_KEY_BYTES: usize = 252;

/// Data part of the `PATH_RULES` LPM-trie key: the agent, then the path with a
/// '/' after every component, including the last ("/srv/data/"), so that a
/// prefix only ever matches whole components. The kernel puts a NUL after the
/// final '/', and NUL never occurs in a rule, so no rule can match past it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKey {
    pub agent_id: [u8; 4],
    pub path: [u8; PATH_KEY_BYTES],
}
const _: () = assert!(core::mem::size_of::<PathKey>() == 256);

impl Default for PathKey {
    fn default() -> Self {
        Self {
            agent_id: [0; 4],
            path: [0; PATH_KEY_BYTES],
        }
    }
}

/// Value of the `PATH_RULES` trie: the winning rule for that exact prefix
/// (userspace resolves same-prefix ties as deny > ask > allow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathRuleValue {
    pub rule_id: u32,
    /// [`crate::Verdict`] as a number.
    pub verdict: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<PathRuleValue>() == 8);

/// Kernel struct member offsets the programs need, read by userspace from
/// the running kernel's BTF (Rust eBPF objects get no CO-RE relocations).
/// A zero in an optional field means "this kernel has no such member": the
/// programs that need it are then not loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// offsetof(struct dentry, d_name)
    pub dentry_d_name: u32,
    /// offsetof(struct qstr, name)
    pub qstr_name: u32,
    // The path walk used where bpf_d_path is not allowed in a hook (e.g.
    // 6.1, and every hook added for side doors): parent dentries, and
    // mounts to cross.
    /// offsetof(struct dentry, d_parent)
    pub dentry_d_parent: u32,
    /// offsetof(struct path, mnt)
    pub path_mnt: u32,
    /// offsetof(struct path, dentry)
    pub path_dentry: u32,
    /// offsetof(struct vfsmount, mnt_root)
    pub vfsmount_mnt_root: u32,
    /// offsetof(struct mount, mnt): the vfsmount embedded in struct mount
    pub mount_mnt: u32,
    /// offsetof(struct mount, mnt_parent)
    pub mount_mnt_parent: u32,
    /// offsetof(struct mount, mnt_mountpoint)
    pub mount_mnt_mountpoint: u32,
    /// offsetof(struct task_struct, fs): the walk stops at the task's root,
    /// as bpf_d_path does, so chrooted agents see their own paths.
    pub task_fs: u32,
    /// offsetof(struct fs_struct, root)
    pub fs_root: u32,
    /// offsetof(struct dentry, d_inode): does a rename's target exist, is
    /// its source a directory.
    pub dentry_d_inode: u32,
    /// offsetof(struct inode, i_mode)
    pub inode_i_mode: u32,
    /// offsetof(struct task_struct, flags): io_uring workers cannot be held.
    pub task_flags: u32,
    /// offsetof(struct mount, mnt_ns), offsetof(struct task_struct, nsproxy)
    /// and offsetof(struct nsproxy, mnt_ns): an object reached through a
    /// mount outside the caller's namespace (a detached `open_tree` or
    /// `fsmount` tree) has no path the policy can name.
    pub mount_mnt_ns: u32,
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    /// offsetof(struct file, f_path)
    pub file_f_path: u32,
    /// Optional (unix rules): offsetof(struct unix_sock, path),
    /// offsetof(struct unix_sock, addr), offsetof(struct unix_address,
    /// len), offsetof(struct unix_address, name), offsetof(struct socket,
    /// sk).
    pub unix_sock_path: u32,
    pub unix_sock_addr: u32,
    pub unix_address_len: u32,
    pub unix_address_name: u32,
    pub socket_sk: u32,
    /// Optional (cgroup unix programs, 6.7+): offsetof(struct
    /// bpf_sock_addr_kern, uaddr) and (.., uaddrlen).
    pub sock_addr_kern_uaddr: u32,
    pub sock_addr_kern_uaddrlen: u32,
    /// Optional: offsetof(struct task_struct, self_exec_id), which every
    /// exec raises. Records carry it, so the daemon's process cache can
    /// tell an exec that keeps the name (see `EventHeader::exec_id`).
    pub task_self_exec_id: u32,
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 26 * 4);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain repr(C) integers and arrays with explicit padding fields.
    unsafe impl aya::Pod for AgentEntry {}
    unsafe impl aya::Pod for HoldEntry {}
    unsafe impl aya::Pod for HeldCall {}
    unsafe impl aya::Pod for Grant {}
    unsafe impl aya::Pod for NetGrantKey {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for NetKey {}
    unsafe impl aya::Pod for PortRule {}
    unsafe impl aya::Pod for NetRuleSet {}
    unsafe impl aya::Pod for PathKey {}
    unsafe impl aya::Pod for PathRuleValue {}
    unsafe impl aya::Pod for KernelOffsets {}
}
