//! Every map the programs share with the daemon. The daemon owns the
//! contents; programs only read policy and only write events and counters.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use guard_common::{
    AgentEntry, BudgetCell, BudgetKey, Config, GRANT_SLOTS, Grant, HoldEntry, LOSS_REASONS,
    NetGrantKey, NetKey, NetRuleSet, PathKey, PathRuleValue,
};

/// Agent cgroup id -> agent. Keyed by the agent's own cgroup, so processes in
/// per-run or nested child cgroups are found through their ancestors.
#[map]
pub static AGENTS: HashMap<u64, AgentEntry> = HashMap::with_max_entries(4096, 0);

/// Held thread id -> its hold and the call it is for (see
/// guard_common::HoldEntry).
#[map]
pub static HOLDS: HashMap<u32, HoldEntry> = HashMap::with_max_entries(4096, 0);

/// Slot 0: holds the programs have made (HOLDS entries inserted), counted
/// up after each insert and never down. Written only here; the daemon
/// compares it with `Config::holds_settled` (see hold.rs, [`holds_maybe`]).
///
/// [`holds_maybe`]: crate::hold::holds_maybe
#[map]
pub static HOLDS_MADE: Array<u64> = Array::with_max_entries(1, 0);

/// Per-CPU work area for the current call's hold entry (larger than the
/// BPF stack); see hold.rs.
#[map]
pub static HOLD_SCRATCH: PerCpuArray<HoldEntry> = PerCpuArray::with_max_entries(1, 0);

/// Agent id -> grant covering every held kind of that agent.
#[map]
pub static AGENT_GRANTS: HashMap<u32, Grant> = HashMap::with_max_entries(4096, 0);

/// (agent, path subtree) -> grant, keyed like PATH_RULES.
#[map]
pub static PATH_GRANTS: LpmTrie<PathKey, Grant> = LpmTrie::with_max_entries(4096, 0);

/// (agent, destination address and port) -> grant.
#[map]
pub static NET_GRANTS: HashMap<NetGrantKey, Grant> = HashMap::with_max_entries(4096, 0);

/// `grant_slot(agent id)` -> how many grant entries the daemon has in the
/// three grant maps for the agents of that slot (see grant.rs). Written
/// only by the daemon: raised before it writes a grant, lowered after it
/// took one out, so 0 means none of them has any.
#[map]
pub static GRANTED: Array<u32> = Array::with_max_entries(GRANT_SLOTS, 0);

/// (agent id, budget class) -> the budget and its window (see
/// guard_common::budget). The daemon writes the limits; the programs count
/// in the cell's state word.
#[map]
pub static BUDGETS: HashMap<BudgetKey, BudgetCell> = HashMap::with_max_entries(8192, 0);

/// Slot 0: global knobs (which cgroup levels hold agents).
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// (agent id, address prefix) -> port rules in precedence order.
#[map]
pub static NET_RULES: LpmTrie<NetKey, NetRuleSet> = LpmTrie::with_max_entries(65536, 0);

/// Event records for the daemon.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Records that could not be delivered, per CPU, indexed by LossReason.
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_REASONS, 0);

/// (agent id, path prefix with a '/' after each component) -> rule.
#[map]
pub static PATH_RULES: LpmTrie<PathKey, PathRuleValue> = LpmTrie::with_max_entries(65536, 0);

/// (agent id, path with a '/' after each component, then a NUL) -> the
/// strictest rule strictly below that directory. Keys end in the NUL, so a
/// lookup matches only the exact directory. A rename moves everything
/// below a directory: it is judged by this too.
#[map]
pub static SUBTREE_RULES: LpmTrie<PathKey, PathRuleValue> = LpmTrie::with_max_entries(65536, 0);

/// (agent id, socket path with a '/' after each component, or "@name/" for
/// an abstract socket) -> rule, as PATH_RULES.
#[map]
pub static UNIX_RULES: LpmTrie<PathKey, PathRuleValue> = LpmTrie::with_max_entries(16384, 0);

/// A path being built, shaped like an LPM `Key<PathKey>` (prefix length,
/// agent id, path), so it is used as the lookup key directly; the path
/// area is twice the key's so the verifier can prove every variable-offset
/// write stays inside it.
#[repr(C)]
pub struct KeyBuf {
    pub prefix_len: u32,
    pub agent_id: [u8; 4],
    pub path: [u8; 512],
}

/// Which [`KeyBuf`] of the scratch area: a rename or link builds two paths.
pub const SLOT_A: usize = 0;
pub const SLOT_B: usize = 1;

/// Per-CPU work area for building paths.
#[repr(C)]
pub struct Scratch {
    pub keys: [KeyBuf; 2],
    /// Name pointers collected leaf-first by the dentry walk.
    pub names: [u64; crate::path_walk::MAX_COMPONENTS],
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
