//! Grants: an approval with a scope and a lifetime, so that later `ask`
//! calls it covers pass without a hold. Expiry is checked here against
//! CLOCK_BOOTTIME, so a grant ends on time even with no daemon; the daemon
//! also removes expired and revoked grants.
use aya_ebpf::{helpers::generated::bpf_ktime_get_boot_ns, maps::lpm_trie::Key};
use guard_common::{Grant, NetGrantKey, PathKey};

use crate::maps::{AGENT_GRANTS, NET_GRANTS, PATH_GRANTS};

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
    // SAFETY: Grant is Copy and read whole.
    live(unsafe { AGENT_GRANTS.get(agent_id) })
}

/// A live subtree grant covering the path in `key` (built like the
/// PATH_RULES lookup key), or an agent-wide one.
#[inline(always)]
pub fn for_path(agent_id: u32, key: &Key<PathKey>) -> Option<u32> {
    live(PATH_GRANTS.get(key)).or_else(|| for_agent(agent_id))
}

/// A live grant for this destination (address and port), or an agent-wide one.
#[inline(always)]
pub fn for_destination(agent_id: u32, addr: &[u8; 16], port: u16) -> Option<u32> {
    let key = NetGrantKey {
        agent_id,
        port,
        _pad: 0,
        addr: *addr,
    };
    // SAFETY: Grant is Copy and read whole.
    live(unsafe { NET_GRANTS.get(key) }).or_else(|| for_agent(agent_id))
}
