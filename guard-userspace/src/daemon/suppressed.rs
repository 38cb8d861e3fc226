//! Self-defense records the kernel held back. Each agent may send
//! REFUSAL_BURST records of one kind at once, then one a second (the
//! numbers the control plane uses for `control.refused`); the kernel
//! counts the rest, and this task reports each agent's count in one
//! `guard.tamper` event, what `suppressed`: as soon as the refusals stop,
//! and every ten seconds while they go on. So a looping agent can flood
//! neither the ring buffer nor the log, and every refusal is reported or
//! counted.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use guard_common::{
    REFUSAL_BURST, REFUSAL_CLASSES, REFUSAL_ESCAPE, TAMPER_BPF, TAMPER_FILE, TAMPER_PTRACE,
    TAMPER_SIGNAL,
};
use serde_json::{Value, json};

use super::{
    Shared,
    tasks::{Lease, Owned},
};
use crate::{
    events::{self, selfdefense},
    kernel::RefusalCounters,
};

const POLL: Duration = Duration::from_secs(1);
/// While an agent's refusals go on, its count is reported this often.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// What has been said of one agent's class of refusals.
struct Reported {
    /// The kernel's count when it was last reported.
    reported: u64,
    /// The count at the last poll: unchanged means the refusals stopped.
    last: u64,
    summarized: Instant,
}

/// The counts and what has been said of them, kept across restarts of
/// the reporting task.
pub struct Suppressed {
    counters: RefusalCounters,
    seen: HashMap<(u64, usize), Reported>,
}

impl Suppressed {
    pub fn new(counters: RefusalCounters) -> Self {
        Self {
            counters,
            seen: HashMap::new(),
        }
    }
}

pub async fn report(state: Owned<Suppressed>, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut state: Lease<Suppressed> = state.lease()?;
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        let totals = match state.counters.totals() {
            Ok(t) => t,
            Err(err) => {
                tracing::error!(%err, "reading the suppressed self-defense records");
                continue;
            }
        };
        for (cgroup_id, counts) in totals {
            for (class, now) in counts.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                let r = state.seen.entry((cgroup_id, class)).or_insert(Reported {
                    reported: 0,
                    last: 0,
                    summarized: Instant::now(),
                });
                if now < r.reported {
                    // The kernel forgot the agent (LRU) and counts afresh.
                    r.reported = 0;
                }
                let quiet = now == r.last;
                r.last = now;
                if now > r.reported && (quiet || r.summarized.elapsed() >= SUMMARY_EVERY) {
                    events::emit_now(
                        &shared.emitter,
                        summary(&shared, cgroup_id, class, now - r.reported),
                    );
                    r.reported = now;
                    r.summarized = Instant::now();
                }
            }
        }
    }
}

fn class_name(class: usize) -> &'static str {
    match class as u32 {
        TAMPER_SIGNAL => "signal",
        TAMPER_PTRACE => "ptrace",
        TAMPER_BPF => "bpf",
        TAMPER_FILE => "file",
        REFUSAL_ESCAPE => "escape",
        _ => "unknown",
    }
}

/// The `guard.tamper` event that counts `count` held-back records.
fn summary(shared: &Shared, agent_cgroup_id: u64, class: usize, count: u64) -> Value {
    let agent = {
        let registry = match shared.registry.read() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        registry
            .agents
            .values()
            .chain(registry.retired.values())
            .find(|a| a.cgroup_id == agent_cgroup_id)
            .and_then(|a| registry.agent_ref(a.agent_id, 0))
            .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
            .unwrap_or_else(|| json!({"name": null, "cgroup_id": agent_cgroup_id}))
    };
    let of = class_name(class);
    debug_assert!(class < REFUSAL_CLASSES);
    json!({
        "kind": "guard.tamper",
        "outcome": "denied",
        "agent": agent,
        "rule": selfdefense::rule(),
        "target": {
            "what": "suppressed",
            "action": "refused",
            "of": of,
            "count": count,
            "reason": format!(
                "{count} more refused {of} attempts by this agent, not reported one by one \
                 (at most {REFUSAL_BURST} at once, then one a second)"
            ),
        },
    })
}
