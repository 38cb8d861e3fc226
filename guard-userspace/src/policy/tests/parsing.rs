//! Parsing of well-formed policies: the documented example, defaults, ids.

use std::net::{IpAddr, Ipv6Addr};

use guard_common::{Mode, Verdict};

use crate::policy::{
    DEFAULT_POLICY, NetTarget, RuleKind, agent_entry, mode_str, parse, parse_mode, parse_verdict,
    verdict_str,
};

/// The example from the policy documentation, verbatim.
const EXAMPLE: &str = r#"[daemon]
control_socket = "/run/agent-guard/control.sock"   # optional, this default
state_dir = "/var/lib/agent-guard"                   # optional, this default
approval_timeout_secs = 300                          # optional, default 300, must be >0
approvers = { uids = [0], groups = ["oncall"] }      # optional, default uids=[0], groups=[]

[[agent]]
name = "claims-bot"            # required, [A-Za-z0-9_.-]{1,64}, unique
owner = "alice@example.com"    # required, non-empty
purpose = "settle insurance claims"   # required, non-empty
labels = { model = "gpt-5", env = "prod" }   # optional string->string map
cgroup = "agent-guard/claims-bot"   # required, relative to the cgroup2 mount
mode = "enforce"               # "enforce" | "audit" ; default "enforce"

[agent.connect]
default = "deny"               # "allow" | "ask" | "deny"; default "deny"
allow = ["127.0.0.1/32:8080", "10.0.0.0/8:443-444", "[::1]:*", "unix:/run/postgresql/"]
ask = ["[2001:db8::/32]:443"]
deny = ["0.0.0.0/0:*"]

[agent.delete]
default = "allow"
allow = ["/tmp", "/srv/scratch"]
ask = ["/srv/data"]
deny = ["/", "/etc"]
"#;

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn full_example() {
    let p = parse("example.toml", EXAMPLE).unwrap();
    assert_eq!(p.file, "example.toml");
    assert_eq!(
        p.daemon.control_socket.to_str(),
        Some("/run/agent-guard/control.sock")
    );
    assert_eq!(p.daemon.state_dir.to_str(), Some("/var/lib/agent-guard"));
    assert_eq!(p.daemon.approval_timeout_secs, 300);
    assert_eq!(p.daemon.approvers.uids, vec![0]);
    assert_eq!(p.daemon.approvers.groups, vec!["oncall".to_owned()]);

    assert_eq!(p.agents.len(), 1);
    let a = p.agent("claims-bot").unwrap();
    assert!(p.agent("other").is_none());
    assert_eq!(a.owner, "alice@example.com");
    assert_eq!(a.purpose, "settle insurance claims");
    assert_eq!(a.labels.get("model").map(String::as_str), Some("gpt-5"));
    assert_eq!(a.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(a.cgroup, "agent-guard/claims-bot");
    assert_eq!(a.cgroup_level(), 2);
    assert_eq!(a.mode, Mode::Enforce);
    assert_eq!(a.line, 7);

    let c = &a.connect;
    assert_eq!(c.default, Verdict::Deny);
    let summary: Vec<_> = c
        .rules
        .iter()
        .map(|r| (r.id, r.verdict, r.text.as_str(), r.line, r.col))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, Verdict::Allow, "127.0.0.1/32:8080", 17, 10),
            (2, Verdict::Allow, "10.0.0.0/8:443-444", 17, 31),
            (3, Verdict::Allow, "[::1]:*", 17, 53),
            (4, Verdict::Allow, "unix:/run/postgresql/", 17, 64),
            (5, Verdict::Ask, "[2001:db8::/32]:443", 18, 8),
            (6, Verdict::Deny, "0.0.0.0/0:*", 19, 9),
        ]
    );
    let targets: Vec<_> = c.rules.iter().map(|r| r.target.clone()).collect();
    assert_eq!(
        targets,
        vec![
            NetTarget::Ip {
                addr: v6("::ffff:127.0.0.1"),
                prefix: 128,
                lo: 8080,
                hi: 8080,
                v4: true
            },
            NetTarget::Ip {
                addr: v6("::ffff:10.0.0.0"),
                prefix: 104,
                lo: 443,
                hi: 444,
                v4: true
            },
            NetTarget::Ip {
                addr: v6("::1"),
                prefix: 128,
                lo: 0,
                hi: 65535,
                v4: false
            },
            NetTarget::Unix {
                path: "/run/postgresql".to_owned()
            },
            NetTarget::Ip {
                addr: v6("2001:db8::"),
                prefix: 32,
                lo: 443,
                hi: 443,
                v4: false
            },
            NetTarget::Ip {
                addr: v6("::ffff:0.0.0.0"),
                prefix: 96,
                lo: 0,
                hi: 65535,
                v4: true
            },
        ]
    );

    let d = &a.delete;
    assert_eq!(d.default, Verdict::Allow);
    let summary: Vec<_> = d
        .rules
        .iter()
        .map(|r| (r.id, r.verdict, r.prefix.as_str(), r.line))
        .collect();
    assert_eq!(
        summary,
        vec![
            (7, Verdict::Allow, "/tmp", 23),
            (8, Verdict::Allow, "/srv/scratch", 23),
            (9, Verdict::Ask, "/srv/data", 24),
            (10, Verdict::Deny, "/", 25),
            (11, Verdict::Deny, "/etc", 25),
        ]
    );

    // A few decisions of the example.
    assert_eq!(c.evaluate(ip("127.0.0.1"), 8080).0, Verdict::Allow);
    assert_eq!(c.evaluate(ip("10.9.9.9"), 444).1.map(|r| r.id), Some(2));
    assert_eq!(c.evaluate(ip("10.9.9.9"), 445).1.map(|r| r.id), Some(6));
    assert_eq!(c.evaluate(ip("2001:db8::7"), 443).0, Verdict::Ask);
    assert_eq!(c.evaluate(ip("2001:db9::7"), 443), (Verdict::Deny, None));
    assert_eq!(
        c.evaluate_unix("/run/postgresql/.s.PGSQL.5432")
            .1
            .map(|r| r.id),
        Some(4)
    );
    assert_eq!(d.evaluate("/srv/data/claims.db").0, Verdict::Ask);
    assert_eq!(d.evaluate("/srv/database").1.map(|r| r.id), Some(10));
    assert_eq!(d.evaluate("/tmp/x").0, Verdict::Allow);
    assert_eq!(d.evaluate("/etc/hosts").1.map(|r| r.id), Some(11));
}

