//! The emitter: assigns `seq` and chain links, renders each event once per
//! format straight from its type, and fans lines out to the sinks, the
//! stream readers and the typed watchers.
//!
//! `seq` and the chain links are assigned here, under one lock, at the
//! moment an event is rendered, so `seq` is gap-free across every sink for
//! the daemon's whole run and each chain follows `seq` order. Sinks get the
//! rendered line through bounded queues and never block this lock.
use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    Line, Native, Observer, SCHEMA, SharedEmitter, Stamped,
    chain::{Alg, Chain, Persisted, Tip},
    ecs,
    model::{DaemonEvent, Event, Loss, LossReason, Text},
    ocsf,
    sinks::{self, Queue, Rendered, Writer, stream::Subscriber},
};
use crate::policy::sink::{Format, SinkConfig, SinkKind};

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

/// A reader of typed events (webhooks, the web page), with its own
/// bounded queue; what does not fit is a `subscriber_slow` loss.
struct Watcher {
    id: u64,
    name: String,
    tx: mpsc::Sender<Arc<Stamped>>,
    queue: Queue<Arc<Stamped>>,
}

/// Assigns seq and chain links, renders, and fans lines out to the sinks.
pub struct Emitter {
    seq: u64,
    host: Arc<str>,
    started: Instant,
    chains: BTreeMap<Format, Chain>,
    alg_name: &'static str,
    writers: Vec<Writer>,
    subscribers: Vec<Subscriber>,
    watchers: Vec<Watcher>,
    observers: Vec<Box<dyn Observer>>,
    next_subscriber: u64,
    /// Every loss reported, by reason.
    losses: BTreeMap<LossReason, u64>,
    /// (when, seq) samples for events/s.
    rate: VecDeque<(Instant, u64)>,
    state_file: Option<PathBuf>,
    persisted_seq: u64,
    /// Where lines are rendered: one buffer per format, reused.
    buf: Vec<u8>,
    /// Unix sinks to serve once the runtime runs.
    pub unix_sinks: Vec<UnixSink>,
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
            host: host.into(),
            started: Instant::now(),
            chains,
            alg_name: config.alg.name(),
            writers,
            subscribers: Vec::new(),
            watchers: Vec::new(),
            observers: Vec::new(),
            next_subscriber: 1,
            losses: BTreeMap::new(),
            rate: VecDeque::new(),
            state_file: config.state_file,
            persisted_seq: 0,
            buf: Vec::with_capacity(4096),
            unix_sinks,
        })))
    }

    fn uses(&self, format: Format) -> bool {
        self.writers.iter().any(|w| w.format == format)
            || self.subscribers.iter().any(|s| s.format == format)
    }

    /// Adds an observer of every event from now on (metrics, counts).
    pub fn observe(&mut self, observer: Box<dyn Observer>) {
        self.observers.push(observer);
    }

    /// Emits one event. `time` is when it happened (kernel time converted to
    /// wall time), or now for daemon-originated events.
    pub fn emit(&mut self, time: SystemTime, event: Event) {
        self.seq += 1;
        let stamped = Stamped {
            seq: self.seq,
            time,
            host: self.host.clone(),
            event,
        };
        for o in &mut self.observers {
            o.observe(&stamped);
        }
        let event = &stamped.event;
        let loss = match event {
            Event::Daemon(DaemonEvent::Loss(l)) => Some(&l.loss),
            _ => None,
        };
        if let Some(l) = loss {
            *self.losses.entry(l.reason).or_default() += l.count;
        }
        let is_loss = loss.is_some();
        let notice = is_loss || event.outcome() == "denied";
        let time_text = humantime::format_rfc3339_nanos(time).to_string();
        let stamp = Stamp {
            seq: self.seq,
            time,
            time_text: &time_text,
            host: &self.host,
        };
        let kind = event.kind();
        let mut ecs_line = None;
        if self.uses(Format::Ecs) {
            let bytes = render_ecs(
                &mut self.buf,
                event,
                &stamp,
                self.chains.get_mut(&Format::Ecs),
            );
            ecs_line = Some(Arc::new(Rendered {
                bytes,
                kind,
                time: time_text.clone(),
                notice,
            }));
        }
        // The v1 chain advances for every event even with no v1 sink, so
        // the persisted tip always names the last seq.
        let bytes = render_native(
            &mut self.buf,
            event,
            &stamp,
            self.chains.get_mut(&Format::V1),
        );
        let v1_line = Arc::new(Rendered {
            bytes,
            kind,
            time: time_text,
            notice,
        });
        let pick = |format: Format| match format {
            Format::V1 => Some(&v1_line),
            Format::Ecs => ecs_line.as_ref(),
        };
        for w in &mut self.writers {
            if let Some(line) = pick(w.format) {
                w.offer(line.clone(), is_loss);
            }
        }
        let agent = event.agent().map(|a| a.name.as_str());
        self.subscribers.retain_mut(|s| {
            if !s.wants(agent, is_loss) {
                return true;
            }
            match pick(s.format) {
                Some(line) => s.offer(line.clone(), is_loss),
                None => true,
            }
        });
        if !self.watchers.is_empty() {
            let shared = Arc::new(stamped);
            self.watchers.retain_mut(|w| {
                if w.tx.is_closed() {
                    return false;
                }
                let tx = &w.tx;
                w.queue
                    .offer(shared.clone(), is_loss, |l| match tx.try_send(l) {
                        Ok(()) => Ok(()),
                        Err(mpsc::error::TrySendError::Full(l)) => Err((l, true)),
                        Err(mpsc::error::TrySendError::Closed(l)) => Err((l, false)),
                    })
            });
        }
    }

    /// Adds a stream reader (`events --follow`, or a unix sink connection).
    pub fn subscribe(
        &mut self,
        sink: &str,
        agent: Option<String>,
        format: Format,
        queue: usize,
    ) -> mpsc::Receiver<sinks::Line> {
        let id = self.next_id();
        if !self.chains.contains_key(&format) {
            // A format no sink used so far: its chain starts here.
            let alg = self.alg();
            self.chains.insert(format, Chain::new(alg, None));
        }
        let (sub, rx) = Subscriber::new(id, sink.to_owned(), agent, format, queue);
        self.subscribers.push(sub);
        rx
    }

    /// Adds a reader of typed events (`name` is what its losses report).
    pub fn watch(&mut self, name: &str, queue: usize) -> mpsc::Receiver<Arc<Stamped>> {
        let id = self.next_id();
        let (tx, rx) = mpsc::channel(queue.max(1));
        self.watchers.push(Watcher {
            id,
            name: name.to_owned(),
            tx,
            queue: Queue::new(),
        });
        rx
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_subscriber;
        self.next_subscriber += 1;
        id
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
                let mut l = Loss::new(reason, count);
                l.loss.sink = Some(w.name.clone());
                l.loss.total = Some(total);
                due.push(l);
            }
        }
        let slow = |id, sink: &str, unreported: &mut u64, total| {
            (*unreported > 0).then(|| {
                let mut l = Loss::new(LossReason::SubscriberSlow, std::mem::take(unreported));
                l.loss.sink = Some(sink.to_owned());
                l.loss.subscriber = Some(id);
                l.loss.total = Some(total);
                l
            })
        };
        for s in &mut self.subscribers {
            due.extend(slow(
                s.id,
                &s.sink,
                &mut s.queue.unreported,
                s.queue.dropped_total,
            ));
        }
        for w in &mut self.watchers {
            due.extend(slow(
                w.id,
                &w.name,
                &mut w.queue.unreported,
                w.queue.dropped_total,
            ));
        }
        for loss in due {
            self.emit(SystemTime::now(), DaemonEvent::Loss(loss).into());
        }
    }

    /// Reports events that never became a line (a kernel record the daemon
    /// could not read, say).
    pub fn lost(&mut self, reason: LossReason, count: u64, detail: Option<String>) {
        let mut l = Loss::new(reason, count);
        l.loss.detail = detail.map(Text::message);
        self.emit(SystemTime::now(), DaemonEvent::Loss(l).into());
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
        self.watchers.clear();
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
        let mut readers: Vec<Value> = self
            .subscribers
            .iter()
            .map(|s| json!({"id": s.id, "sink": s.sink, "agent": s.agent, "dropped": s.queue.dropped_total}))
            .collect();
        readers.extend(
            self.watchers
                .iter()
                .map(|w| json!({"id": w.id, "sink": w.name, "dropped": w.queue.dropped_total})),
        );
        let drops: BTreeMap<&str, u64> = self.losses.iter().map(|(r, n)| (r.name(), *n)).collect();
        json!({
            "uptime_secs": self.started.elapsed().as_secs(),
            "events": { "emitted": self.seq, "per_sec": (per_sec * 10.0).round() / 10.0 },
            "drops": drops,
            "sinks": self.writers.iter().map(Writer::status).collect::<Vec<_>>(),
            "unix_sinks": self.unix_sinks.iter().map(|u| json!({"name": u.name, "path": u.path, "format": u.format.name(), "queue": u.queue})).collect::<Vec<_>>(),
            "readers": readers,
            "chain": { "alg": self.alg_name, "last": self.chains.get(&Format::V1).map(|c| c.last().to_owned()) },
        })
    }
}

