//! Prometheus metrics: counted by an observer of the emitter, so they move
//! exactly with the events operators see, plus values read at scrape time
//! (holds pending, kernel program run time). Served as OpenMetrics text on
//! `[metrics] listen`. Knows the events layer and nothing of the daemon:
//! what it reads at scrape time comes in as a function.
use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicU64},
};

use parking_lot::Mutex;

use anyhow::{Context as _, Result};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::events::{Event, Observer, Stamped, model::DaemonEvent};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentOutcome {
    agent: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Program {
    program: String,
    id: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Webhook {
    url: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    events: Family<KindOutcome, Counter>,
    agent_events: Family<AgentOutcome, Counter>,
    lost: Family<Reason, Counter>,
    decision_latency: Family<Decision, Histogram>,
    holds_pending: Gauge,
    bpf_stats_enabled: Gauge,
    prog_run_time: Family<Program, Counter<f64, AtomicU64>>,
    prog_run_count: Family<Program, Counter>,
    webhook_delivered: Family<Webhook, Counter>,
    webhook_failures: Family<Webhook, Counter>,
    webhook_dropped: Family<Webhook, Counter>,
    /// Our kernel programs, by id (set once they are loaded).
    programs: Mutex<HashMap<u32, String>>,
}

fn decision_histogram() -> Histogram {
    // 50 ms .. ~27 min: a human answering, or the approval timeout.
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agent_guard");
        let events = Family::default();
        registry.register(
            "events",
            "Events emitted, by kind and outcome",
            events.clone(),
        );
        let agent_events = Family::default();
        registry.register(
            "agent_events",
            "Events attributed to an agent, by agent and outcome",
            agent_events.clone(),
        );
        let lost = Family::default();
        registry.register(
            "lost_events",
            "Events lost, by reason (from loss events)",
            lost.clone(),
        );
        let decision_latency =
            Family::<Decision, Histogram>::new_with_constructor(decision_histogram as fn() -> _);
        registry.register(
            "decision_latency_seconds",
            "Time from a hold to its decision, by decision",
            decision_latency.clone(),
        );
        let holds_pending = Gauge::default();
        registry.register(
            "holds_pending",
            "Calls held now, waiting for a decision",
            holds_pending.clone(),
        );
        let bpf_stats_enabled = Gauge::default();
        registry.register(
            "bpf_stats_enabled",
            "1 if kernel.bpf_stats_enabled is on, so program run times are counted",
            bpf_stats_enabled.clone(),
        );
        let prog_run_time = Family::default();
        registry.register(
            "bpf_program_run_time_seconds",
            "Time the kernel spent in each agent-guard program (needs kernel.bpf_stats_enabled=1)",
            prog_run_time.clone(),
        );
        let prog_run_count = Family::default();
        registry.register(
            "bpf_program_runs",
            "Runs of each agent-guard program (needs kernel.bpf_stats_enabled=1)",
            prog_run_count.clone(),
        );
        let webhook_delivered = Family::default();
        registry.register(
            "webhook_deliveries",
            "Webhook documents delivered (2xx), by URL",
            webhook_delivered.clone(),
        );
        let webhook_failures = Family::default();
        registry.register(
            "webhook_failures",
            "Failed webhook attempts (each retry counts), by URL",
            webhook_failures.clone(),
        );
        let webhook_dropped = Family::default();
        registry.register(
            "webhook_dropped",
            "Webhook documents given up after every retry, by URL",
            webhook_dropped.clone(),
        );
        Self {
            registry,
            events,
            agent_events,
            lost,
            decision_latency,
            holds_pending,
            bpf_stats_enabled,
            prog_run_time,
            prog_run_count,
            webhook_delivered,
            webhook_failures,
            webhook_dropped,
            programs: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event.
    fn count(&self, event: &Event) {
        let outcome = event.outcome();
        self.events
            .get_or_create(&KindOutcome {
                kind: event.kind().to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if let Some(agent) = event.agent() {
            self.agent_events
                .get_or_create(&AgentOutcome {
                    agent: agent.name.clone(),
                    outcome: outcome.to_owned(),
                })
                .inc();
        }
        match event {
            Event::Daemon(DaemonEvent::Loss(l)) => {
                self.lost
                    .get_or_create(&Reason {
                        reason: l.loss.reason.name().to_owned(),
                    })
                    .inc_by(l.loss.count);
            }
            Event::Daemon(DaemonEvent::HoldDecision(d)) => {
                self.decision_latency
                    .get_or_create(&Decision {
                        decision: d.hold.decision.name().to_owned(),
                    })
                    .observe(d.hold.waited_ms as f64 / 1000.0);
            }
            _ => {}
        }
    }

    /// The observer to register with the emitter: counting starts then.
    pub fn observer(self: &Arc<Self>) -> Box<dyn Observer> {
        Box::new(Counting(self.clone()))
    }

    /// Renders the OpenMetrics text, refreshing the values read at scrape
    /// time (`holds_pending`: calls held now).
    pub fn render(&self, holds_pending: usize) -> Result<String> {
        self.holds_pending.set(holds_pending as i64);
        self.refresh_programs();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .context("encoding metrics")?;
        Ok(out)
    }

    fn refresh_programs(&self) {
        let enabled = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|s| s.trim() == "1");
        self.bpf_stats_enabled.set(i64::from(enabled));
        if !enabled {
            return;
        }
        let programs = self.programs.lock().clone();
        for info in aya::programs::loaded_programs().flatten() {
            let Some(name) = programs.get(&info.id()) else {
                continue;
            };
            let labels = Program {
                program: name.clone(),
                id: info.id(),
            };
            // The kernel's totals only grow while the program is loaded;
            // the counters follow them.
            let time = self.prog_run_time.get_or_create(&labels);
            let seconds = info.run_time().as_secs_f64();
            if seconds > time.get() {
                time.inc_by(seconds - time.get());
            }
            let runs = self.prog_run_count.get_or_create(&labels);
            let count = info.run_count();
            if count > runs.get() {
                runs.inc_by(count - runs.get());
            }
        }
    }

    /// Names our loaded kernel programs, for run-time metrics.
    pub fn set_programs(&self, ids: Vec<(String, u32)>) {
        *self.programs.lock() = ids.into_iter().map(|(name, id)| (id, name)).collect();
    }

    pub fn webhook_delivered(&self, url: &str) {
        self.webhook_delivered
            .get_or_create(&Webhook { url: url.into() })
            .inc();
    }

    pub fn webhook_failed_attempt(&self, url: &str) {
        self.webhook_failures
            .get_or_create(&Webhook { url: url.into() })
            .inc();
    }

    pub fn webhook_dropped(&self, url: &str) {
        self.webhook_dropped
            .get_or_create(&Webhook { url: url.into() })
            .inc();
    }

    /// Failed webhook attempts so far, for `notify.failed` events.
    pub fn webhook_failures(&self, url: &str) -> u64 {
        self.webhook_failures
            .get_or_create(&Webhook { url: url.into() })
            .get()
    }
}

/// Counts every event it sees.
struct Counting(Arc<Metrics>);

impl Observer for Counting {
    fn observe(&mut self, stamped: &Stamped) {
        self.0.count(&stamped.event);
    }
}

/// What the endpoint reads at scrape time: the calls held now.
pub type HoldsPending = Arc<dyn Fn() -> usize + Send + Sync>;

/// Serves `GET /metrics` on `listener` until the daemon stops. Register
/// [`Metrics::observer`] with the emitter first, so events emitted before
/// this task first runs count too.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    holds_pending: HoldsPending,
) -> Result<()> {
    use axum::{
        http::{StatusCode, header},
        response::IntoResponse as _,
        routing::get,
    };
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let (metrics, holds_pending) = (metrics.clone(), holds_pending.clone());
            async move {
                match metrics.render(holds_pending()) {
                    Ok(text) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(err) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}\n")).into_response()
                    }
                }
            }
        }),
    );
    axum::serve(listener, app)
        .await
        .context("serving [metrics]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::model::Loss;

    #[test]
    fn counts_follow_events() {
        let m = Arc::new(Metrics::new());
        let mut observer = m.observer();
        let examples = crate::events::examples::all();
        for event in examples {
            observer.observe(&Stamped {
                seq: 1,
                time: std::time::SystemTime::now(),
                host: "h".into(),
                event,
            });
        }
        let loss = Loss::new(crate::events::model::LossReason::RingbufFull, 7);
        observer.observe(&Stamped {
            seq: 2,
            time: std::time::SystemTime::now(),
            host: "h".into(),
            event: DaemonEvent::Loss(loss).into(),
        });
        let out = m.render(0).expect("renders");
        for needle in [
            // Held by a rule, and by a spent budget.
            r#"agent_guard_events_total{kind="file.unlink",outcome="held"} 2"#,
            r#"agent_guard_agent_events_total{agent="claims-bot",outcome="allowed"}"#,
            r#"agent_guard_lost_events_total{reason="ringbuf_full"} 7"#,
            r#"agent_guard_decision_latency_seconds_count{decision="approved"} 1"#,
        ] {
            assert!(out.contains(needle), "{needle} missing from:\n{out}");
        }
    }
}