#[test]
fn rule_source_names_the_entry() {
    let p = parse("example.toml", EXAMPLE).unwrap();
    let r = p.rule_source(5).unwrap();
    assert_eq!(r.id, 5);
    assert_eq!(r.agent, "claims-bot");
    assert_eq!(r.kind, RuleKind::Connect);
    assert_eq!(r.kind.as_str(), "connect");
    assert_eq!(r.verdict, Verdict::Ask);
    assert_eq!(r.text, "[2001:db8::/32]:443");
    assert_eq!(r.source, "example.toml:18");
    let r = p.rule_source(11).unwrap();
    assert_eq!(
        (r.kind, r.text.as_str(), r.source.as_str()),
        (RuleKind::Delete, "/etc", "example.toml:25")
    );
    assert!(p.rule_source(0).is_none());
    assert!(p.rule_source(12).is_none());
}

const MINIMAL: &str = r#"
[[agent]]
name = "m"
owner = "o"
purpose = "p"
cgroup = "m"
"#;

#[test]
fn defaults() {
    let p = parse("m.toml", MINIMAL).unwrap();
    assert_eq!(
        p.daemon.control_socket.to_str(),
        Some("/run/agent-guard/control.sock")
    );
    assert_eq!(p.daemon.state_dir.to_str(), Some("/var/lib/agent-guard"));
    assert_eq!(p.daemon.approval_timeout_secs, 300);
    assert_eq!(p.daemon.approvers.uids, vec![0]);
    assert!(p.daemon.approvers.groups.is_empty());
    assert!(p.daemon.readers.uids.is_empty() && p.daemon.readers.groups.is_empty());
    let a = &p.agents[0];
    assert_eq!(a.line, 2);
    assert_eq!(a.mode, Mode::Enforce);
    assert!(a.labels.is_empty());
    assert_eq!(a.cgroup_level(), 1);
    assert_eq!(
        (a.connect.default, a.connect.rules.len()),
        (Verdict::Deny, 0)
    );
    assert_eq!((a.delete.default, a.delete.rules.len()), (Verdict::Deny, 0));
    assert_eq!(
        a.connect.evaluate(ip("127.0.0.1"), 80),
        (Verdict::Deny, None)
    );
    assert_eq!(a.delete.evaluate("/tmp/x"), (Verdict::Deny, None));

    let e = agent_entry(7, a);
    assert_eq!(
        (
            e.agent_id,
            e.mode,
            e.connect_default,
            e.delete_default,
            e.flags
        ),
        (7, 1, 3, 3, guard_common::AGENT_UNIX_GUARDED)
    );
}

