//! The otlp sink: a collector written here receives OTLP/HTTP requests and
//! decodes them with OpenTelemetry's own protobuf definitions
//! (opentelemetry-proto), not ones of this project. Every event arrives as
//! one log record with semantic-convention attributes; a dead collector
//! costs counted losses, never enforcement or the daemon's exit.
//! Needs: seccomp user notification or BPF LSM (supervised deletes), cgroup
//! sock_addr programs (connects).
use std::{
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use agent_guard_tests::*;
use opentelemetry_proto::tonic::{
    collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    common::v1::{KeyValue, any_value::Value as V},
    logs::v1::{LogRecord, SeverityNumber},
};
use prost::Message as _;
use serde_json::Value;

fn policy(cg: &TestCgroups, scratch: &Scratch, sinks: &str) -> String {
    format!(
        r#"
[[agent]]
name = "bot"
owner = "o@example.com"
purpose = "otlp tests"
cgroup = "{}"

[agent.delete]
default = "allow"
deny = ["{}"]

[agent.connect]
default = "allow"

[[sink]]
type = "stdout"
{sinks}
"#,
        cg.path("bot"),
        scratch.s("keep"),
    )
}

/// One request as the collector saw it.
struct Received {
    path: String,
    content_type: String,
    request: ExportLogsServiceRequest,
}

/// An OTLP/HTTP collector on loopback answering every request with
/// `status` (and an empty ExportLogsServiceResponse when it is 200).
#[derive(Clone, Default)]
struct Collector {
    got: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    fn serve(status: u16) -> (Self, u16) {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("collector");
        let port = server.server_addr().to_ip().expect("ip").port();
        let c = Self::default();
        let got = c.got.clone();
        thread::spawn(move || {
            for mut req in server.incoming_requests() {
                let mut body = Vec::new();
                req.as_reader().read_to_end(&mut body).expect("body");
                let content_type = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Content-Type"))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default();
                let received = Received {
                    path: req.url().to_owned(),
                    content_type,
                    request: ExportLogsServiceRequest::decode(body.as_slice())
                        .expect("an ExportLogsServiceRequest"),
                };
                got.lock().expect("lock").push(received);
                let answer = ExportLogsServiceResponse::default().encode_to_vec();
                let _ =
                    req.respond(tiny_http::Response::from_data(answer).with_status_code(status));
            }
        });
        (c, port)
    }

    /// Every record received so far, with its resource's attributes.
    fn records(&self) -> Vec<(Vec<KeyValue>, LogRecord)> {
        let got = self.got.lock().expect("lock");
        let mut out = Vec::new();
        for r in got.iter() {
            for rl in &r.request.resource_logs {
                let res = rl
                    .resource
                    .clone()
                    .map(|r| r.attributes)
                    .unwrap_or_default();
                for sl in &rl.scope_logs {
                    for rec in &sl.log_records {
                        out.push((res.clone(), rec.clone()));
                    }
                }
            }
        }
        out
    }
}

fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a V> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn s(v: &str) -> V {
    V::StringValue(v.into())
}

fn body(r: &LogRecord) -> Value {
    match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(V::StringValue(text)) => serde_json::from_str(text).expect("the body is the event"),
        other => panic!("a string body, got {other:?}"),
    }
}

#[test]
fn an_otlp_collector_gets_every_event_as_a_log_record() {
    let cg = TestCgroups::new("sink-otlp");
    let scratch = Scratch::new("sink-otlp");
    let (collector, port) = Collector::serve(200);
    let listener = Listener::v4();
    let sinks = format!("[[sink]]\ntype = \"otlp\"\nendpoint = \"http://127.0.0.1:{port}\"\n");
    let daemon = Daemon::start(&policy(&cg, &scratch, &sinks), cg);
    scratch.file("work/a");
    scratch.file("keep/b");
    daemon.run_agent("bot", &["rm", &scratch.s("work/a"), &scratch.s("keep/b")]);
    let connect = connect_as(&daemon, "bot", "127.0.0.1", listener.port);
    assert_eq!(connect.errno, 0);
    let connect_pid = connect.pid;
    daemon.wait_event("net.connect", |e| e["process"]["pid"] == connect_pid);
    connect.finish();
    let events = daemon.stop();

    // Sent before the daemon exits: no waiting needed beyond a liveness bound.
    let deadline = Instant::now() + PATIENCE;
    while collector.records().len() < events.len() {
        assert!(
            Instant::now() < deadline,
            "every event reaches the collector"
        );
        thread::sleep(Duration::from_millis(20));
    }
    for r in collector.got.lock().expect("lock").iter() {
        assert_eq!(r.path, "/v1/logs");
        assert_eq!(r.content_type, "application/x-protobuf");
    }
    let records = collector.records();
    let seqs = |l: &mut dyn Iterator<Item = &Value>| -> Vec<u64> {
        l.filter_map(|e| e["seq"].as_u64()).collect()
    };
    let got: Vec<Value> = records.iter().map(|(_, r)| body(r)).collect();
    assert_eq!(
        seqs(&mut got.iter()),
        seqs(&mut events.iter()),
        "every event, once, in order"
    );
    let host = events[0]["host"].as_str().expect("host");
    for ((res, r), ev) in records.iter().zip(&events) {
        assert_eq!(attr(res, "service.name"), Some(&s("agent-guard")));
        assert_eq!(attr(res, "host.name"), Some(&s(host)));
        assert_eq!(&body(r)["chain"], &ev["chain"], "the body is the v1 line");
        assert_eq!(r.event_name, ev["kind"].as_str().expect("kind"));
        assert!(r.time_unix_nano > 0 && r.observed_time_unix_nano > 0);
        let a = &r.attributes;
        assert_eq!(
            attr(a, "agent_guard.kind"),
            Some(&s(ev["kind"].as_str().expect("kind")))
        );
        assert_eq!(
            attr(a, "agent_guard.outcome"),
            Some(&s(ev["outcome"].as_str().expect("outcome")))
        );
    }

    let find = |pred: &dyn Fn(&Value) -> bool| {
        let i = events.iter().position(pred).expect("event");
        (&events[i], &records[i].1)
    };
    let keep = scratch.s("keep/b");
    let (ev, r) = find(&|e| e["kind"] == "file.unlink" && e["target"]["path"] == keep.as_str());
    assert_eq!(ev["outcome"], "denied");
    assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(r.severity_text, "WARN");
    let a = &r.attributes;
    assert_eq!(attr(a, "gen_ai.agent.name"), Some(&s("bot")));
    assert_eq!(attr(a, "file.path"), Some(&s(&keep)));
    assert_eq!(attr(a, "agent_guard.rule.verdict"), Some(&s("deny")));
    assert_eq!(
        attr(a, "process.pid"),
        Some(&V::IntValue(ev["process"]["pid"].as_i64().expect("pid")))
    );
    if let Some(user) = ev["process"]["user"].as_str() {
        assert_eq!(attr(a, "user.name"), Some(&s(user)));
    }
    match attr(a, "process.command_line") {
        Some(V::StringValue(c)) => assert!(c.starts_with("rm ") && c.ends_with(&keep), "{c}"),
        other => panic!("process.command_line, got {other:?}"),
    }

    let (ev, r) = find(&|e| e["kind"] == "net.connect" && e["process"]["pid"] == connect_pid);
    assert_eq!(ev["outcome"], "allowed");
    assert_eq!(r.severity_number, SeverityNumber::Info as i32);
    let a = &r.attributes;
    assert_eq!(attr(a, "server.address"), Some(&s("127.0.0.1")));
    assert_eq!(
        attr(a, "server.port"),
        Some(&V::IntValue(i64::from(listener.port)))
    );
    assert_eq!(
        attr(a, "process.executable.path"),
        Some(&s(ev["process"]["exe"].as_str().expect("exe")))
    );
}

