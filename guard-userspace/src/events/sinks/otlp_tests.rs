//! The mapping of events to OTLP log records, checked on the decoded wire
//! form (what a collector sees).
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;

use super::*;

fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a V> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn s(v: &str) -> V {
    V::StringValue(v.into())
}

const HELD: &str = r#"{"schema":"agent-guard/v2","seq":7,"time":"2026-11-24T07:00:00.000000001Z","host":"web1","kind":"file.unlink","outcome":"held","agent":{"name":"bot","owner":"o@example.com","labels":{"team":"data"},"session":null},"process":{"pid":4242,"ppid":4200,"uid":0,"user":"root","comm":"rm","exe":"/usr/bin/rm","cmdline":["rm","-rf","/srv/data/my dir"]},"rule":{"verdict":"ask","match":"/srv/data","source":"p.toml:12"},"target":{"path":"/srv/data/my dir","path_truncated":false},"hold":{"id":"h-1","timeout_secs":300},"ocsf":{"class_uid":1001},"chain":{"hash":"abc"}}
"#;

#[test]
fn a_held_delete_maps_to_a_warn_record_with_semantic_attributes() {
    let req = request(resource("web1"), vec![record(HELD.as_bytes(), 5)]);
    // Through the wire, as the collector decodes it.
    let req = ExportLogsServiceRequest::decode(req.encode_to_vec().as_slice()).expect("decodes");
    let rl = &req.resource_logs[0];
    let res = &rl.resource.as_ref().expect("resource").attributes;
    assert_eq!(attr(res, "service.name"), Some(&s("agent-guard")));
    assert_eq!(attr(res, "host.name"), Some(&s("web1")));
    let r = &rl.scope_logs[0].log_records[0];
    assert_eq!(r.time_unix_nano, 1_795_503_600_000_000_001);
    assert_eq!(r.observed_time_unix_nano, 5);
    assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(r.severity_text, "WARN");
    assert_eq!(r.event_name, "file.unlink");
    assert_eq!(
        r.body.as_ref().and_then(|b| b.value.clone()),
        Some(s(HELD.trim_end()))
    );
    let a = &r.attributes;
    assert_eq!(attr(a, "gen_ai.agent.name"), Some(&s("bot")));
    assert_eq!(attr(a, "process.pid"), Some(&V::IntValue(4242)));
    assert_eq!(attr(a, "process.parent_pid"), Some(&V::IntValue(4200)));
    assert_eq!(
        attr(a, "process.command_line"),
        Some(&s("rm -rf '/srv/data/my dir'"))
    );
    assert_eq!(attr(a, "process.executable.path"), Some(&s("/usr/bin/rm")));
    assert_eq!(attr(a, "user.name"), Some(&s("root")));
    assert_eq!(attr(a, "user.id"), Some(&s("0")));
    assert_eq!(attr(a, "file.path"), Some(&s("/srv/data/my dir")));
    assert_eq!(attr(a, "server.address"), None);
    // The event's own members, nulls and the classification left out.
    assert_eq!(attr(a, "agent_guard.kind"), Some(&s("file.unlink")));
    assert_eq!(attr(a, "agent_guard.outcome"), Some(&s("held")));
    assert_eq!(attr(a, "agent_guard.seq"), Some(&V::IntValue(7)));
    assert_eq!(attr(a, "agent_guard.hold.id"), Some(&s("h-1")));
    assert_eq!(attr(a, "agent_guard.rule.match"), Some(&s("/srv/data")));
    assert_eq!(attr(a, "agent_guard.agent.labels.team"), Some(&s("data")));
    assert_eq!(
        attr(a, "agent_guard.target.path_truncated"),
        Some(&V::BoolValue(false))
    );
    assert_eq!(attr(a, "agent_guard.chain.hash"), Some(&s("abc")));
    match attr(a, "agent_guard.process.cmdline") {
        Some(V::ArrayValue(arr)) => assert_eq!(arr.values.len(), 3),
        other => panic!("cmdline as an array, got {other:?}"),
    }
    for absent in [
        "agent_guard.agent.session",
        "agent_guard.ocsf.class_uid",
        "agent_guard.host",
        "agent_guard.time",
    ] {
        assert_eq!(attr(a, absent), None, "{absent}");
    }
}

#[test]
fn a_connect_names_the_server_and_an_allowed_call_is_info() {
    let line = br#"{"kind":"net.connect","outcome":"allowed","time":"bad","agent":{"name":"bot"},"target":{"family":"ipv6","address":"::1","port":443}}"#;
    let r = record(line, 0);
    assert_eq!(r.severity_number, SeverityNumber::Info as i32);
    assert_eq!(r.time_unix_nano, 0, "an unreadable time is left unset");
    assert_eq!(attr(&r.attributes, "server.address"), Some(&s("::1")));
    assert_eq!(attr(&r.attributes, "server.port"), Some(&V::IntValue(443)));
    assert_eq!(attr(&r.attributes, "network.type"), Some(&s("ipv6")));
    assert_eq!(attr(&r.attributes, "file.path"), None);
    for (kind, outcome) in [
        ("net.connect", "denied"),
        ("loss", "lost"),
        ("policy.reload", "failure"),
        ("guard.tamper", "denied"),
        ("agent.escape", "denied"),
    ] {
        let (n, _) = severity(kind, outcome);
        assert_eq!(n, SeverityNumber::Warn, "{kind} {outcome}");
    }
    assert_eq!(severity("agent.start", "success").0, SeverityNumber::Info);
}

#[test]
fn a_line_that_is_not_json_is_still_sent_as_its_body() {
    let r = record(b"not json\n", 0);
    assert_eq!(r.body.and_then(|b| b.value), Some(s("not json")));
    assert!(r.attributes.is_empty());
}