#[test]
fn an_agent_may_set_its_own_approval_timeout() {
    let p = parse(
        "t.toml",
        "[daemon]\napproval_timeout_secs = 120\n\n\
         [[agent]]\nname = \"quick\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"a/quick\"\n\
         approval_timeout_secs = 15\n\n\
         [[agent]]\nname = \"slow\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"a/slow\"\n",
    )
    .unwrap();
    assert_eq!(p.agents[0].approval_timeout_secs, Some(15));
    assert_eq!(p.agents[1].approval_timeout_secs, None);
    let secs = |name| p.approval_timeout(name).as_secs();
    assert_eq!(secs(Some("quick")), 15);
    assert_eq!(secs(Some("slow")), 120, "the daemon's");
    assert_eq!(secs(Some("gone")), 120, "an agent no longer in the policy");
    assert_eq!(secs(None), 120);
}

#[test]
fn the_embedded_demo_agent_decides_its_holds_within_a_minute() {
    let p = parse("default.toml", DEFAULT_POLICY).unwrap();
    assert_eq!(p.approval_timeout(Some("demo")).as_secs(), 60);
    assert_eq!(p.daemon.approval_timeout_secs, 300);
}

#[test]
fn empty_policy_and_partial_daemon() {
    let p = parse("e.toml", "").unwrap();
    assert!(p.agents.is_empty());
    assert_eq!(p.daemon.approval_timeout_secs, 300);

    let p = parse(
        "d.toml",
        "[daemon]\napprovers = { groups = [\"oncall\"] }\napproval_timeout_secs = 5\n",
    )
    .unwrap();
    assert_eq!(p.daemon.approvers.uids, vec![0]);
    assert_eq!(p.daemon.approvers.groups, vec!["oncall".to_owned()]);
    assert_eq!(p.daemon.approval_timeout_secs, 5);
    assert_eq!(
        p.daemon.control_socket.to_str(),
        Some("/run/agent-guard/control.sock")
    );

    let p = parse("d.toml", "[daemon]\napprovers = { uids = [] }\n").unwrap();
    assert!(p.daemon.approvers.uids.is_empty());
}

#[test]
fn on_remove_and_freeze_mode() {
    use crate::policy::RemovePolicy;
    let p = parse("d.toml", "").unwrap();
    assert_eq!(p.daemon.on_remove, RemovePolicy::Unguard);
    let p = parse("d.toml", "[daemon]\non_remove = \"kill\"\n").unwrap();
    assert_eq!(p.daemon.on_remove, RemovePolicy::Kill);
    let p = parse(
        "f.toml",
        "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"x/a\"\nmode = \"freeze\"\n",
    )
    .unwrap();
    assert_eq!(p.agents[0].mode, Mode::Freeze);
}

#[test]
fn ids_follow_file_order_across_tables_and_agents() {
    let text = r#"
[[agent]]
name = "a"
owner = "o"
purpose = "p"
cgroup = "x/a"
mode = "audit"
delete = { deny = ["/etc"] }
[agent.connect]
deny = ["10.0.0.0/8:*"]
allow = ["10.1.0.0/16:443", "[::1]:*"]

[[agent]]
name = "b"
owner = "o"
purpose = "p"
cgroup = "x/b"
[agent.connect]
ask = ["192.0.2.1:22"]
"#;
    let p = parse("ids.toml", text).unwrap();
    let a = &p.agents[0];
    assert_eq!(a.mode, Mode::Audit);
    assert_eq!(
        a.delete.rules.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1]
    );
    let ids: Vec<_> = a
        .connect
        .rules
        .iter()
        .map(|r| (r.id, r.text.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![(2, "10.0.0.0/8:*"), (3, "10.1.0.0/16:443"), (4, "[::1]:*")]
    );
    assert_eq!(p.agents[1].connect.rules[0].id, 5);
    assert_eq!(p.rule_source(5).map(|r| r.agent), Some("b".to_owned()));
    assert_eq!(p.agents[1].line, 13);
}

