//! A simulator of the kernel's `NET_RULES` lookup, run over the compiled
//! maps: it must agree with the vectors and with the userspace matcher.

use std::net::{IpAddr, Ipv6Addr};

use guard_common::{MAX_PORT_RULES, NET_KEY_AGENT_BITS, NetKey, NetRuleSet, RULE_DEFAULT, Verdict};

use super::matching::vectors_policy;
use crate::policy::vectors::NET_VECTORS;
use crate::policy::{NetPolicy, Policy, compile_net, parse};

type Map = Vec<(u32, NetKey, NetRuleSet)>;

fn key_bytes(k: &NetKey) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..4].copy_from_slice(&k.agent_id);
    out[4..].copy_from_slice(&k.addr);
    out
}

fn bit(bytes: &[u8; 20], i: u32) -> u8 {
    (bytes[(i / 8) as usize] >> (7 - i % 8)) & 1
}

/// Whether the first `len` bits of two keys are equal.
fn prefix_eq(a: &[u8; 20], b: &[u8; 20], len: u32) -> bool {
    let (full, rem) = ((len / 8) as usize, len % 8);
    a[..full] == b[..full] && (rem == 0 || (a[full] ^ b[full]) & (0xff << (8 - rem)) == 0)
}

/// What the kernel does: one longest-prefix match of (agent, address) in the
/// trie, then the first rule whose port range holds the port, else the
/// agent's default. Returns the verdict and rule id (0 = default).
fn simulate(map: &Map, agent_id: u32, default: Verdict, addr: IpAddr, port: u16) -> (Verdict, u32) {
    let v6 = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    let query = key_bytes(&NetKey {
        agent_id: agent_id.to_be_bytes(),
        addr: v6.octets(),
    });
    let hit = map
        .iter()
        .filter(|(len, key, _)| prefix_eq(&key_bytes(key), &query, *len))
        .max_by_key(|(len, _, _)| *len);
    let Some((_, _, set)) = hit else {
        return (default, RULE_DEFAULT);
    };
    for r in &set.rules[..set.count as usize] {
        if (r.lo..=r.hi).contains(&port) {
            return (Verdict::from_raw(r.verdict).unwrap(), r.rule_id);
        }
    }
    (default, RULE_DEFAULT)
}

/// Agent ids chosen so every byte of the id matters to the trie.
fn agent_id(index: usize) -> u32 {
    0x0102_0300 + index as u32
}

/// All agents of a policy in one map, as the daemon loads them.
fn compile_all(p: &Policy) -> Map {
    p.agents
        .iter()
        .enumerate()
        .flat_map(|(i, a)| compile_net(agent_id(i), &a.connect))
        .collect()
}

fn check_well_formed(map: &Map) {
    for (i, (len, key, set)) in map.iter().enumerate() {
        assert!((NET_KEY_AGENT_BITS..=NET_KEY_AGENT_BITS + 128).contains(len));
        let bytes = key_bytes(key);
        assert!(
            (*len..160).all(|b| bit(&bytes, b) == 0),
            "host bits set in entry {i}"
        );
        assert!(set.count >= 1 && set.count as usize <= MAX_PORT_RULES);
        assert_eq!(set._pad, 0);
        for (j, r) in set.rules.iter().enumerate() {
            if j < set.count as usize {
                assert_ne!(r.rule_id, RULE_DEFAULT);
                assert!(Verdict::from_raw(r.verdict).is_some());
                assert!(r.lo <= r.hi);
                assert_eq!(r._pad, [0; 3]);
            } else {
                assert_eq!(
                    *r,
                    Default::default(),
                    "unused slot {j} of entry {i} not zeroed"
                );
            }
        }
        // An LPM trie keeps one value per (prefix length, key).
        assert!(
            !map[..i].iter().any(|(l, k, _)| l == len && k == key),
            "entry {i} duplicated"
        );
    }
}

