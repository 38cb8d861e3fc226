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
}

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
    }
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
