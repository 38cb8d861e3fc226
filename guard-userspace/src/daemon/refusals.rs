//! `control.refused` events, bounded so that a flood of refused requests
//! cannot fill the disk or drown the stream: each source (a uid and where
//! its process sits, or a web client) has its first refusals reported one
//! by one, then one a second; the rest are counted, and each source's
//! count is reported in one event when its quiet period ends.
//!
//! This is the one place `control.refused` events are built.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::events::{
    self, SharedEmitter,
    model::{ControlRefused, DaemonEvent, Peer, Refusal, Refused},
};

/// Refusals a source may have reported one by one before limiting starts.
const BURST: f64 = 10.0;
/// Refill rate of a source's allowance, per second.
const PER_SEC: f64 = 1.0;
/// How often a source's suppressed refusals are reported, at most.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Sources tracked one by one; beyond this, new sources share one bucket
/// (a flood from many uids still cannot grow memory without bound).
const MAX_SOURCES: usize = 1024;
const OVERFLOW: &str = "other sources";

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refusals not reported one by one since the last summary.
    suppressed: u64,
    /// The `by` of the last suppressed refusal, for the summary.
    last_by: Peer,
    summarized: Instant,
}

pub struct Refusals {
    emitter: SharedEmitter,
    sources: Mutex<HashMap<String, Bucket>>,
}

impl Refusals {
    pub fn new(emitter: SharedEmitter) -> Self {
        Self {
            emitter,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Reports a refusal; `source` says whose allowance it draws on.
    pub fn report(&self, source: &str, control: Refusal) {
        let now = Instant::now();
        let report = {
            let mut sources = self.sources.lock();
            let key = if sources.len() >= MAX_SOURCES && !sources.contains_key(source) {
                OVERFLOW
            } else {
                source
            };
            let bucket = sources.entry(key.to_owned()).or_insert_with(|| Bucket {
                tokens: BURST,
                at: now,
                suppressed: 0,
                last_by: Peer::default(),
                summarized: now,
            });
            let elapsed = now.duration_since(bucket.at).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * PER_SEC).min(BURST);
            bucket.at = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                true
            } else {
                bucket.suppressed += 1;
                bucket.last_by = control.by.clone();
                false
            }
        };
        if report {
            emit(&self.emitter, control);
        }
    }

    /// Reports each source's suppressed refusals (one event per source at
    /// most every [`SUMMARY_EVERY`]) and forgets sources that are quiet.
    /// Called once a second.
    pub fn flush(&self) {
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut sources = self.sources.lock();
            for (source, b) in sources.iter_mut() {
                if b.suppressed > 0 && now.duration_since(b.summarized) >= SUMMARY_EVERY {
                    due.push((source.clone(), b.suppressed, std::mem::take(&mut b.last_by)));
                    b.suppressed = 0;
                    b.summarized = now;
                }
            }
            sources.retain(|_, b| {
                b.suppressed > 0
                    || b.tokens + now.duration_since(b.at).as_secs_f64() * PER_SEC < BURST
            });
        }
        for (source, count, by) in due {
            let mut summary = Refusal::new(
                "suppressed",
                by,
                format!(
                    "{count} more refusals of {source}, not reported one by one (at most \
                     {BURST} at once, then one a second)"
                ),
            );
            summary.count = Some(count);
            emit(&self.emitter, summary);
        }
    }
}

fn emit(emitter: &SharedEmitter, control: Refusal) {
    events::emit_now(
        emitter,
        DaemonEvent::ControlRefused(ControlRefused {
            outcome: Refused::Denied,
            control,
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals() -> (
        Refusals,
        tokio::sync::mpsc::Receiver<crate::events::sinks::Line>,
    ) {
        let emitter = crate::events::Emitter::start(crate::events::Config {
            sinks: vec![crate::policy::sink::SinkConfig {
                name: "none".into(),
                kind: crate::policy::sink::SinkKind::Unix {
                    path: "/nonexistent/refusals-test.sock".into(),
                },
                format: None,
                queue: None,
            }],
            format: crate::policy::sink::Format::V1,
            alg: crate::events::chain::Alg::Sha256,
            state_file: None,
        })
        .expect("emitter");
        let rx = events::with(&emitter, |e| {
            e.subscribe("test", None, crate::policy::sink::Format::V1, 100_000)
        });
        (Refusals::new(emitter), rx)
    }

    fn refusal(op: &str, uid: u32) -> Refusal {
        let by = Peer {
            uid: Some(uid),
            ..Peer::default()
        };
        Refusal::new(op, by, "x")
    }

    fn drain(
        rx: &mut tokio::sync::mpsc::Receiver<crate::events::sinks::Line>,
    ) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Ok(line) = rx.try_recv() {
            out.push(serde_json::from_slice(&line.bytes).expect("json"));
        }
        out
    }

    #[test]
    fn a_flood_is_reported_as_a_burst_then_one_count() {
        let (r, mut rx) = refusals();
        for _ in 0..5000 {
            r.report("uid 65534", refusal("status", 65534));
        }
        // Another source is not silenced by the flood.
        r.report("uid 0 in agent a", refusal("approve", 0));
        let seen = drain(&mut rx);
        let status = seen
            .iter()
            .filter(|e| e["control"]["op"] == "status")
            .count();
        assert!(status <= BURST as usize + 1, "{status} reported one by one");
        assert!(seen.iter().any(|e| e["control"]["op"] == "approve"));
        // The summary comes once the source's quiet period has passed.
        {
            let mut s = r.sources.lock();
            let b = s.get_mut("uid 65534").expect("bucket");
            b.summarized -= SUMMARY_EVERY;
        }
        r.flush();
        let summary = drain(&mut rx);
        assert_eq!(summary.len(), 1, "{summary:?}");
        let c = &summary[0]["control"];
        assert_eq!(c["op"], "suppressed");
        assert_eq!(
            c["count"].as_u64().expect("count") + status as u64,
            5000,
            "every refusal is either reported or counted"
        );
        assert_eq!(c["by"]["uid"], 65534);
    }

    #[test]
    fn sources_are_bounded() {
        let (r, _rx) = refusals();
        for uid in 0..(MAX_SOURCES as u32 + 500) {
            r.report(&format!("uid {uid}"), refusal("status", uid));
        }
        assert!(r.sources.lock().len() <= MAX_SOURCES + 1);
    }
}
