//! Grants: an approval with a scope and a lifetime, so that later `ask`
//! calls it covers pass without a hold. Expiry is checked here against
//! CLOCK_BOOTTIME, so a grant ends on time even with no daemon; the daemon
//! also removes expired and revoked grants.
//!
//! Every look-up starts with the agent's `GRANTED` slot, one array read:
//! an agent without grants (the common case, and every call its budget
//! counts) pays no hash or trie look-up. The daemon raises the slot before
//! it writes a grant and lowers it after it took one out, so a grant is
//! never in a map while its slot says 0.
use aya_ebpf::{helpers::generated::bpf_ktime_get_boot_ns, maps::lpm_trie::Key};
use guard_common::{Grant, NetGrantKey, PathKey, grant_slot};

use crate::maps::{AGENT_GRANTS, GRANTED, NET_GRANTS, PATH_GRANTS};

/// Whether `agent_id` may have a grant (its slot's count is not 0). A
/// missing slot cannot happen (an array of GRANT_SLOTS); it says yes.
#[inline(always)]
fn maybe(agent_id: u32) -> bool {
    GRANTED
        .get(grant_slot(agent_id))
        .is_none_or(|count| *count != 0)
}

#[inline(always)]
fn live(grant: Option<&Grant>) -> Option<u32> {
    let grant = grant?;
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    (now < grant.expires_ns).then_some(grant.grant_id)
}

/// A live agent-wide grant of `agent_id`.
#[inline(always)]
pub fn for_agent(agent_id: u32) -> Option<u32> {
    if !maybe(agent_id) {
        return None;
    }
    agent_wide(agent_id)
}

#[inline(always)]
fn agent_wide(agent_id: u32) -> Option<u32> {
    // SAFETY: Grant is Copy and read whole.
    live(unsafe { AGENT_GRANTS.get(agent_id) })
}

/// A live subtree grant covering the path in `key` (built like the
/// PATH_RULES lookup key), or an agent-wide one.
#[inline(always)]
pub fn for_path(agent_id: u32, key: &Key<PathKey>) -> Option<u32> {
    if !maybe(agent_id) {
        return None;
    }
    live(PATH_GRANTS.get(key)).or_else(|| agent_wide(agent_id))
}

/// A live grant for this destination (address and port), or an agent-wide one.
#[inline(always)]
pub fn for_destination(agent_id: u32, addr: &[u8; 16], port: u16) -> Option<u32> {
    if !maybe(agent_id) {
        return None;
    }
    let key = NetGrantKey {
        agent_id,
        port,
        _pad: 0,
        addr: *addr,
    };
    // SAFETY: Grant is Copy and read whole.
    live(unsafe { NET_GRANTS.get(key) }).or_else(|| agent_wide(agent_id))
}
