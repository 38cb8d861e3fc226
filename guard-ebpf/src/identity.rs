//! Which agent, if any, the current task belongs to.
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use guard_common::{AgentEntry, MAX_CGROUP_LEVEL};

use crate::maps::{AGENTS, CONFIG};

pub struct Agent {
    pub cgroup_id: u64,
    pub entry: AgentEntry,
    /// `Config::holds_settled` as read with the agent levels (see
    /// hold::holds_maybe).
    pub holds_settled: u64,
}

/// Finds the agent whose cgroup is an ancestor of (or is) the current task's
/// cgroup. Only the levels where the daemon placed agents are looked up, so
/// the cost is one helper call and one hash lookup per distinct agent depth.
#[inline(always)]
pub fn current_agent() -> Option<Agent> {
    let config = CONFIG.get(0)?;
    let (levels, holds_settled) = (config.agent_levels, config.holds_settled);
    if levels == 0 {
        return None;
    }
    let mut level = 0u32;
    while level <= MAX_CGROUP_LEVEL {
        if levels & (1u64 << level) != 0 {
            // SAFETY: helper with a plain integer argument.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
            if id == 0 {
                // The task's cgroup is shallower than this level; so is
                // every deeper level.
                return None;
            }
            // SAFETY: AgentEntry is Copy and read whole; the daemon replaces
            // entries with a single update.
            if let Some(entry) = unsafe { AGENTS.get(id) } {
                return Some(Agent {
                    cgroup_id: id,
                    entry: *entry,
                    holds_settled,
                });
            }
        }
        level += 1;
    }
    None
}
