//! The event stream: one JSON object per line, `agent-guard/v1` shape.
//!
//! `seq` is assigned here, under one lock, at the moment a line is written,
//! so it is gap-free and in output order for the daemon's whole run.
pub mod decode;
pub mod enrich;

use std::{
    io::{self, Write},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::Serialize;
use serde_json::{Map, Value, json};

pub const SCHEMA: &str = "agent-guard/v1";

/// Who did it: the agent half of every event.
#[derive(Clone, Debug, Serialize)]
pub struct AgentRef {
    pub name: String,
    pub owner: String,
    pub purpose: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub cgroup: String,
    pub cgroup_id: u64,
    /// The run (session) the process belongs to, if started by `run`.
    pub session: Option<String>,
    pub on_behalf_of: Option<String>,
}

/// Writes event lines to stdout (the only thing on stdout).
pub struct Emitter {
    seq: u64,
    host: String,
    out: Box<dyn Write + Send>,
    subscribers: Vec<Subscriber>,
}

/// A live `events --follow` connection: a bounded queue, so a slow or stuck
/// reader never holds up enforcement or the other outputs. What does not
/// fit is counted and reported to that reader as a `loss` line.
struct Subscriber {
    agent: Option<String>,
    queue: tokio::sync::mpsc::Sender<std::sync::Arc<str>>,
    lost: u64,
}

/// Lines a subscriber may lag behind before it starts losing events.
pub const SUBSCRIBER_QUEUE: usize = 4096;

pub type SharedEmitter = Arc<Mutex<Emitter>>;

impl Emitter {
    pub fn stdout() -> SharedEmitter {
        Arc::new(Mutex::new(Self {
            seq: 0,
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".into()),
            out: Box::new(io::stdout()),
            subscribers: Vec::new(),
        }))
    }

    /// Emits one event. `time` is when it happened (kernel time converted to
    /// wall time), or now for daemon-originated events. `body` supplies
    /// `kind`, `outcome` and the kind's own fields.
    pub fn emit(&mut self, time: SystemTime, body: Map<String, Value>) {
        self.seq += 1;
        let mut line = Map::new();
        line.insert("schema".into(), SCHEMA.into());
        line.insert("seq".into(), self.seq.into());
        line.insert(
            "time".into(),
            humantime::format_rfc3339_nanos(time).to_string().into(),
        );
        line.insert("host".into(), self.host.clone().into());
        line.extend(body);
        crate::metrics::observe(&line);
        let mut bytes = match serde_json::to_vec(&Value::Object(line)) {
            Ok(bytes) => bytes,
            Err(err) => {
                // A Value always serializes; keep the seq accounted anyway.
                tracing::error!(%err, seq = self.seq, "event could not be serialized");
                return;
            }
        };
        bytes.push(b'\n');
        if let Err(err) = self.out.write_all(&bytes).and_then(|()| self.out.flush()) {
            tracing::error!(%err, seq = self.seq, "writing event to stdout failed");
        }
        if !self.subscribers.is_empty() {
            let agent = line_agent(&bytes);
            let shared: std::sync::Arc<str> = String::from_utf8_lossy(&bytes).into();
            self.subscribers.retain_mut(|s| {
                if s.agent.is_some() && s.agent.as_deref() != agent.as_deref() {
                    return !s.queue.is_closed();
                }
                if s.lost > 0 {
                    let note = format!(
                        "{{\"schema\":\"{SCHEMA}\",\"kind\":\"loss\",\"outcome\":\"lost\",\"loss\":{{\"reason\":\"subscriber_slow\",\"count\":{}}}}}\n",
                        s.lost
                    );
                    if s.queue.try_send(note.into()).is_ok() {
                        s.lost = 0;
                    }
                }
                match s.queue.try_send(shared.clone()) {
                    Ok(()) => true,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        s.lost += 1;
                        true
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
    }

    /// Adds an `events --follow` subscriber (optionally one agent's events).
    pub fn subscribe(
        &mut self,
        agent: Option<String>,
    ) -> tokio::sync::mpsc::Receiver<std::sync::Arc<str>> {
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBER_QUEUE);
        self.subscribers.push(Subscriber {
            agent,
            queue: tx,
            lost: 0,
        });
        rx
    }
}

/// The agent name of a serialized event line, if it has one.
fn line_agent(line: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(line).ok()?;
    v.get("agent")?.get("name")?.as_str().map(str::to_owned)
}

/// Emits a daemon-originated event stamped now.
pub fn emit_now(emitter: &SharedEmitter, body: Value) {
    let Value::Object(body) = body else { return };
    match emitter.lock() {
        Ok(mut e) => e.emit(SystemTime::now(), body),
        Err(poisoned) => poisoned.into_inner().emit(SystemTime::now(), body),
    }
}

/// `daemon.start` / `daemon.stop`.
pub fn daemon_event(kind: &str, detail: Value) -> Value {
    json!({ "kind": kind, "outcome": "success", "daemon": detail })
}
