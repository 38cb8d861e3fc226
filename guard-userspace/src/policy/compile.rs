//! Encoding of a policy into the kernel maps.
//!
//! The kernel does one longest-prefix lookup of (agent id, address) in the
//! `NET_RULES` trie and takes the first rule of the value whose port range
//! holds the port. For that to agree with [`super::NetPolicy::evaluate`],
//! the value stored under each address prefix P holds every rule that could
//! win for an address whose longest prefix is P: P's own rules and those of
//! every shorter prefix containing P, sorted in precedence order.

use std::net::Ipv6Addr;

use guard_common::{
    AgentEntry, MAX_PORT_RULES, NET_KEY_AGENT_BITS, NetKey, NetRuleSet, PATH_KEY_BYTES, PathKey,
    PathRuleValue, PortRule,
};

use super::net::{self, IpRule};
use super::{Agent, NetPolicy, NetRule, NetTarget, PathPolicy};

/// The rules one trie entry needs, in precedence order.
pub(super) struct Chain<'a> {
    /// Host bits zeroed.
    pub addr: Ipv6Addr,
    /// In IPv6 space.
    pub prefix: u8,
    pub rules: Vec<IpRule<'a>>,
}

/// One chain per distinct address prefix of the IP rules, ordered by
/// (prefix length, address). Unix rules are not in the trie.
pub(super) fn chains(net: &NetPolicy) -> Vec<Chain<'_>> {
    let ip: Vec<IpRule<'_>> = net.rules.iter().filter_map(NetRule::ip).collect();
    let mut prefixes: Vec<(u8, Ipv6Addr)> = ip.iter().map(|r| (r.prefix, r.addr)).collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    prefixes
        .into_iter()
        .map(|(prefix, addr)| {
            let mut rules: Vec<IpRule<'_>> = net
                .rules
                .iter()
                .filter_map(NetRule::ip)
                .filter(|r| r.prefix <= prefix && net::covers(r.addr, r.prefix, addr))
                .collect();
            rules.sort_by_key(IpRule::rank);
            Chain {
                addr,
                prefix,
                rules,
            }
        })
        .collect()
}

/// A trie entry that needs more than [`MAX_PORT_RULES`] rules.
pub(super) struct Overflow<'a> {
    /// The rule that, in file order, is one too many for the entry.
    pub rule: &'a NetRule,
    pub needed: usize,
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

/// Finds the first trie entry that would not fit in a [`NetRuleSet`].
pub(super) fn check_capacity(net: &NetPolicy) -> Result<(), Overflow<'_>> {
    for chain in chains(net) {
        if chain.rules.len() > MAX_PORT_RULES {
            let mut in_file_order: Vec<&NetRule> = chain.rules.iter().map(|r| r.rule).collect();
            in_file_order.sort_by_key(|r| (r.line, r.col, r.id));
            if let Some(rule) = in_file_order.get(MAX_PORT_RULES) {
                return Err(Overflow {
                    rule,
                    needed: chain.rules.len(),
                    addr: chain.addr,
                    prefix: chain.prefix,
                });
            }
        }
    }
    Ok(())
}

/// The `NET_RULES` entries for one agent: (trie prefix length in bits, key,
/// value). The prefix length counts the agent-id bits; key bits past it are
/// zero.
///
/// A policy from [`super::parse`] never needs more than [`MAX_PORT_RULES`]
/// rules per entry. For a hand-built one that does, only the first
/// `MAX_PORT_RULES` in precedence order are kept.
pub fn compile_net(agent_id: u32, net: &NetPolicy) -> Vec<(u32, NetKey, NetRuleSet)> {
    chains(net)
        .into_iter()
        .map(|chain| {
            let key = NetKey {
                agent_id: agent_id.to_be_bytes(),
                addr: chain.addr.octets(),
            };
            let mut set = NetRuleSet::default();
            for (slot, r) in set.rules.iter_mut().zip(&chain.rules) {
                *slot = PortRule {
                    lo: r.lo,
                    hi: r.hi,
                    rule_id: r.rule.id,
                    verdict: r.rule.verdict.raw(),
                    _pad: [0; 3],
                };
                set.count += 1;
            }
            (NET_KEY_AGENT_BITS + u32::from(chain.prefix), key, set)
        })
        .collect()
}

/// The `AGENTS` map value for an agent.
pub fn agent_entry(agent_id: u32, agent: &Agent) -> AgentEntry {
    AgentEntry {
        agent_id,
        mode: agent.mode.raw(),
        connect_default: agent.connect.default.raw(),
        delete_default: agent.delete.default.raw(),
        flags: agent_flags(agent),
    }
}

/// The AGENT_* bits of an agent's entry.
fn agent_flags(agent: &Agent) -> u8 {
    let mut flags = 0;
    if agent.allow_mounts {
        flags |= guard_common::AGENT_ALLOW_MOUNTS;
    }
    let unix_refusable = agent.connect.default != guard_common::Verdict::Allow
        || agent.connect.rules.iter().any(|r| {
            matches!(r.target, NetTarget::Unix { .. }) && r.verdict != guard_common::Verdict::Allow
        });
    if unix_refusable {
        flags |= guard_common::AGENT_UNIX_GUARDED;
    }
    flags
}

