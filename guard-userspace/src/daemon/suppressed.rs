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
    REFUSAL_BURST, REFUSAL_CLASSES, REFUSAL_ESCAPE, REFUSAL_INTERVAL_NS, TAMPER_BPF, TAMPER_FILE,
    TAMPER_PTRACE, TAMPER_SIGNAL,
};
use parking_lot::Mutex;

use super::{
    Shared, attribute,
    tasks::{Lease, Owned},
};
use crate::{
    events::{
        self,
        model::{
            Agent, DaemonEvent, GuardAction, Refused, SuppressedTarget, SuppressedWhat,
            TamperSuppressed,
        },
    },
    kernel::RefusalCounters,
};

const POLL: Duration = Duration::from_secs(1);

/// The same allowance for the refusals the daemon itself reports (a run's
/// supervised delete of a protected file): a loop of them costs the agent
/// a round trip each, about 13,000 a second, which would still flood.
#[derive(Default)]
pub struct Allowance {
    /// (agent cgroup, class) -> (when one more is within the allowance,
    /// how many were held back so far).
    slots: Mutex<HashMap<(u64, usize), (Instant, u64)>>,
}

impl Allowance {
    /// Whether one more refusal of `class` by the agent may be reported
    /// now; if not, it is counted for the next `suppressed` event.
    pub fn allows(&self, agent_cgroup_id: u64, class: u32) -> bool {
        let interval = Duration::from_nanos(REFUSAL_INTERVAL_NS);
        let now = Instant::now();
        let mut slots = self.slots.lock();
        let (next, held_back) = slots
            .entry((agent_cgroup_id, class as usize))
            .or_insert((now, 0));
        let tat = (*next).max(now);
        if tat.duration_since(now) > interval * (REFUSAL_BURST as u32 - 1) {
            *held_back += 1;
            return false;
        }
        *next = tat + interval;
        true
    }

    /// What it held back so far, per agent cgroup and class (monotonic).
    fn held_back(&self) -> Vec<((u64, usize), u64)> {
        self.slots
            .lock()
            .iter()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(k, (_, n))| (*k, *n))
            .collect()
    }
}
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
        let mut totals = match state.counters.totals() {
            Ok(t) => t,
            Err(err) => {
                tracing::error!(%err, "reading the suppressed self-defense records");
                continue;
            }
        };
        // Both counts only grow (but for the kernel forgetting an agent),
        // so their sum does.
        for ((cgroup_id, class), n) in shared.guard.allowance.held_back() {
            let sum = totals.entry(cgroup_id).or_default();
            if let Some(slot) = sum.get_mut(class) {
                *slot += n;
            }
        }
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
fn summary(shared: &Shared, agent_cgroup_id: u64, class: usize, count: u64) -> DaemonEvent {
    let agent = {
        let registry = shared.registry.read();
        registry
            .agents
            .values()
            .chain(registry.retired.values())
            .find(|a| a.cgroup_id == agent_cgroup_id)
            .and_then(|a| registry.agent_ref(a.agent_id, 0))
            .map_or(
                Agent::Unattributed {
                    cgroup_id: agent_cgroup_id,
                },
                Agent::Known,
            )
    };
    let of = class_name(class);
    debug_assert!(class < REFUSAL_CLASSES);
    let what = if class as u32 == TAMPER_FILE {
        // The kernel cannot tell which refused path calls were the guard's
        // before the daemon resolves them: it counts them all.
        "refused path calls (the guard's files among them, or ordinary permission failures)"
            .to_owned()
    } else if class as u32 == REFUSAL_ESCAPE {
        // The kill is sent whether or not its event is.
        "attempts to leave the agent (each refused, or its process killed)".to_owned()
    } else {
        format!("refused {of} attempts")
    };
    DaemonEvent::TamperSuppressed(TamperSuppressed {
        outcome: Refused::Denied,
        agent,
        rule: attribute::self_defense_rule(),
        target: SuppressedTarget {
            what: SuppressedWhat::Suppressed,
            action: GuardAction::Refused,
            of,
            count,
            reason: format!(
                "{count} more {what} by this agent, not reported one by one \
                 (at most {REFUSAL_BURST} at once, then one a second)"
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_is_a_burst_then_counts() {
        let a = Allowance::default();
        let allowed = (0..25).filter(|_| a.allows(42, TAMPER_FILE)).count();
        // The burst, and perhaps one more if a second passed meanwhile.
        assert!((REFUSAL_BURST as usize..=REFUSAL_BURST as usize + 1).contains(&allowed));
        let held: u64 = a.held_back().iter().map(|(_, n)| n).sum();
        assert_eq!(
            held as usize + allowed,
            25,
            "each refusal reported or counted"
        );
        assert!(a.allows(43, TAMPER_FILE), "another agent has its own");
        assert!(a.allows(42, TAMPER_SIGNAL), "and another kind");
    }
}
