//! The shared vectors against the real kernel's LPM tries: the maps are
//! created by loading our own eBPF object, filled with the compiled policy,
//! and queried with the same longest-prefix lookup the programs make. Needs
//! root (BPF map creation); without it the test says so and does nothing.
use std::net::IpAddr;

use guard_common::{RULE_DEFAULT, Verdict};

use super::matching::vectors_policy;
use crate::{
    kernel::Kernel,
    policy::{
        compile_net, compile_path, compile_subtree, compile_unix,
        vectors::{NET_VECTORS, PATH_VECTORS, SUBTREE_VECTORS, UNIX_VECTORS},
    },
};

fn kernel_with_vectors() -> Option<(Kernel, crate::policy::Policy)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED kernel map vectors: creating BPF maps needs root (EPERM otherwise)");
        return None;
    }
    let mut kernel = Kernel::load(None).expect("load the eBPF object");
    let p = vectors_policy();
    for (i, agent) in p.agents.iter().enumerate() {
        let id = i as u32 + 1;
        kernel
            .insert_net_rules(&compile_net(id, &agent.connect))
            .unwrap();
        kernel
            .insert_path_rules(&compile_path(id, &agent.delete))
            .unwrap();
        kernel
            .insert_subtree_rules(&compile_subtree(id, &agent.delete))
            .unwrap();
        kernel
            .insert_unix_rules(&compile_unix(id, &agent.connect))
            .unwrap();
    }
    Some((kernel, p))
}

fn agent_index(p: &crate::policy::Policy, name: &str) -> usize {
    p.agents.iter().position(|a| a.name == name).unwrap()
}

#[test]
fn net_vectors_on_kernel_maps() {
    let Some((kernel, p)) = kernel_with_vectors() else {
        return;
    };
    for v in NET_VECTORS {
        let i = agent_index(&p, v.agent);
        let addr = match v.addr.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        let set = kernel.lookup_net(i as u32 + 1, addr.octets()).unwrap();
        // The program's scan: first port range holding the port.
        let found = set.and_then(|s| {
            s.rules[..s.count as usize]
                .iter()
                .find(|r| r.lo <= v.port && v.port <= r.hi)
                .map(|r| (Verdict::from_raw(r.verdict).unwrap(), r.rule_id))
        });
        let (verdict, rule_id) = found.unwrap_or((p.agents[i].connect.default, RULE_DEFAULT));
        assert_eq!(verdict, v.verdict, "{v:?}");
        let text = p.rule_source(rule_id).map(|r| r.text);
        assert_eq!(text.as_deref(), v.rule, "{v:?}");
    }
}

#[test]
fn path_vectors_on_kernel_maps() {
    let Some((kernel, p)) = kernel_with_vectors() else {
        return;
    };
    let mut checked = 0;
    for v in PATH_VECTORS {
        // The kernel only ever sees absolute, canonical paths (bpf_d_path).
        if !v.path.starts_with('/') || v.path.split('/').any(|c| c == "." || c == "..") {
            continue;
        }
        let path = if v.path.len() > 1 {
            v.path.trim_end_matches('/')
        } else {
            v.path
        };
        let i = agent_index(&p, v.agent);
        let (verdict, rule_id) = match kernel.lookup_path(i as u32 + 1, path).unwrap() {
            Some(r) => (Verdict::from_raw(r.verdict).unwrap(), r.rule_id),
            None => (p.agents[i].delete.default, RULE_DEFAULT),
        };
        assert_eq!(verdict, v.verdict, "{v:?}");
        let text = p.rule_source(rule_id).map(|r| r.text);
        assert_eq!(text.as_deref(), v.rule, "{v:?}");
        checked += 1;
    }
    assert!(
        checked * 4 >= PATH_VECTORS.len() * 3,
        "only {checked} of {} rows reached the kernel",
        PATH_VECTORS.len()
    );
}

/// A directory moved by a rename: the kernel takes the stricter of its own
/// rule (PATH_RULES) and the exact-key SUBTREE_RULES entry.
#[test]
fn subtree_vectors_on_kernel_maps() {
    let Some((kernel, p)) = kernel_with_vectors() else {
        return;
    };
    for v in SUBTREE_VECTORS {
        let i = agent_index(&p, v.agent);
        let id = i as u32 + 1;
        let own = match kernel.lookup_path(id, v.path).unwrap() {
            Some(r) => (r.verdict, r.rule_id),
            None => (p.agents[i].delete.default.raw(), RULE_DEFAULT),
        };
        let (verdict, rule_id) = match kernel.lookup_prefix("SUBTREE_RULES", id, v.path).unwrap() {
            Some(below) if below.verdict > own.0 => (below.verdict, below.rule_id),
            _ => own,
        };
        assert_eq!(Verdict::from_raw(verdict), Some(v.verdict), "{v:?}");
        let text = p.rule_source(rule_id).map(|r| r.text);
        assert_eq!(text.as_deref(), v.rule, "{v:?}");
    }
}

#[test]
fn unix_vectors_on_kernel_maps() {
    let Some((kernel, p)) = kernel_with_vectors() else {
        return;
    };
    for v in UNIX_VECTORS {
        let i = agent_index(&p, v.agent);
        let (verdict, rule_id) = match kernel
            .lookup_prefix("UNIX_RULES", i as u32 + 1, v.path)
            .unwrap()
        {
            Some(r) => (Verdict::from_raw(r.verdict).unwrap(), r.rule_id),
            None => (p.agents[i].connect.default, RULE_DEFAULT),
        };
        assert_eq!(verdict, v.verdict, "{v:?}");
        let text = p.rule_source(rule_id).map(|r| r.text);
        assert_eq!(text.as_deref(), v.rule, "{v:?}");
    }
}
