//! The event stream: one JSON object per line, `agent-guard/v1` shape with
//! an `ocsf` object (or ECS, per sink), hash-chained.
//!
//! `seq` and the chain links are assigned here, under one lock, at the
//! moment an event is rendered, so `seq` is gap-free across every sink for
//! the daemon's whole run and each chain follows `seq` order. Sinks get the
//! rendered line through bounded queues and never block this lock.
pub mod budget;
pub mod calls;
pub mod chain;
pub mod counts;
pub mod decode;
pub mod ecs;
pub mod enrich;
pub mod ocsf;
pub mod refused;
pub mod selfdefense;
pub mod sinks;
pub mod verify;

#[cfg(test)]
mod schema_tests;

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::policy::sink::{Format, SinkConfig, SinkKind};
use chain::{Alg, Chain, Persisted, Tip};
use sinks::{Line, Rendered, Writer, stream::Subscriber};

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

/// How the emitter is set up.
pub struct Config {
    /// `[[sink]]` tables; empty means one stdout sink.
    pub sinks: Vec<SinkConfig>,
    /// Format of sinks that do not name one (`daemon --format`).
    pub format: Format,
    pub alg: Alg,
    /// Where the last link of each chain is persisted between runs.
    pub state_file: Option<PathBuf>,
}

/// A `type = "unix"` sink, served by `sinks::stream::serve`.
pub struct UnixSink {
    pub name: String,
    pub path: PathBuf,
    pub format: Format,
    /// Queue of each reader.
    pub queue: usize,
}

/// Assigns seq and chain links, renders, and fans lines out to the sinks.
pub struct Emitter {
    seq: u64,
    host: String,
    started: Instant,
    chains: BTreeMap<Format, Chain>,
    alg_name: &'static str,
    writers: Vec<Writer>,
    subscribers: Vec<Subscriber>,
    next_subscriber: u64,
    /// Every loss reported, by reason.
    losses: BTreeMap<String, u64>,
    /// Calls per agent, by outcome.
    calls: std::collections::HashMap<String, counts::Counts>,
    /// Calls per agent over the last minutes.
    recent: std::collections::HashMap<String, counts::Recent>,
    /// (when, seq) samples for events/s.
    rate: VecDeque<(Instant, u64)>,
    state_file: Option<PathBuf>,
    persisted_seq: u64,
    /// Unix sinks to serve once the runtime runs.
    pub unix_sinks: Vec<UnixSink>,
}

pub type SharedEmitter = Arc<Mutex<Emitter>>;

impl Emitter {
    /// Calls per agent name since start, by outcome.
    pub fn calls(&self) -> &std::collections::HashMap<String, counts::Counts> {
        &self.calls
    }

    /// What agent `name` did over the last [`counts::RECENT_WINDOW`]
    /// (see [`counts::Recent::summary`]).
    pub fn recent(&self, name: &str) -> Value {
        self.recent.get(name).map_or_else(
            || counts::Recent::default().summary(self.started),
            |r| r.summary(self.started),
        )
    }
}

/// How long a closing daemon waits for its sinks to write what is queued.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

