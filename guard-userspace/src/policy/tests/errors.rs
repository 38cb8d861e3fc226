//! Every rejected policy, with the exact `FILE:LINE:COL` of the report.

use crate::policy::{PolicyError, load, parse};

/// Lines 1-5 of most cases: a valid agent to which a test appends lines.
const HEAD: &str = "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"g/a\"\n";

#[track_caller]
pub(super) fn check(text: &str, line: usize, col: usize, needle: &str) -> PolicyError {
    let e = parse("p.toml", text).expect_err("policy should be rejected");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("p.toml:{line}:{col}: ")),
        "expected p.toml:{line}:{col}, got: {shown}"
    );
    assert_eq!((e.line(), e.col()), (Some(line), Some(col)));
    assert!(
        e.message().contains(needle),
        "{shown:?} does not mention {needle:?}"
    );
    e
}

/// HEAD plus `[agent.connect]` (line 6) plus `line` (line 7).
#[track_caller]
fn connect(line: &str, col: usize, needle: &str) {
    check(&format!("{HEAD}[agent.connect]\n{line}\n"), 7, col, needle);
}

#[test]
fn on_remove_must_be_kill_or_unguard() {
    check(
        "[daemon]\non_remove = \"pause\"\n",
        2,
        13,
        "on_remove must be",
    );
}

#[test]
fn unknown_keys() {
    check(
        &format!("{HEAD}colour = \"red\"\n"),
        6,
        1,
        "unknown field `colour`",
    );
    check(
        "[daemon]\nsocket = \"/x\"\n",
        2,
        1,
        "unknown field `socket`",
    );
    connect("defualt = \"deny\"", 1, "unknown field `defualt`");
    check(
        &format!("{HEAD}delete = {{ deny = [\"/\"], maybe = [] }}\n"),
        6,
        26,
        "unknown field `maybe`",
    );
    check("[[agents]]\nname = \"a\"\n", 1, 3, "unknown field `agents`");
    check(
        "[daemon]\napprovers = { users = [1] }\n",
        2,
        15,
        "unknown field `users`",
    );
}

#[test]
fn syntax_and_type_errors() {
    check(&format!("{HEAD}mode = enforce\n"), 6, 8, "");
    check(
        &format!("{HEAD}[agent.connect]\nallow = [\"10.0.0.0/8:*\", 443]\n"),
        7,
        26,
        "invalid type",
    );
    check(
        &format!("{HEAD}labels = {{ \"é\" = \"x\", k = 1 }}\n"),
        6,
        27,
        "invalid type",
    );
    check("[daemon]\napproval_timeout_secs = -1\n", 2, 25, "");
    check(&format!("{HEAD}name = \"b\"\n"), 6, 1, "duplicate key");
}

#[test]
fn table_shape_mistakes() {
    check(
        "[agent]\nname = \"a\"\n",
        1,
        1,
        "not a single [agent] table",
    );
    check(
        &format!("{HEAD}connect = 5\n"),
        6,
        11,
        "expected a table of default, allow, ask and deny",
    );
    connect("allow = \"10.0.0.0/8:*\"", 9, "expected a sequence");
}

#[test]
fn errors_come_in_file_order() {
    // The duplicate name (line 8) is reported, not the bad entry after it.
    let text = format!(
        "{HEAD}\n[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"g/b\"\n\
         [agent.connect]\nallow = [\"bogus\"]\n"
    );
    check(&text, 8, 8, "duplicate agent name");
}

#[test]
fn missing_required_fields() {
    check(
        "[[agent]]\nname = \"a\"\npurpose = \"p\"\ncgroup = \"a\"\n",
        1,
        1,
        "missing field `owner`",
    );
    check(
        &format!("{HEAD}\n[[agent]]\nname = \"b\"\nowner = \"o\"\npurpose = \"p\"\n"),
        7,
        1,
        "missing field `cgroup`",
    );
    check(
        "agent = [{ name = \"a\", owner = \"o\", cgroup = \"a\" }]\n",
        1,
        10,
        "missing field `purpose`",
    );
}