/// Where an event is in the stream.
pub(crate) struct Stamp<'a> {
    pub seq: u64,
    pub time: SystemTime,
    /// `time` as RFC 3339 with nanoseconds.
    pub time_text: &'a str,
    pub host: &'a str,
}

impl<'a> Stamp<'a> {
    fn native(&self, event: &'a Event) -> Native<'a> {
        Native {
            schema: SCHEMA,
            seq: self.seq,
            time: self.time_text,
            host: self.host,
            event,
            truncated: event.truncated(),
        }
    }
}

/// The native line of `event` (with its OCSF event), as written.
pub(crate) fn render_native(
    buf: &mut Vec<u8>,
    event: &Event,
    stamp: &Stamp<'_>,
    chain: Option<&mut Chain>,
) -> Vec<u8> {
    let line = Line {
        native: stamp.native(event),
        ocsf: ocsf::object(event, stamp.seq, unix_ms(stamp.time), stamp.host),
        chain: None,
    };
    render(buf, &line, chain, 1)
}

/// The ECS document of `event`, as written.
pub(crate) fn render_ecs(
    buf: &mut Vec<u8>,
    event: &Event,
    stamp: &Stamp<'_>,
    chain: Option<&mut Chain>,
) -> Vec<u8> {
    let doc = ecs::document(stamp.native(event), stamp.time_text);
    // The link goes last in `agent_guard`, the document's last member: a
    // top-level `chain` would be a field ECS does not define.
    render(buf, &doc, chain, 2)
}

/// Serializes `doc` into `buf` (reused), links it into `chain`, and hands
/// back the line's bytes.
fn render<T: Serialize>(
    buf: &mut Vec<u8>,
    doc: &T,
    chain: Option<&mut Chain>,
    depth: usize,
) -> Vec<u8> {
    buf.clear();
    if let Err(err) = serde_json::to_writer(&mut *buf, doc) {
        // The event types serialize infallibly into memory; this is a bug.
        tracing::error!(%err, "rendering an event");
        buf.clear();
        buf.extend_from_slice(b"{}");
    }
    if let Some(chain) = chain {
        chain.link(buf, depth);
    }
    buf.push(b'\n');
    buf.as_slice().to_vec()
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
