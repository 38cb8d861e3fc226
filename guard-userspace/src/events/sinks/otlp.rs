//! The otlp sink: each event becomes one OpenTelemetry log record, sent in
//! batches over OTLP/HTTP (protobuf) to a collector.
//!
//! The messages are OpenTelemetry's own generated types (opentelemetry-proto),
//! encoded with prost and POSTed with reqwest, the HTTP client the daemon
//! already has. opentelemetry-otlp's exporter was not used: it takes records
//! from the SDK's logger and batch processor, which queue and drop on their
//! own; here the sink's bounded queue and loss accounting stay the ones every
//! other sink has (`super::Writer`), and a batch is retried on this thread.
use std::{
    io,
    sync::{
        atomic::Ordering,
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};
use prost::Message as _;
use serde_json::{Map, Value};

use super::{
    Line, SinkStats,
    net::{BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT, sleep_unless_closing},
};

/// Records per request: well under a collector's default body limit even
/// with held calls' contexts (a few KiB each).
const BATCH_MAX: usize = 512;
/// How long a batch waits for company once its first record is in. Events
/// reach the collector at most this much later; a burst goes in few requests.
const LINGER: Duration = Duration::from_millis(200);
/// A collector that accepts but never answers must not wedge the thread.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait a collector's Retry-After is granted.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// Event members that are not repeated as attributes: the resource carries
/// the host, the record its time, and `ocsf` is a classification for OCSF
/// readers (the body keeps all of them).
const NOT_ATTRIBUTES: [&str; 4] = ["schema", "time", "host", "ocsf"];

pub struct Exporter {
    url: String,
    resource: Resource,
    client: reqwest::Client,
    /// The sink is a thread like every writer sink; reqwest needs a runtime.
    rt: tokio::runtime::Runtime,
    /// The failure last logged: a collector that refuses every batch is
    /// logged once, not five times a second (`status` has the latest).
    logged: Option<String>,
}

/// Why a request failed, and whether sending it again may help.
enum Failure {
    /// Unreachable, timed out, or the collector asked to retry (OTLP/HTTP:
    /// 429, 502, 503, 504), perhaps saying when (Retry-After, in seconds).
    Retry(String, Option<Duration>),
    /// Refused outright: the same request would be refused again.
    Permanent(String),
}

impl Exporter {
    pub fn new(url: String, host: &str) -> io::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("agent-guard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(io::Error::other)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            url,
            resource: resource(host),
            client,
            rt,
            logged: None,
        })
    }

    /// Sends what the queue brings until it closes (daemon exit).
    pub fn run(&mut self, rx: &Receiver<Line>, stats: &SinkStats) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let until = Instant::now() + LINGER;
            while batch.len() < BATCH_MAX {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => batch.push(line),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            self.deliver(&batch, stats);
        }
    }

    /// Sends one batch, retrying with backoff while the collector is down.
    /// Meanwhile the queue fills and what overflows is reported as
    /// `sink_down`; what the collector refuses is `sink_write_failed`.
    fn deliver(&mut self, batch: &[Line], stats: &SinkStats) {
        let observed = unix_nanos(SystemTime::now());
        let records = batch.iter().map(|l| record(&l.bytes, observed)).collect();
        let body = request(self.resource.clone(), records).encode_to_vec();
        let n = batch.len() as u64;
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.post(body.clone()) {
                Ok(rejected) => {
                    let rejected = rejected.min(n);
                    stats.up.store(true, Ordering::Relaxed);
                    stats.written.fetch_add(n - rejected, Ordering::Relaxed);
                    stats.write_failed.fetch_add(rejected, Ordering::Relaxed);
                    if self.logged.take().is_some() {
                        tracing::info!(collector = %self.url, "otlp collector takes records again");
                    }
                    return;
                }
                Err(Failure::Permanent(e)) => {
                    // Reachable but refusing: the sink is up, the lines lost.
                    stats.up.store(true, Ordering::Relaxed);
                    stats.write_failed.fetch_add(n, Ordering::Relaxed);
                    self.log(&e, "otlp collector refused a batch; its records are lost");
                    stats.set_error(format!("{}: {e}", self.url));
                    return;
                }
                Err(Failure::Retry(e, after)) => {
                    stats.up.store(false, Ordering::Relaxed);
                    self.log(&e, "otlp collector unreachable or busy; retrying");
                    stats.set_error(format!("{}: {e}", self.url));
                    if stats.closing.load(Ordering::Relaxed) {
                        // Daemon exit with the collector down.
                        stats.write_failed.fetch_add(n, Ordering::Relaxed);
                        return;
                    }
                    // A collector that says when to come back is believed,
                    // up to a minute: longer would only fill the queue.
                    let wait = after.map_or(backoff, |a| a.clamp(backoff, RETRY_AFTER_MAX));
                    sleep_unless_closing(wait, stats);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn log(&mut self, error: &str, what: &str) {
        if self.logged.as_deref() != Some(error) {
            tracing::warn!(collector = %self.url, %error, "{what}");
            self.logged = Some(error.to_owned());
        }
    }

    /// POSTs one request; Ok(records the collector says it rejected).
    fn post(&self, body: Vec<u8>) -> Result<u64, Failure> {
        self.rt.block_on(async {
            let resp = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                .body(body)
                .send()
                .await
                // anyhow's alternate form shows the causes ("...: Connection
                // refused"), where reqwest's own message stops at the first.
                .map_err(|e| Failure::Retry(format!("{:#}", anyhow::Error::from(e)), None))?;
            let status = resp.status();
            if status.is_success() {
                // A body that does not decode still means accepted (2xx).
                let bytes = resp.bytes().await.unwrap_or_default();
                let partial = ExportLogsServiceResponse::decode(bytes)
                    .ok()
                    .and_then(|r| r.partial_success);
                return Ok(
                    partial.map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0))
                );
            }
            let e = format!("HTTP {status}");
            match status.as_u16() {
                429 | 502 | 503 | 504 => {
                    let after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    Err(Failure::Retry(e, after))
                }
                _ => Err(Failure::Permanent(e)),
            }
        })
    }
}