#[test]
fn a_dead_or_refusing_otlp_collector_makes_counted_losses_not_a_stuck_daemon() {
    let cg = TestCgroups::new("sink-otlp-dead");
    let scratch = Scratch::new("sink-otlp-dead");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (refusing, refusing_port) = Collector::serve(400);
    let sinks = format!(
        "[[sink]]\nname = \"dead\"\ntype = \"otlp\"\nendpoint = \"http://127.0.0.1:{dead}\"\nqueue = 16\n\n\
         [[sink]]\nname = \"refusing\"\ntype = \"otlp\"\nendpoint = \"http://127.0.0.1:{refusing_port}\"\n"
    );
    let daemon = Daemon::start(&policy(&cg, &scratch, &sinks), cg);
    scratch.dir("churn");
    let out = daemon.run_agent(
        "bot",
        &["python3", "-c", PY_CHURN, &scratch.s("churn"), "100"],
    );
    assert!(out.status.success(), "{out:?}");
    // Enforcement does not wait for the collector.
    let kept = scratch.file("keep/b");
    let out = daemon.run_agent("bot", &["rm", &scratch.s("keep/b")]);
    assert!(!out.status.success() && kept.exists(), "still enforced");

    let lost = daemon.wait_event("loss", |e| e["loss"]["sink"] == "dead");
    assert_eq!(lost["loss"]["reason"], "sink_down");
    assert!(
        lost["loss"]["count"].as_u64().is_some_and(|c| c > 0),
        "{lost}"
    );
    let failed = daemon.wait_event("loss", |e| e["loss"]["sink"] == "refusing");
    assert_eq!(failed["loss"]["reason"], "sink_write_failed");
    assert!(
        !refusing.got.lock().expect("lock").is_empty(),
        "it was sent the records"
    );

    let d = daemon.sink_status("dead");
    assert_eq!(
        (d["type"].as_str(), d["state"].as_str()),
        (Some("otlp"), Some("down")),
        "{d}"
    );
    assert!(d["dropped"].as_u64().is_some_and(|n| n > 0), "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{d}"
    );
    let r = daemon.sink_status("refusing");
    assert_eq!(r["state"], "up", "reachable, refusing: {r}");
    assert!(r["write_failed"].as_u64().is_some_and(|n| n > 0), "{r}");
    assert_eq!(r["written"], 0, "{r}");
    assert!(
        r["last_error"].as_str().is_some_and(|e| e.contains("400")),
        "{r}"
    );
    let status = daemon.status();
    assert!(
        status["drops"]["sink_down"].as_u64().is_some_and(|n| n > 0),
        "{status}"
    );

    // The daemon stops at once though the collector never came up (the
    // harness fails a daemon that ignores SIGTERM).
    let events = daemon.stop();
    assert!(events.iter().any(|e| e["kind"] == "daemon.stop"));
    assert_gap_free(&events);
    // What the sinks report lost never exceeds what happened.
    for name in ["dead", "refusing"] {
        let reported: u64 = events
            .iter()
            .filter(|e| e["kind"] == "loss" && e["loss"]["sink"] == name)
            .filter_map(|e| e["loss"]["count"].as_u64())
            .sum();
        assert!(
            reported > 0 && reported <= events.len() as u64,
            "{name}: {reported}"
        );
    }
}
