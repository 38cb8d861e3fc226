//! `[web]`, `[metrics]` and `[[notify]]`: off by default, loopback unless
//! allowed, and every mistake reported at its FILE:LINE:COL.

use crate::policy::{NotifyEvent, parse};

#[track_caller]
fn rejected(text: &str, line: usize, col: usize, needle: &str) {
    let e = parse("p.toml", text).expect_err("policy should be rejected");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("p.toml:{line}:{col}: ")),
        "expected p.toml:{line}:{col}, got: {shown}"
    );
    assert!(
        shown.contains(needle),
        "{shown:?} does not mention {needle:?}"
    );
}

#[test]
fn off_unless_written() {
    let p = parse("p.toml", "").unwrap();
    assert!(p.web.is_none() && p.metrics.is_none() && p.notify.is_empty());
}

#[test]
fn web() {
    let p = parse(
        "p.toml",
        r#"
[web]
listen = "127.0.0.1:8787"
tokens_file = "/etc/agent-guard/web-tokens"
url = "https://guard.example.com/"
"#,
    )
    .unwrap();
    let web = p.web.unwrap();
    assert_eq!(web.listen.to_string(), "127.0.0.1:8787");
    assert_eq!(web.public_url(), "https://guard.example.com");
    assert_eq!(
        web.tokens_file.to_str(),
        Some("/etc/agent-guard/web-tokens")
    );
}

#[test]
fn metrics() {
    let p = parse("p.toml", "[metrics]\nlisten = \"[::1]:9477\"\n").unwrap();
    assert_eq!(p.metrics.unwrap().listen.to_string(), "[::1]:9477");
    let p = parse(
        "p.toml",
        "[metrics]\nlisten = \"0.0.0.0:9477\"\nallow_remote = true\n",
    )
    .unwrap();
    assert!(p.metrics.is_some());
    rejected(
        "[metrics]\nlisten = \"0.0.0.0:9477\"\n",
        2,
        10,
        "not a loopback address",
    );
    rejected(
        "[web]\nlisten = \"127.0.0.1:1\"\ntokens_file = \"/t\"\n\n[metrics]\nlisten = \"127.0.0.1:1\"\n",
        6,
        10,
        "give each its own port",
    );
}

#[test]
fn remote_only_when_allowed() {
    rejected(
        "[web]\nlisten = \"0.0.0.0:8787\"\ntokens_file = \"/t\"\n",
        2,
        10,
        "not a loopback address; set allow_remote = true",
    );
    let p = parse(
        "p.toml",
        "[web]\nlisten = \"0.0.0.0:8787\"\ntokens_file = \"/t\"\nallow_remote = true\n",
    )
    .unwrap();
    assert!(p.web.is_some());
}

#[test]
fn mistakes_point_at_the_value() {
    rejected(
        "[web]\nlisten = \"localhost\"\ntokens_file = \"/t\"\n",
        2,
        10,
        "address and port",
    );
    rejected(
        "[web]\nlisten = \"127.0.0.1:1\"\ntokens_file = \"t\"\n",
        3,
        15,
        "absolute path",
    );
    rejected(
        "[web]\nlisten = \"127.0.0.1:1\"\ntokens_file = \"/t\"\nurl = \"guard\"\n",
        4,
        7,
        "http:// or https://",
    );
    rejected(
        "[web]\nlisten = \"127.0.0.1:1\"\ntokens_file = \"/t\"\nport = 3\n",
        4,
        1,
        "unknown field `port`",
    );
}

#[test]
fn notify() {
    let p = parse(
        "p.toml",
        r#"
[[notify]]
type = "webhook"
url = "https://pager.example.com/hook"
events = ["held", "decision", "held"]
secret_file = "/etc/agent-guard/webhook.key"

[[notify]]
type = "webhook"
url = "http://127.0.0.1:9000/"
events = ["decision"]
secret_file = "/k"
"#,
    )
    .unwrap();
    assert_eq!(p.notify.len(), 2);
    assert_eq!(p.notify[0].url, "https://pager.example.com/hook");
    assert_eq!(
        p.notify[0].events,
        [NotifyEvent::Held, NotifyEvent::Decision]
    );
    assert_eq!(p.notify[1].events, [NotifyEvent::Decision]);
    assert_eq!(p.notify[1].secret_file.to_str(), Some("/k"));
}

#[test]
fn notify_mistakes() {
    rejected(
        "[[notify]]\ntype = \"email\"\nurl = \"https://x\"\nevents = [\"held\"]\nsecret_file = \"/k\"\n",
        2,
        8,
        "unknown notify type",
    );
    rejected(
        "[[notify]]\ntype = \"webhook\"\nurl = \"ftp://x\"\nevents = [\"held\"]\nsecret_file = \"/k\"\n",
        3,
        7,
        "http:// or https://",
    );
    rejected(
        "[[notify]]\ntype = \"webhook\"\nurl = \"https://x\"\nevents = [\"held\", \"paged\"]\nsecret_file = \"/k\"\n",
        4,
        19,
        "unknown notify event",
    );
    rejected(
        "[[notify]]\ntype = \"webhook\"\nurl = \"https://x\"\nevents = []\nsecret_file = \"/k\"\n",
        4,
        10,
        "at least one",
    );
    rejected(
        "[[notify]]\ntype = \"webhook\"\nurl = \"https://x\"\nevents = [\"held\"]\nsecret_file = \"k\"\n",
        5,
        15,
        "absolute path",
    );
    rejected(
        "[[notify]]\ntype = \"webhook\"\nurl = \"https://x\"\nevents = [\"held\"]\n",
        1,
        1,
        "missing field `secret_file`",
    );
}