fn request(resource: Resource, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "agent-guard".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn resource(host: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", string("agent-guard")),
            kv("service.version", string(env!("CARGO_PKG_VERSION"))),
            kv("host.name", string(host)),
        ],
        ..Default::default()
    }
}

/// One event line (the native agent-guard/v2 JSON) as a log record: its time, a
/// severity, the line itself as the body, attributes after the semantic
/// conventions, and every member of the event under `agent_guard.`.
pub fn record(line: &[u8], observed_unix_nanos: u64) -> LogRecord {
    let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line)).into_owned();
    let ev: Map<String, Value> = serde_json::from_str(&text).unwrap_or_default();
    let str_of = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("");
    let (kind, outcome) = (str_of("kind").to_owned(), str_of("outcome"));
    let time = ev
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .map_or(0, unix_nanos);
    let (severity, severity_text) = severity(&kind, outcome);
    let mut attributes = semconv(&ev);
    for (k, v) in &ev {
        if !NOT_ATTRIBUTES.contains(&k.as_str()) {
            flatten(&format!("agent_guard.{k}"), v, &mut attributes);
        }
    }
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: observed_unix_nanos,
        severity_number: severity as i32,
        severity_text: severity_text.into(),
        body: Some(string(&text)),
        attributes,
        event_name: kind,
        ..Default::default()
    }
}

/// Holds, denials, losses, failures and attacks on the guard are WARN: what
/// on-call filters for. Everything else is INFO.
fn severity(kind: &str, outcome: &str) -> (SeverityNumber, &'static str) {
    let notable = matches!(outcome, "denied" | "held" | "lost" | "failure" | "failed")
        || matches!(kind, "guard.tamper" | "agent.escape");
    if notable {
        (SeverityNumber::Warn, "WARN")
    } else {
        (SeverityNumber::Info, "INFO")
    }
}