#[test]
fn net_vectors_kernel_simulator() {
    let p = vectors_policy();
    let map = compile_all(&p);
    check_well_formed(&map);
    for v in NET_VECTORS {
        let (i, agent) = p
            .agents
            .iter()
            .enumerate()
            .find(|(_, a)| a.name == v.agent)
            .unwrap();
        let addr: IpAddr = v.addr.parse().unwrap();
        let (verdict, rule_id) = simulate(&map, agent_id(i), agent.connect.default, addr, v.port);
        assert_eq!(verdict, v.verdict, "{v:?}");
        let text = p.rule_source(rule_id).map(|r| r.text);
        assert_eq!(text.as_deref(), v.rule, "{v:?}");
        // Same rule as the userspace matcher, not just the same verdict.
        let (_, rule) = agent.connect.evaluate(addr, v.port);
        assert_eq!(rule.map_or(RULE_DEFAULT, |r| r.id), rule_id, "{v:?}");
    }
}

#[test]
fn compiled_layout_of_a_chain() {
    let p = vectors_policy();
    let agent = p.agent("v-fallback").unwrap();
    let map = compile_net(0xA1B2_C3D4, &agent.connect);
    // (trie prefix length, address, [(lo, hi, verdict)])
    type Entry = (u32, Ipv6Addr, Vec<(u16, u16, u8)>);
    let summary: Vec<Entry> = map
        .iter()
        .map(|(len, key, set)| {
            assert_eq!(key.agent_id, [0xA1, 0xB2, 0xC3, 0xD4]);
            let rules = set.rules[..set.count as usize]
                .iter()
                .map(|r| (r.lo, r.hi, r.verdict))
                .collect();
            (*len, Ipv6Addr::from(key.addr), rules)
        })
        .collect();
    let mapped = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().to_ipv6_mapped();
    assert_eq!(
        summary,
        vec![
            (32 + 104, mapped("10.0.0.0"), vec![(100, 200, 1)]),
            (
                32 + 112,
                mapped("10.1.0.0"),
                vec![(300, 300, 3), (100, 200, 1)]
            ),
            (
                32 + 120,
                mapped("10.1.2.0"),
                vec![(400, 400, 2), (300, 300, 3), (100, 200, 1)]
            ),
        ]
    );
    // Unix rules stay out of the trie.
    assert!(compile_net(1, &p.agent("v-unix").unwrap().connect).is_empty());
}

/// Deterministic pseudo-random numbers (no dependency needed for this).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.next() as usize % items.len()]
    }
}

fn random_ipv4(rng: &mut Lcg) -> std::net::Ipv4Addr {
    // A small address space so that prefixes nest and collide often.
    std::net::Ipv4Addr::new(
        10,
        rng.pick(&[0, 1, 2, 255]),
        rng.pick(&[0, 1, 128]),
        rng.pick(&[0, 1, 7, 255]),
    )
}

fn random_ipv6(rng: &mut Lcg) -> Ipv6Addr {
    let seg = rng.pick(&[0u16, 1, 0x8000]);
    Ipv6Addr::new(0x2001, 0xdb8, seg, 0, 0, 0, 0, rng.pick(&[0, 1, 0xffff]))
}

fn random_entry(rng: &mut Lcg) -> String {
    let ports = match rng.next() % 4 {
        0 => "*".to_owned(),
        1 => rng.pick(&[22, 80, 443, 8080]).to_string(),
        _ => {
            let lo = rng.pick(&[1u16, 80, 443, 1000]);
            format!("{lo}-{}", lo + rng.pick(&[0, 1, 363, 8000]))
        }
    };
    if rng.next().is_multiple_of(3) {
        let prefix = rng.pick(&[0u8, 16, 32, 33, 48, 64, 127, 128]);
        let addr = crate::policy::net::mask(random_ipv6(rng), prefix);
        format!("[{addr}/{prefix}]:{ports}")
    } else {
        let prefix = rng.pick(&[0u8, 8, 9, 16, 17, 24, 31, 32]);
        let masked = crate::policy::net::mask(random_ipv4(rng).to_ipv6_mapped(), 96 + prefix);
        format!("{}/{prefix}:{ports}", masked.to_ipv4_mapped().unwrap())
    }
}