#[test]
fn unicode_and_inline_agents() {
    let text = "agent = [{ name = \"u\", owner = \"Jürgen\", purpose = \"ü\", cgroup = \"ü/x\", labels = { \"é\" = \"ï\" } }]\n";
    let p = parse("u.toml", text).unwrap();
    let a = &p.agents[0];
    assert_eq!(
        (a.owner.as_str(), a.cgroup.as_str(), a.line),
        ("Jürgen", "ü/x", 1)
    );
    assert_eq!(a.labels.get("é").map(String::as_str), Some("ï"));
}

#[test]
fn default_policy_is_valid_and_does_what_it_says() {
    let p = parse("default.toml", DEFAULT_POLICY).unwrap();
    assert_eq!(p.agents.len(), 1);
    let demo = p.agent("demo").unwrap();
    assert_eq!(demo.owner, "agent-guard demo");
    assert_eq!(demo.cgroup, "agent-guard/demo");
    assert_eq!(demo.mode, Mode::Enforce);
    let c = &demo.connect;
    assert_eq!(c.default, Verdict::Deny);
    assert_eq!(c.evaluate(ip("127.0.0.1"), 9).0, Verdict::Deny);
    assert_eq!(c.evaluate(ip("127.0.0.1"), 8080).0, Verdict::Allow);
    assert_eq!(c.evaluate(ip("::1"), 9).0, Verdict::Allow);
    assert_eq!(c.evaluate(ip("::ffff:127.0.0.1"), 9).0, Verdict::Deny);
    assert_eq!(c.evaluate(ip("127.0.0.2"), 80), (Verdict::Deny, None));
    assert_eq!(c.evaluate(ip("1.1.1.1"), 443), (Verdict::Deny, None));
    for socket in [
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/run/podman/podman.sock",
        "/run/crio/crio.sock",
        "/run/systemd/private",
        "/run/dbus/system_bus_socket",
    ] {
        let (v, rule) = c.evaluate_unix(socket);
        assert_eq!(v, Verdict::Deny, "{socket}");
        assert!(
            rule.is_some(),
            "{socket} is denied by name, not only by default"
        );
    }
    assert!(!demo.allow_mounts && !demo.allow_io_uring);
    let d = &demo.delete;
    assert_eq!(d.default, Verdict::Allow);
    for denied in ["/etc/passwd", "/usr/bin/ls", "/boot/vmlinuz", "/etc"] {
        assert_eq!(d.evaluate(denied).0, Verdict::Deny, "{denied}");
    }
    assert_eq!(d.evaluate("/var/lib/app/db").0, Verdict::Ask);
    assert_eq!(d.evaluate("/var/library").0, Verdict::Allow);
    assert_eq!(d.evaluate("/home/demo/x"), (Verdict::Allow, None));
    assert_eq!(d.evaluate("/tmp/x"), (Verdict::Allow, None));
}

#[test]
fn verdict_and_mode_names_round_trip() {
    for v in Verdict::ALL {
        assert_eq!(parse_verdict(verdict_str(*v)), Some(*v));
    }
    for m in Mode::ALL {
        assert_eq!(parse_mode(mode_str(*m)), Some(*m));
    }
    assert_eq!(parse_verdict("Deny"), None);
    assert_eq!(parse_mode(""), None);
}

#[test]
fn readers_are_nobody_unless_written() {
    let p = parse(
        "r.toml",
        "[daemon]\nreaders = { uids = [1001], groups = [\"audit\"] }\n",
    )
    .unwrap();
    assert_eq!(p.daemon.readers.uids, vec![1001]);
    assert_eq!(p.daemon.readers.groups, vec!["audit".to_owned()]);
    let p = parse("r.toml", "[daemon]\nreaders = { groups = [\"audit\"] }\n").unwrap();
    assert!(
        p.daemon.readers.uids.is_empty(),
        "no uid is a reader by default"
    );
    assert_eq!(p.daemon.approvers.uids, vec![0]);
}
