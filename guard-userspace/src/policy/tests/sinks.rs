//! `[[sink]]` tables: accepted shapes and every rejection with its place.

use crate::policy::{
    parse,
    sink::{DEFAULT_KEEP, Format, SinkKind},
};

#[test]
fn several_sinks_at_once() {
    let p = parse(
        "p.toml",
        r#"
[[sink]]
type = "stdout"

[[sink]]
name = "audit"
type = "file"
path = "/var/log/agent-guard/events.jsonl"
max_bytes = 1048576

[[sink]]
type = "unix"
path = "/run/agent-guard/events.sock"

[[sink]]
name = "siem"
type = "syslog"
address = "siem.example.com:6514"
format = "ecs"
queue = 1024
"#,
    )
    .unwrap();
    assert_eq!(p.sinks.len(), 4);
    assert_eq!(p.sinks[0].name, "stdout");
    assert_eq!(
        p.sinks[1].kind,
        SinkKind::File {
            path: "/var/log/agent-guard/events.jsonl".into(),
            max_bytes: 1_048_576,
            keep: DEFAULT_KEEP
        }
    );
    assert_eq!(p.sinks[1].queue, None);
    assert_eq!(p.sinks[2].name, "unix");
    assert_eq!(p.sinks[3].format, Some(Format::Ecs));
    assert_eq!(p.sinks[3].queue, Some(1024));
    assert!(parse("p.toml", "").unwrap().sinks.is_empty());
}

#[track_caller]
fn rejected(text: &str, line: usize, col: usize, needle: &str) {
    let e = parse("p.toml", text).expect_err("must be rejected");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("p.toml:{line}:{col}: ")) && shown.contains(needle),
        "expected p.toml:{line}:{col} mentioning {needle:?}, got: {shown}"
    );
}

#[test]
fn bad_sinks_point_at_the_value() {
    rejected("[[sink]]\ntype = \"kafka\"\n", 2, 8, "unknown sink type");
    rejected("[[sink]]\ntype = \"file\"\n", 2, 8, "needs `path`");
    rejected(
        "[[sink]]\ntype = \"file\"\npath = \"rel.log\"\n",
        3,
        8,
        "absolute",
    );
    rejected(
        "[[sink]]\ntype = \"stdout\"\npath = \"/x\"\n",
        3,
        8,
        "takes no `path`",
    );
    rejected(
        "[[sink]]\ntype = \"tcp\"\naddress = \"nohost\"\n",
        3,
        11,
        "HOST:PORT",
    );
    rejected(
        "[[sink]]\ntype = \"file\"\npath = \"/x\"\nmax_bytes = 10\n",
        4,
        13,
        "at least 4096",
    );
    rejected(
        "[[sink]]\ntype = \"file\"\npath = \"/x\"\nkeep = 0\n",
        4,
        8,
        "keep",
    );
    rejected(
        "[[sink]]\ntype = \"stdout\"\nformat = \"cef\"\n",
        3,
        10,
        "unknown format",
    );
    rejected(
        "[[sink]]\ntype = \"stdout\"\n[[sink]]\ntype = \"stdout\"\n",
        3,
        1,
        "two sinks are named \"stdout\"",
    );
    rejected(
        "[[sink]]\ntype = \"stdout\"\ncolour = 1\n",
        3,
        1,
        "unknown field",
    );
}

#[test]
fn the_default_policys_commented_sinks_are_valid() {
    let text = crate::policy::DEFAULT_POLICY;
    let at = text.find("# Where events go").unwrap();
    let mut uncommented = text[..at].to_owned();
    for line in text[at..].lines() {
        let body = line.strip_prefix("# ").unwrap_or("");
        let key = body.split(" = ").next().unwrap_or("");
        if body == "[[sink]]"
            || (!key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        {
            uncommented.push_str(body);
        }
        uncommented.push('\n');
    }
    let p = parse("default.toml", &uncommented).unwrap();
    assert_eq!(p.sinks.len(), 3, "{uncommented}");
}
