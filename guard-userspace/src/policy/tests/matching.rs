//! The userspace matchers against the shared vectors, and the path helpers.

use std::net::IpAddr;

use crate::policy::path::{cgroups_overlap, normalize_abs, validate_cgroup};
use crate::policy::vectors::{
    NET_VECTORS, PATH_VECTORS, POLICY, POLICY_FILE, SUBTREE_VECTORS, UNIX_VECTORS,
};
use crate::policy::{Policy, parse};

pub(super) fn vectors_policy() -> Policy {
    parse(POLICY_FILE, POLICY).unwrap()
}

#[test]
fn net_vectors_userspace() {
    let p = vectors_policy();
    for v in NET_VECTORS {
        let agent = p.agent(v.agent).unwrap();
        let addr: IpAddr = v.addr.parse().unwrap();
        let (verdict, rule) = agent.connect.evaluate(addr, v.port);
        assert_eq!(verdict, v.verdict, "{v:?}");
        assert_eq!(rule.map(|r| r.text.as_str()), v.rule, "{v:?}");
        if let Some(r) = rule {
            assert_eq!(r.verdict, verdict, "{v:?}");
        }
    }
}

#[test]
fn unix_vectors_userspace() {
    let p = vectors_policy();
    for v in UNIX_VECTORS {
        let (verdict, rule) = p.agent(v.agent).unwrap().connect.evaluate_unix(v.path);
        assert_eq!(
            (verdict, rule.map(|r| r.text.as_str())),
            (v.verdict, v.rule),
            "{v:?}"
        );
    }
}

#[test]
fn path_vectors_userspace() {
    let p = vectors_policy();
    for v in PATH_VECTORS {
        let (verdict, rule) = p.agent(v.agent).unwrap().delete.evaluate(v.path);
        assert_eq!(
            (verdict, rule.map(|r| r.text.as_str())),
            (v.verdict, v.rule),
            "{v:?}"
        );
    }
}

#[test]
fn subtree_vectors_userspace() {
    let p = vectors_policy();
    for v in SUBTREE_VECTORS {
        let (verdict, rule) = p.agent(v.agent).unwrap().delete.evaluate_subtree(v.path);
        assert_eq!(
            (verdict, rule.map(|r| r.text.as_str())),
            (v.verdict, v.rule),
            "{v:?}"
        );
    }
}

#[test]
fn every_vector_agent_is_exercised() {
    let p = vectors_policy();
    for a in &p.agents {
        let used = NET_VECTORS.iter().any(|v| v.agent == a.name)
            || UNIX_VECTORS.iter().any(|v| v.agent == a.name)
            || PATH_VECTORS.iter().any(|v| v.agent == a.name);
        assert!(used, "agent {} has no vectors", a.name);
    }
}

#[test]
fn path_normalization() {
    assert_eq!(normalize_abs("/srv//data/").as_deref(), Ok("/srv/data"));
    assert_eq!(normalize_abs("/").as_deref(), Ok("/"));
    assert_eq!(normalize_abs("///").as_deref(), Ok("/"));
    assert_eq!(normalize_abs("/a.b/..c/.d").as_deref(), Ok("/a.b/..c/.d"));
    assert!(normalize_abs("").is_err());
    assert!(normalize_abs("srv").is_err());
    assert!(normalize_abs("/a/./b").is_err());
    assert!(normalize_abs("/a/..").is_err());
    assert!(normalize_abs("/a\0b").is_err());
}

#[test]
fn component_wise_path_matching() {
    let text = r#"
[[agent]]
name = "a"
owner = "o"
purpose = "p"
cgroup = "a"
[agent.delete]
default = "allow"
deny = ["/srv/data/"]
"#;
    let p = parse("p.toml", text).unwrap();
    let d = &p.agents[0].delete;
    assert_eq!(d.rules[0].prefix, "/srv/data");
    assert_eq!(d.rules[0].text, "/srv/data/");
    for denied in [
        "/srv/data",
        "/srv/data/",
        "/srv/data/x",
        "//srv///data/x/y",
        "/srv/x/../data/y",
    ] {
        assert_eq!(d.evaluate(denied).1.map(|r| r.id), Some(1), "{denied}");
    }
    for allowed in [
        "/srv/database",
        "/srv/dat",
        "/srv",
        "/",
        "/srv/data/../database",
        "srv/data",
    ] {
        assert_eq!(d.evaluate(allowed).1, None, "{allowed}");
    }
}

#[test]
fn cgroup_paths() {
    assert!(validate_cgroup("a").is_ok());
    assert!(validate_cgroup("agent-guard/x.y").is_ok());
    for bad in ["", "/a", "a/", "a//b", ".", "a/.", "../a", "a\0"] {
        assert!(validate_cgroup(bad).is_err(), "{bad:?}");
    }
    assert!(cgroups_overlap("a/b", "a/b"));
    assert!(cgroups_overlap("a", "a/b"));
    assert!(cgroups_overlap("a/b/c", "a/b"));
    assert!(!cgroups_overlap("a/b", "a/bc"));
    assert!(!cgroups_overlap("a/b", "a/c/b"));
    assert!(!cgroups_overlap("x", "y"));
}
