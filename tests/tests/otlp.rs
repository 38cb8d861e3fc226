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
    collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
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
    /// What the collector answered.
    status: u16,
    path: String,
    content_type: String,
    request: ExportLogsServiceRequest,
}

type Answer = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

/// An ExportLogsServiceResponse with `status`, rejecting `rejected` records.
fn answer(status: u16, rejected: i64) -> Answer {
    let partial = (rejected > 0).then(|| ExportLogsPartialSuccess {
        rejected_log_records: rejected,
        error_message: "test rejects".into(),
    });
    let body = ExportLogsServiceResponse {
        partial_success: partial,
    };
    tiny_http::Response::from_data(body.encode_to_vec()).with_status_code(status)
}

/// An OTLP/HTTP collector on loopback; `respond(n)` answers its n-th
/// request (from 0).
#[derive(Clone, Default)]
struct Collector {
    got: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    fn serve(respond: impl Fn(usize) -> Answer + Send + 'static) -> (Self, u16) {
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
                let mut got = got.lock().expect("lock");
                let answer = respond(got.len());
                let received = Received {
                    status: answer.status_code().0,
                    path: req.url().to_owned(),
                    content_type,
                    request: ExportLogsServiceRequest::decode(body.as_slice())
                        .expect("an ExportLogsServiceRequest"),
                };
                got.push(received);
                drop(got);
                let _ = req.respond(answer);
            }
        });
        (c, port)
    }

    /// Every record accepted so far (in a request answered 200), with its
    /// resource's attributes.
    fn records(&self) -> Vec<(Vec<KeyValue>, LogRecord)> {
        let got = self.got.lock().expect("lock");
        let mut out = Vec::new();
        for r in got.iter().filter(|r| r.status == 200) {
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
    let (collector, port) = Collector::serve(|_| answer(200, 0));
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
    // A process that exited before its event was read has no command line
    // (BPF LSM: rm does not wait); a supervised one always has one.
    match (
        attr(a, "process.command_line"),
        ev["process"]["cmdline"].is_null(),
    ) {
        (Some(V::StringValue(c)), false) => {
            assert!(c.starts_with("rm ") && c.ends_with(&keep), "{c}")
        }
        (None, true) => {}
        other => panic!("process.command_line as the event has it, got {other:?}"),
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
    // The connecting process waits on stdin: /proc still has its details.
    assert_eq!(
        attr(a, "process.executable.path"),
        Some(&s(ev["process"]["exe"].as_str().expect("exe")))
    );
    match attr(a, "process.command_line") {
        Some(V::StringValue(c)) => assert!(
            c.contains("python3 -c '") && c.ends_with(&format!(" 127.0.0.1 {}", listener.port)),
            "{c}"
        ),
        other => panic!("process.command_line, got {other:?}"),
    }
}

#[test]
fn a_dead_or_refusing_otlp_collector_makes_counted_losses_not_a_stuck_daemon() {
    let cg = TestCgroups::new("sink-otlp-dead");
    let scratch = Scratch::new("sink-otlp-dead");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (refusing, refusing_port) = Collector::serve(|_| answer(400, 0));
    let sinks = format!(
        "[[sink]]\nname = \"dead\"\ntype = \"otlp\"\nendpoint = \"http://127.0.0.1:{dead}\"\nqueue = 16\n\n\
         [[sink]]\nname = \"refusing\"\ntype = \"otlp\"\nendpoint = \"http://127.0.0.1:{refusing_port}\"\n"
    );
    let daemon = Daemon::start(&policy(&cg, &scratch, &sinks), cg);
    scratch.dir("churn");
    // More events than the dead sink can keep whatever the timing: the
    // batch it retries (at most 512 records; otlp.rs BATCH_MAX) and its
    // queue of 16. With 100, all of them fit in its first batch whenever
    // they came within that batch's 200 ms linger, and nothing was lost.
    let out = daemon.run_agent(
        "bot",
        &["python3", "-c", PY_CHURN, &scratch.s("churn"), "600"],
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

#[test]
fn an_otlp_collector_that_says_wait_gets_every_event_and_its_rejections_count() {
    let cg = TestCgroups::new("sink-otlp-wait");
    let scratch = Scratch::new("sink-otlp-wait");
    // The first request is told to come back in a second; the retry is
    // taken, but one of its records rejected (a partial success).
    let (collector, port) = Collector::serve(|n| match n {
        0 => answer(503, 0).with_header(
            "Retry-After: 1"
                .parse::<tiny_http::Header>()
                .expect("header"),
        ),
        1 => answer(200, 1),
        _ => answer(200, 0),
    });
    let sinks = format!("[[sink]]\ntype = \"otlp\"\nendpoint = \"http://127.0.0.1:{port}\"\n");
    let daemon = Daemon::start(&policy(&cg, &scratch, &sinks), cg);
    scratch.file("work/a");
    daemon.run_agent("bot", &["rm", &scratch.s("work/a")]);
    daemon.wait_event("loss", |e| e["loss"]["sink"] == "otlp");
    let events = daemon.stop();

    let requests: Vec<u16> = collector
        .got
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(requests[..2], [503, 200], "retried after the 503");
    // The 503's batch came again, whole: up to daemon.stop, every event
    // arrived once, in order.
    let stop = events
        .iter()
        .find(|e| e["kind"] == "daemon.stop")
        .and_then(|e| e["seq"].as_u64())
        .expect("daemon.stop");
    let got: Vec<u64> = collector
        .records()
        .iter()
        .filter_map(|(_, r)| body(r)["seq"].as_u64())
        .filter(|s| *s <= stop)
        .collect();
    assert_eq!(got, (1..=stop).collect::<Vec<_>>());
    let losses: Vec<(String, u64)> = events
        .iter()
        .filter(|e| e["kind"] == "loss" && e["loss"]["sink"] == "otlp")
        .map(|e| {
            (
                e["loss"]["reason"].as_str().unwrap_or("").to_owned(),
                e["loss"]["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        losses,
        [("sink_write_failed".to_owned(), 1)],
        "the rejection, once"
    );
}
