//! Which agents the daemon must refuse to guard where deletes cannot be enforced.
use crate::policy::{parse, unenforceable_deletes};

const POLICY: &str = r#"
[[agent]]
name = "strict"
owner = "o"
purpose = "p"
cgroup = "a/strict"
[agent.delete]
default = "allow"
deny = ["/srv"]

[[agent]]
name = "relaxed"
owner = "o"
purpose = "p"
cgroup = "a/relaxed"
[agent.delete]
default = "deny"
accept_observe_only = true

[[agent]]
name = "shadow"
owner = "o"
purpose = "p"
cgroup = "a/shadow"
mode = "audit"
[agent.delete]
deny = ["/"]

[[agent]]
name = "open"
owner = "o"
purpose = "p"
cgroup = "a/open"
[agent.delete]
default = "allow"
"#;

#[test]
fn only_enforce_agents_with_guarded_deletes_and_no_acceptance() {
    let p = parse("p.toml", POLICY).unwrap();
    assert_eq!(unenforceable_deletes(&p, false, false), vec!["strict"]);
    assert!(unenforceable_deletes(&p, true, false).is_empty());
    assert!(unenforceable_deletes(&p, false, true).is_empty());
}

#[test]
fn accept_observe_only_is_for_delete_tables() {
    let bad = "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"x\"\n[agent.connect]\naccept_observe_only = true\n";
    let err = parse("p.toml", bad).unwrap_err().to_string();
    assert!(err.starts_with("p.toml:7:"), "{err}");
    assert!(err.contains("[agent.delete] only"), "{err}");
}