/// The LPM key of a path prefix for `agent_id`, as PATH_RULES, PATH_GRANTS
/// and the LSM programs' lookups use it: the prefix with a '/' after its last
/// component (root stays "/"), so a prefix only matches whole components.
/// normalize_abs bounds prefixes to PATH_KEY_BYTES - 1 bytes; the '/' brings
/// it to at most PATH_KEY_BYTES.
pub fn path_key(agent_id: u32, prefix: &str) -> (u32, PathKey) {
    let mut text = prefix.to_owned();
    if !text.ends_with('/') {
        text.push('/');
    }
    let len = text.len().min(PATH_KEY_BYTES);
    let mut key = PathKey {
        agent_id: agent_id.to_be_bytes(),
        ..PathKey::default()
    };
    key.path[..len].copy_from_slice(&text.as_bytes()[..len]);
    (NET_KEY_AGENT_BITS + (len as u32) * 8, key)
}

/// The `PATH_RULES` trie entries of one agent: (prefix length in bits, key,
/// value). Each prefix is stored with a '/' after its last component ("/srv/
/// data/", root as "/") and the kernel looks up "<path>/", so a prefix only
/// matches whole components. Several rules on the same prefix collapse to the
/// most severe (deny > ask > allow), as [`PathPolicy::evaluate`] decides ties.
pub fn compile_path(agent_id: u32, paths: &PathPolicy) -> Vec<(u32, PathKey, PathRuleValue)> {
    prefix_entries(
        agent_id,
        paths
            .rules
            .iter()
            .map(|r| (r.prefix.as_str(), r.id, r.verdict)),
    )
}

/// The `UNIX_RULES` trie entries of one agent, keyed like PATH_RULES:
/// "/run/docker.sock/", or "@name/" for an abstract socket name.
pub fn compile_unix(agent_id: u32, net: &NetPolicy) -> Vec<(u32, PathKey, PathRuleValue)> {
    prefix_entries(
        agent_id,
        net.rules.iter().filter_map(|r| match &r.target {
            NetTarget::Unix { path } => Some((path.as_str(), r.id, r.verdict)),
            NetTarget::Ip { .. } => None,
        }),
    )
}

/// The `SUBTREE_RULES` trie entries of one agent: under each proper
/// ancestor directory of a rule that is not `allow`, the strictest such
/// rule below it (deny > ask, then the lowest id), as
/// [`PathPolicy::evaluate_subtree`] decides. Keys end in a NUL after the
/// directory's '/', so the kernel's lookup only ever matches the exact
/// directory it moves.
pub fn compile_subtree(agent_id: u32, paths: &PathPolicy) -> Vec<(u32, PathKey, PathRuleValue)> {
    let mut out: Vec<(u32, PathKey, PathRuleValue)> = Vec::new();
    let mut rules: Vec<_> = paths
        .rules
        .iter()
        .filter(|r| r.verdict > guard_common::Verdict::Allow)
        .collect();
    // Strictest first, then lowest id: the first to claim a directory wins.
    rules.sort_by_key(|r| (std::cmp::Reverse(r.verdict), r.id));
    for rule in rules {
        let components: Vec<&str> = rule.prefix.split('/').filter(|c| !c.is_empty()).collect();
        for depth in 0..components.len() {
            let dir = format!("/{}", components[..depth].join("/"));
            let (prefix_len, mut key) = path_key(agent_id, &dir);
            let used = ((prefix_len - NET_KEY_AGENT_BITS) / 8) as usize;
            // path_key leaves the byte after the '/' zero: the NUL is part of
            // the key, one byte more of prefix.
            if used >= PATH_KEY_BYTES {
                continue;
            }
            key.path[used] = 0;
            let prefix_len = prefix_len + 8;
            if out.iter().any(|(p, k, _)| *p == prefix_len && *k == key) {
                continue;
            }
            let value = PathRuleValue {
                rule_id: rule.id,
                verdict: rule.verdict.raw(),
                _pad: [0; 3],
            };
            out.push((prefix_len, key, value));
        }
    }
    out
}

/// LPM entries for (prefix text, rule id, verdict) triples: a '/' after
/// the last component, several rules on one prefix collapsed to the most
/// severe.
fn prefix_entries<'a>(
    agent_id: u32,
    rules: impl Iterator<Item = (&'a str, u32, guard_common::Verdict)>,
) -> Vec<(u32, PathKey, PathRuleValue)> {
    let mut out: Vec<(u32, PathKey, PathRuleValue)> = Vec::new();
    for (prefix, rule_id, verdict) in rules {
        let (prefix_len, key) = path_key(agent_id, prefix);
        let value = PathRuleValue {
            rule_id,
            verdict: verdict.raw(),
            _pad: [0; 3],
        };
        match out
            .iter_mut()
            .find(|(p, k, _)| *p == prefix_len && *k == key)
        {
            Some((_, _, existing)) if existing.verdict < value.verdict => *existing = value,
            Some(_) => {}
            None => out.push((prefix_len, key, value)),
        }
    }
    out
}