impl Emitter {
    pub fn start(config: Config) -> Result<SharedEmitter> {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into());
        let sinks = if config.sinks.is_empty() {
            vec![SinkConfig {
                name: "stdout".into(),
                kind: SinkKind::Stdout,
                format: None,
                queue: None,
            }]
        } else {
            config.sinks
        };
        let persisted = match &config.state_file {
            Some(path) => Persisted::load(path).with_context(|| {
                format!(
                    "reading the event chain's last link from {} (move it away to start a \
                     new chain, which `events verify` will show as a break)",
                    path.display()
                )
            })?,
            None => Persisted::default(),
        };
        let mut writers = Vec::new();
        let mut unix_sinks = Vec::new();
        let mut formats = vec![Format::V1];
        for cfg in &sinks {
            let format = cfg.format.unwrap_or(config.format);
            formats.push(format);
            match &cfg.kind {
                SinkKind::Unix { path } => unix_sinks.push(UnixSink {
                    name: cfg.name.clone(),
                    path: path.clone(),
                    format,
                    queue: cfg.queue.unwrap_or(sinks::stream::SUBSCRIBER_QUEUE),
                }),
                _ => writers.push(
                    Writer::start(cfg, format, &host)
                        .with_context(|| format!("starting event sink {:?}", cfg.name))?,
                ),
            }
        }
        let chains = formats
            .into_iter()
            .map(|f| {
                let prev = persisted.last.get(f.name()).map(|t| t.hash.clone());
                (f, Chain::new(config.alg.clone(), prev))
            })
            .collect();
        Ok(Arc::new(Mutex::new(Self {
            seq: 0,
            host,
            started: Instant::now(),
            chains,
            alg_name: config.alg.name(),
            writers,
            subscribers: Vec::new(),
            next_subscriber: 1,
            losses: BTreeMap::new(),
            calls: std::collections::HashMap::new(),
            recent: std::collections::HashMap::new(),
            rate: VecDeque::new(),
            state_file: config.state_file,
            persisted_seq: 0,
            unix_sinks,
        })))
    }

    fn uses(&self, format: Format) -> bool {
        self.writers.iter().any(|w| w.format == format)
            || self.subscribers.iter().any(|s| s.format == format)
    }

    /// Emits one event. `time` is when it happened (kernel time converted to
    /// wall time), or now for daemon-originated events. `body` supplies
    /// `kind`, `outcome` and the kind's own fields.
    pub fn emit(&mut self, time: SystemTime, body: Map<String, Value>) {
        self.seq += 1;
        let when = time;
        let time = humantime::format_rfc3339_nanos(time).to_string();
        let mut ev = assemble(self.seq, &time, &self.host, body);
        crate::metrics::observe(&ev);
        counts::Counts::tally(&mut self.calls, &ev);
        counts::Recent::tally(&mut self.recent, self.started, when, &ev);
        let text = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let (kind, outcome) = (text("kind"), text("outcome"));
        let is_loss = kind == "loss";
        if is_loss {
            let loss = ev.get("loss");
            let reason = loss
                .and_then(|l| l.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            let count = loss
                .and_then(|l| l.get("count"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            *self.losses.entry(reason.to_owned()).or_default() += count;
        }
        let agent = ev
            .get("agent")
            .and_then(|a| a.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut lines: BTreeMap<Format, Line> = BTreeMap::new();
        if self.uses(Format::Ecs) {
            let mut doc = ecs::render(&ev);
            if let Some(c) = self.chains.get_mut(&Format::Ecs) {
                c.link(&mut doc);
            }
            lines.insert(Format::Ecs, rendered(&doc, &kind, &time, &outcome));
        }
        // The v1 chain advances for every event even with no v1 sink, so
        // the persisted tip always names the last seq.
        if let Some(c) = self.chains.get_mut(&Format::V1) {
            c.link(&mut ev);
        }
        lines.insert(Format::V1, rendered(&ev, &kind, &time, &outcome));
        for w in &mut self.writers {
            if let Some(line) = lines.get(&w.format) {
                w.offer(line.clone(), is_loss);
            }
        }
        self.subscribers.retain_mut(|s| {
            if !s.wants(agent.as_deref(), is_loss) {
                return true;
            }
            match lines.get(&s.format) {
                Some(line) => s.offer(line.clone(), is_loss),
                None => true,
            }
        });
    }

    /// Adds a stream reader (`events --follow`, or a unix sink connection).
    pub fn subscribe(
        &mut self,
        sink: &str,
        agent: Option<String>,
        format: Format,
        queue: usize,
    ) -> tokio::sync::mpsc::Receiver<Line> {
        let id = self.next_subscriber;
        self.next_subscriber += 1;
        if !self.chains.contains_key(&format) {
            // A format no sink used so far: its chain starts here.
            let alg = self.alg();
            self.chains.insert(format, Chain::new(alg, None));
        }
        let (sub, rx) = Subscriber::new(id, sink.to_owned(), agent, format, queue);
        self.subscribers.push(sub);
        rx
    }

    fn alg(&self) -> Alg {
        self.chains.values().next().map_or(Alg::Sha256, Chain::alg)
    }

    /// Turns what sinks and readers dropped since the last call into
    /// `loss` events (which themselves are never dropped).
    pub fn report_losses(&mut self) {
        let mut due = Vec::new();
        for w in &mut self.writers {
            for (reason, count, total) in w.take_losses() {
                due.push(json!({"reason": reason, "count": count, "sink": w.name,
                                "total": total}));
            }
        }
        for s in &mut self.subscribers {
            if s.queue.unreported > 0 {
                let count = std::mem::take(&mut s.queue.unreported);
                due.push(
                    json!({"reason": "subscriber_slow", "count": count, "sink": s.sink,
                                "subscriber": s.id, "total": s.queue.dropped_total}),
                );
            }
        }
        for loss in due {
            let mut body = Map::new();
            body.insert("kind".into(), "loss".into());
            body.insert("outcome".into(), "lost".into());
            body.insert("loss".into(), loss);
            self.emit(SystemTime::now(), body);
        }
    }

    /// Periodic work: loss reports, the events/s window, and the chain tip
    /// to persist (returned, to be written outside the lock).
    pub fn tick(&mut self) -> Option<(PathBuf, Persisted)> {
        self.report_losses();
        let now = Instant::now();
        self.rate.push_back((now, self.seq));
        while self
            .rate
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(10))
        {
            self.rate.pop_front();
        }
        if self.seq == self.persisted_seq {
            return None;
        }
        self.persisted_seq = self.seq;
        Some((self.state_file.clone()?, self.tip()))
    }

    fn tip(&self) -> Persisted {
        let mut p = Persisted::default();
        for (format, c) in &self.chains {
            p.last.insert(
                format.name().into(),
                Tip {
                    hash: c.last().to_owned(),
                    seq: self.seq,
                    alg: self.alg_name.into(),
                },
            );
        }
        p
    }

    /// At exit: report the last losses, persist the chain tip, and let the
    /// sinks write what is queued.
    pub fn close(&mut self) {
        self.report_losses();
        if let Some(path) = &self.state_file {
            if let Err(err) = self.tip().save(path) {
                tracing::error!(%err, file = %path.display(), "persisting the event chain; the next run will not link to this one");
            }
        }
        for w in &mut self.writers {
            w.close(CLOSE_PATIENCE);
        }
        self.subscribers.clear();
    }

    /// What `agent-guard status` shows about the stream.
    pub fn status(&self) -> Value {
        let now = Instant::now();
        let per_sec = self.rate.front().map_or(0.0, |(t, seq)| {
            let secs = now.duration_since(*t).as_secs_f64();
            if secs > 0.0 {
                (self.seq - seq) as f64 / secs
            } else {
                0.0
            }
        });
        let readers: Vec<Value> = self
            .subscribers
            .iter()
            .map(|s| json!({"id": s.id, "sink": s.sink, "agent": s.agent, "dropped": s.queue.dropped_total}))
            .collect();
        json!({
            "uptime_secs": self.started.elapsed().as_secs(),
            "events": { "emitted": self.seq, "per_sec": (per_sec * 10.0).round() / 10.0 },
            "drops": self.losses,
            "sinks": self.writers.iter().map(Writer::status).collect::<Vec<_>>(),
            "unix_sinks": self.unix_sinks.iter().map(|u| json!({"name": u.name, "path": u.path, "format": u.format.name(), "queue": u.queue})).collect::<Vec<_>>(),
            "readers": readers,
            "chain": { "alg": self.alg_name, "last": self.chains.get(&Format::V1).map(|c| c.last().to_owned()) },
        })
    }
}

/// A native event without its chain link: the common members, the kind's
/// own (`body`), and the `ocsf` object derived from them.
pub fn assemble(seq: u64, time: &str, host: &str, body: Map<String, Value>) -> Map<String, Value> {
    let mut ev = Map::new();
    ev.insert("schema".into(), SCHEMA.into());
    ev.insert("seq".into(), seq.into());
    ev.insert("time".into(), time.into());
    ev.insert("host".into(), host.into());
    ev.extend(body);
    let ocsf = ocsf::object(&ev);
    ev.insert("ocsf".into(), ocsf);
    ev
}

fn rendered(ev: &Map<String, Value>, kind: &str, time: &str, outcome: &str) -> Line {
    Arc::new(Rendered {
        bytes: chain::line(ev),
        kind: kind.to_owned(),
        time: time.to_owned(),
        outcome: outcome.to_owned(),
    })
}

/// Emits a daemon-originated event stamped now.
pub fn emit_now(emitter: &SharedEmitter, body: Value) {
    let Value::Object(body) = body else { return };
    match emitter.lock() {
        Ok(mut e) => e.emit(SystemTime::now(), body),
        Err(poisoned) => poisoned.into_inner().emit(SystemTime::now(), body),
    }
}

/// Runs `f` on the emitter, even if a panicking holder poisoned the lock.
pub fn with<T>(emitter: &SharedEmitter, f: impl FnOnce(&mut Emitter) -> T) -> T {
    match emitter.lock() {
        Ok(mut e) => f(&mut e),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

/// `daemon.start` / `daemon.stop`.
pub fn daemon_event(kind: &str, detail: Value) -> Value {
    json!({ "kind": kind, "outcome": "success", "daemon": detail })
}