/// The OpenTelemetry semantic-convention attributes the event has. The kind
/// is the record's `event_name` (the `event.name` attribute is deprecated).
fn semconv(ev: &Map<String, Value>) -> Vec<KeyValue> {
    let mut out = Vec::new();
    let at = |path: &[&str]| -> Option<&Value> {
        let mut v = ev.get(path[0])?;
        for p in &path[1..] {
            v = v.get(p)?;
        }
        (!v.is_null()).then_some(v)
    };
    let mut put = |key: &str, v: Option<AnyValue>| {
        if let Some(v) = v {
            out.push(kv(key, v));
        }
    };
    put(
        "gen_ai.agent.name",
        at(&["agent", "name"]).and_then(as_string),
    );
    put("process.pid", at(&["process", "pid"]).and_then(as_int));
    put(
        "process.parent_pid",
        at(&["process", "ppid"]).and_then(as_int),
    );
    put(
        "process.executable.path",
        at(&["process", "exe"]).and_then(as_string),
    );
    put(
        "process.executable.name",
        at(&["process", "comm"]).and_then(as_string),
    );
    let cmdline = at(&["process", "cmdline"]);
    if let Some(line) = cmdline.and_then(Value::as_str) {
        put("process.command_line", Some(string(line)));
    }
    if let Some(args) = cmdline.and_then(Value::as_array) {
        let args: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
        put("process.command_line", Some(string(&command_line(&args))));
        put(
            "process.command_args",
            Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: args.iter().map(|a| string(a)).collect(),
                })),
            }),
        );
    }
    put("user.name", at(&["process", "user"]).and_then(as_string));
    put(
        "user.id",
        at(&["process", "uid"]).map(|u| string(&u.to_string())),
    );
    let kind = ev.get("kind").and_then(Value::as_str).unwrap_or("");
    let family = at(&["target", "family"]).and_then(Value::as_str);
    match family {
        Some(f @ ("ipv4" | "ipv6")) => {
            put("network.type", Some(string(f)));
            put(
                "server.address",
                at(&["target", "address"]).and_then(as_string),
            );
            put("server.port", at(&["target", "port"]).and_then(as_int));
        }
        Some("unix") => {
            put("network.transport", Some(string("unix")));
            put(
                "server.address",
                at(&["target", "path"]).and_then(as_string),
            );
        }
        _ if kind.starts_with("file.") => {
            put("file.path", at(&["target", "path"]).and_then(as_string));
        }
        _ => {}
    }
    out
}

/// `process.command_line` is one string: arguments joined by spaces, each
/// quoted for a POSIX shell where it needs it, so `rm 'a b'` stays two words.
fn command_line(args: &[&str]) -> String {
    let plain = |a: &str| {
        !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b))
    };
    args.iter()
        .map(|a| {
            if plain(a) {
                (*a).to_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Objects become dotted keys; arrays stay arrays; nulls are left out (an
/// absent attribute is OpenTelemetry's null).
fn flatten(key: &str, v: &Value, out: &mut Vec<KeyValue>) {
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{key}.{k}"), v, out);
            }
        }
        other => out.push(kv(key, any(other))),
    }
}

/// A JSON value as an OTLP value, losslessly.
fn any(v: &Value) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => V::IntValue(i),
            // Beyond i64 (or fractional): a u64 keeps its digits as text.
            None if n.is_u64() => V::StringValue(n.to_string()),
            None => V::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Some(V::StringValue(s.clone())),
        Value::Array(a) => Some(V::ArrayValue(ArrayValue {
            values: a.iter().map(any).collect(),
        })),
        Value::Object(m) => Some(V::KvlistValue(KeyValueList {
            values: m.iter().map(|(k, v)| kv(k, any(v))).collect(),
        })),
    };
    AnyValue { value }
}

fn as_string(v: &Value) -> Option<AnyValue> {
    v.as_str().map(string)
}

fn as_int(v: &Value) -> Option<AnyValue> {
    v.as_i64().map(|i| AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    })
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[path = "otlp_tests.rs"]
mod tests;