#[test]
fn bad_addresses() {
    connect(
        "allow = [\"10.0.0.300/8:443\"]",
        10,
        "invalid IPv4 address \"10.0.0.300\"",
    );
    connect(
        "allow = [\"10.0.0.0/33:443\"]",
        10,
        "invalid prefix length \"33\"",
    );
    connect("allow = [\"10.0.0.0/:443\"]", 10, "missing prefix length");
    connect("allow = [\"10.0.0.0/x:443\"]", 10, "invalid prefix length");
    connect(
        "ask = [\"10.0.0.1/8:443\"]",
        8,
        "host bits set in 10.0.0.1/8; did you mean 10.0.0.0/8?",
    );
    connect(
        "deny = [\"[2001:db8::1/32]:443\"]",
        9,
        "did you mean [2001:db8::/32]?",
    );
    connect("deny = [\"[2001:db8::/129]:443\"]", 9, "must be 0-128");
    connect("deny = [\"[2001:zz8::]:443\"]", 9, "invalid IPv6 address");
    connect(
        "deny = [\"[10.0.0.1]:443\"]",
        9,
        "IPv4 addresses are written without brackets",
    );
    connect("deny = [\"[2001:db8::/32:443\"]", 9, "missing ']'");
    connect("deny = [\"[2001:db8::/32]443\"]", 9, "missing \":PORTS\"");
    connect("deny = [\"10.0.0.0/8\"]", 9, "missing port");
    connect("deny = [\"example.com\"]", 9, "cannot parse");
    connect("deny = [\"unix:\"]", 9, "empty unix socket path");
    connect("deny = [\"unix:run/x\"]", 9, "not absolute");
    // The second entry of a line is pointed at, not the first.
    connect(
        "allow = [\"127.0.0.1:80\", \"10.0.0.1/8:443\"]",
        26,
        "host bits set",
    );
}

#[test]
fn ipv6_without_brackets() {
    connect(
        "allow = [\"2001:db8::1:443\"]",
        10,
        "IPv6 addresses must be in brackets",
    );
    connect("allow = [\"::1:80\"]", 10, "must be in brackets");
    connect("allow = [\"2001:db8::/32\"]", 10, "must be in brackets");
}

#[test]
fn bad_ports() {
    connect(
        "allow = [\"10.0.0.0/8:443-80\"]",
        10,
        "port range 443-80 is upside down; did you mean 80-443?",
    );
    connect(
        "allow = [\"10.0.0.0/8:0\"]",
        10,
        "port 0 is not a valid connect target",
    );
    connect(
        "allow = [\"10.0.0.0/8:0-80\"]",
        10,
        "port 0 is not a valid connect target",
    );
    connect(
        "allow = [\"10.0.0.0/8:65536\"]",
        10,
        "port 65536 is out of range",
    );
    connect(
        "allow = [\"[::1]:80-99999999999999999999\"]",
        10,
        "out of range",
    );
    connect("allow = [\"10.0.0.0/8:\"]", 10, "missing port");
    connect("allow = [\"10.0.0.0/8:+80\"]", 10, "invalid port \"+80\"");
    connect("allow = [\"10.0.0.0/8:80-\"]", 10, "invalid port \"\"");
    connect("allow = [\"10.0.0.0/8:http\"]", 10, "invalid port");
}

#[test]
fn duplicate_agent_name_points_at_the_second() {
    let text = format!(
        "{HEAD}\n[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"g/b\"\n"
    );
    check(
        &text,
        8,
        8,
        "duplicate agent name \"a\" (first defined at line 2)",
    );
}

#[test]
fn overlapping_cgroups() {
    for (second, needle) in [
        ("g/a", "overlaps agent \"a\""),
        ("g", "\"g\" overlaps"),
        ("g/a/sub", "(line 5)"),
    ] {
        let text = format!(
            "{HEAD}\n[[agent]]\nname = \"b\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"{second}\"\n"
        );
        check(&text, 11, 10, needle);
    }
    // Component-wise: "g/a" and "g/ab" are siblings.
    let text = format!(
        "{HEAD}\n[[agent]]\nname = \"b\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"g/ab\"\n"
    );
    assert!(parse("p.toml", &text).is_ok());
}

#[test]
fn bad_agent_fields() {
    check(
        "[[agent]]\nname = \"a b\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"a\"\n",
        2,
        8,
        "invalid agent name \"a b\"",
    );
    check(
        "[[agent]]\nname = \"\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"a\"\n",
        2,
        8,
        "invalid agent name",
    );
    let long = "x".repeat(65);
    check(
        &format!("[[agent]]\nname = \"{long}\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"a\"\n"),
        2,
        8,
        "1-64",
    );
    check(
        "[[agent]]\nname = \"a\"\nowner = \" \"\npurpose = \"p\"\ncgroup = \"a\"\n",
        3,
        9,
        "owner must not be empty",
    );
    check(
        "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"\"\ncgroup = \"a\"\n",
        4,
        11,
        "purpose must not be empty",
    );
    check(
        "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"/sys/fs/cgroup/a\"\n",
        5,
        10,
        "must be relative",
    );
    check(
        "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"a//b\"\n",
        5,
        10,
        "empty component",
    );
    check(
        "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"a/\"\n",
        5,
        10,
        "empty component",
    );
    check(
        "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"a/../b\"\n",
        5,
        10,
        "\"..\" component",
    );
    check(
        "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"\"\n",
        5,
        10,
        "cgroup path is empty",
    );
    let deep = vec!["d"; 64].join("/");
    check(
        &format!("[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"{deep}\"\n"),
        5,
        10,
        "64 levels deep",
    );
}