/// Random policies: the simulator over the compiled map and the userspace
/// matcher pick the same rule for every probe.
#[test]
fn simulator_agrees_with_userspace_on_random_policies() {
    let mut rng = Lcg(0x5eed);
    let ports = [
        0u16, 1, 21, 22, 23, 79, 80, 81, 443, 444, 806, 807, 999, 1000, 8080, 9000, 65535,
    ];
    let mut checked = 0usize;
    for round in 0..300 {
        let mut text = String::new();
        for a in 0..3 {
            let n = rng.next() % 13;
            let entries = |rng: &mut Lcg| {
                (0..n)
                    .map(|_| format!("{:?}", random_entry(rng)))
                    .collect::<Vec<_>>()
            };
            let list = entries(&mut rng);
            let default = rng.pick(&["allow", "ask", "deny"]);
            text.push_str(&format!(
                "[[agent]]\nname = \"r{a}\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"r/{a}\"\n[agent.connect]\ndefault = \"{default}\"\n"
            ));
            for (i, e) in list.iter().enumerate() {
                text.push_str(&format!("{} = [{e}]\n", ["allow", "ask", "deny"][i % 3]));
            }
        }
        // Repeated verdict keys are a TOML error; fold them into arrays instead.
        let text = fold_keys(&text);
        let p =
            parse("random.toml", &text).unwrap_or_else(|e| panic!("round {round}: {e}\n{text}"));
        let map = compile_all(&p);
        check_well_formed(&map);
        for (i, agent) in p.agents.iter().enumerate() {
            let mut probes: Vec<IpAddr> = (0..24)
                .map(|k| {
                    if k % 3 == 0 {
                        IpAddr::V6(random_ipv6(&mut rng))
                    } else {
                        IpAddr::V4(random_ipv4(&mut rng))
                    }
                })
                .collect();
            probes.extend(network_addresses(&agent.connect));
            for addr in probes {
                for &port in &ports {
                    let (verdict, rule) = agent.connect.evaluate(addr, port);
                    let sim = simulate(&map, agent_id(i), agent.connect.default, addr, port);
                    assert_eq!(
                        sim,
                        (verdict, rule.map_or(RULE_DEFAULT, |r| r.id)),
                        "round {round} {addr}:{port}\n{text}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 10_000);
}

/// The first and last address of every rule's network, and the IPv4-mapped
/// spelling of each.
fn network_addresses(net: &NetPolicy) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for r in &net.rules {
        if let crate::policy::NetTarget::Ip { addr, prefix, .. } = r.target {
            let first = u128::from(addr);
            let last = first | u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            for a in [first, last] {
                let a = Ipv6Addr::from(a);
                out.push(IpAddr::V6(a));
                if let Some(v4) = a.to_ipv4_mapped() {
                    out.push(IpAddr::V4(v4));
                }
            }
        }
    }
    out
}

/// Merges repeated `allow = [..]` lines within each table into one array.
fn fold_keys(text: &str) -> String {
    let mut out = String::new();
    let mut lists: Vec<(&str, Vec<&str>)> = Vec::new();
    let flush = |out: &mut String, lists: &mut Vec<(&str, Vec<&str>)>| {
        for (k, items) in lists.drain(..) {
            out.push_str(&format!("{k} = [{}]\n", items.join(", ")));
        }
    };
    for line in text.lines() {
        let verdict_list = ["allow", "ask", "deny"].into_iter().find_map(|k| {
            line.strip_prefix(k)
                .and_then(|r| r.strip_prefix(" = ["))
                .and_then(|r| r.strip_suffix(']'))
                .map(|r| (k, r))
        });
        match verdict_list {
            Some((k, item)) => match lists.iter_mut().find(|(key, _)| *key == k) {
                Some((_, items)) => items.push(item),
                None => lists.push((k, vec![item])),
            },
            None => {
                flush(&mut out, &mut lists);
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    flush(&mut out, &mut lists);
    out
}

#[test]
fn agents_do_not_see_each_others_entries() {
    let text = r#"
[[agent]]
name = "a"
owner = "o"
purpose = "p"
cgroup = "a"
[agent.connect]
allow = ["0.0.0.0/0:*", "[::/0]:*"]

[[agent]]
name = "b"
owner = "o"
purpose = "p"
cgroup = "b"
"#;
    let p = parse("p.toml", text).unwrap();
    let map = compile_all(&p);
    for addr in ["10.0.0.1", "::1", "::ffff:1.2.3.4"] {
        let addr: IpAddr = addr.parse().unwrap();
        assert_eq!(
            simulate(&map, agent_id(0), Verdict::Deny, addr, 80).0,
            Verdict::Allow
        );
        assert_eq!(
            simulate(&map, agent_id(1), Verdict::Deny, addr, 80),
            (Verdict::Deny, RULE_DEFAULT)
        );
    }
}
