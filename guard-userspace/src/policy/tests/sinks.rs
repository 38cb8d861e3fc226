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
fn an_otlp_sink_posts_to_the_logs_path_in_v1() {
    let p = parse(
        "p.toml",
        "[[sink]]\ntype = \"otlp\"\nendpoint = \"http://collector:4318\"\n\n\
         [[sink]]\nname = \"b\"\ntype = \"otlp\"\nendpoint = \"https://c.example/otlp/v1/logs\"\n\n\
         [[sink]]\nname = \"c\"\ntype = \"otlp\"\nendpoint = \"http://[::1]:4318/base/\"\nformat = \"v1\"\n",
    )
    .unwrap();
    let urls: Vec<_> = p
        .sinks
        .iter()
        .map(|s| match &s.kind {
            SinkKind::Otlp { url } => (s.name.as_str(), url.as_str(), s.format),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        urls,
        [
            ("otlp", "http://collector:4318/v1/logs", Some(Format::V1)),
            ("b", "https://c.example/otlp/v1/logs", Some(Format::V1)),
            ("c", "http://[::1]:4318/base/v1/logs", Some(Format::V1)),
        ]
    );
}

#[test]
fn bad_otlp_sinks_point_at_the_value() {
    rejected("[[sink]]\ntype = \"otlp\"\n", 2, 8, "needs `endpoint`");
    for (endpoint, needle) in [
        ("collector:4318", "http:// or https://"),
        ("ftp://collector", "http:// or https://"),
        ("http://", "empty host"),
        ("http://c:4318/?x=1", "query or fragment"),
        ("http://u:p@c:4318", "credentials"),
    ] {
        rejected(
            &format!("[[sink]]\ntype = \"otlp\"\nendpoint = \"{endpoint}\"\n"),
            3,
            12,
            needle,
        );
    }
    rejected(
        "[[sink]]\ntype = \"otlp\"\nendpoint = \"http://c\"\nformat = \"ecs\"\n",
        4,
        10,
        "can only be \"v1\"",
    );
    rejected(
        "[[sink]]\ntype = \"otlp\"\nendpoint = \"http://c\"\naddress = \"c:1\"\n",
        4,
        11,
        "takes no `address`",
    );
    rejected(
        "[[sink]]\ntype = \"tcp\"\naddress = \"c:1\"\nendpoint = \"http://c\"\n",
        4,
        12,
        "takes no `endpoint`",
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
    assert_eq!(p.sinks.len(), 4, "{uncommented}");
}