#[test]
fn bad_mode_and_verdict_strings() {
    check(
        &format!("{HEAD}mode = \"enforcing\"\n"),
        6,
        8,
        "unknown mode \"enforcing\"; expected \"enforce\" or \"audit\"",
    );
    connect("default = \"maybe\"", 11, "unknown verdict \"maybe\"");
    check(
        &format!("{HEAD}[agent.delete]\ndefault = \"Allow\"\n"),
        7,
        11,
        "unknown verdict \"Allow\"",
    );
}

#[test]
fn bad_delete_paths() {
    let delete =
        |line: &str, col, needle| check(&format!("{HEAD}[agent.delete]\n{line}\n"), 7, col, needle);
    delete("allow = [\"tmp\"]", 10, "not absolute");
    delete(
        "allow = [\"/tmp\", \"srv/data\"]",
        18,
        "\"srv/data\" is not absolute",
    );
    delete("deny = [\"\"]", 9, "path is empty");
    delete("deny = [\"/srv/../etc\"]", 9, "\"..\" component");
    delete("deny = [\"/srv/./data\"]", 9, "\".\" component");
}

#[test]
fn bad_daemon_settings() {
    check(
        "[daemon]\napproval_timeout_secs = 0\n",
        2,
        25,
        "must be greater than 0",
    );
    check(
        "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"a\"\n\
         approval_timeout_secs = 0\n",
        6,
        25,
        "must be greater than 0",
    );
    check(
        "[daemon]\ncontrol_socket = \"guard.sock\"\n",
        2,
        18,
        "control_socket must be an absolute path",
    );
    check(
        "\n[daemon]\nstate_dir = \"\"\n",
        3,
        13,
        "state_dir must be an absolute path",
    );
    check(
        "[daemon]\napprovers = { groups = [\"ops\", \"\"] }\n",
        2,
        32,
        "group name is empty",
    );
    check("[daemon]\napprovers = { uids = [-1] }\n", 2, 23, "");
}

#[test]
fn too_many_port_rules_for_one_prefix() {
    let entries = |net: &str, range: std::ops::RangeInclusive<u32>| {
        range
            .map(|p| format!("\"{net}:{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Exactly MAX_PORT_RULES fit.
    let ok = format!(
        "{HEAD}[agent.connect]\nallow = [{}]\n",
        entries("10.0.0.0/8", 1..=16)
    );
    assert!(parse("p.toml", &ok).is_ok());
    // One more, on one prefix: the 17th entry is reported.
    let text = format!(
        "{HEAD}[agent.connect]\nallow = [\n{}\n]\ndeny = [\"10.0.0.0/8:17\"]\n",
        entries("10.0.0.0/8", 1..=16)
    );
    check(&text, 10, 9, "connects to 10.0.0.0/8 need 17 port rules");
    // Across a prefix chain: 8 at /8 plus 9 at /16 is 17 for 10.1.0.0/16,
    // though neither prefix alone has too many.
    let text = format!(
        "{HEAD}[agent.connect]\nallow = [{}]\ndeny = [\n{}\n]\n",
        entries("10.0.0.0/8", 1..=8),
        entries("10.1.0.0/16", 101..=109)
    );
    let e = check(&text, 9, 153, "connects to 10.1.0.0/16 need 17 port rules");
    assert!(e.message().contains("at most 16"), "{e}");
    // Sibling prefixes do not add up.
    let text = format!(
        "{HEAD}[agent.connect]\nallow = [{}]\ndeny = [{}]\n",
        entries("10.1.0.0/16", 1..=16),
        entries("10.2.0.0/16", 1..=16)
    );
    assert!(parse("p.toml", &text).is_ok());
}

#[test]
fn read_errors_name_the_file() {
    let e = load(std::path::Path::new("/nonexistent/agent-guard/policy.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/agent-guard/policy.toml: cannot read: "),
        "{e}"
    );
    assert_eq!(e.line(), None);
}

#[test]
fn load_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("agent-guard-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.toml");
    std::fs::write(&file, format!("{HEAD}mode = \"bogus\"\n")).unwrap();
    let e = load(&file).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:6:8: unknown mode \"bogus\"; expected \"enforce\" or \"audit\"",
            file.display()
        )
    );
    std::fs::write(&file, HEAD).unwrap();
    assert_eq!(load(&file).unwrap().file, file.display().to_string());
    std::fs::remove_dir_all(&dir).unwrap();
}
