//! Calls per agent, counted by an observer of the emitter, so every call
//! event counts exactly once: since the daemon started (for `agent-guard
//! agents`), and over the last minutes (for the context of a held call).
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use super::{
    Observer, Stamped,
    model::{Call, CallOutcome, Op, RecentCall, RecentCalls},
};

/// Calls of one agent since the daemon started, by outcome.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Counts {
    pub allowed: u64,
    pub denied: u64,
    pub held: u64,
    pub audited: u64,
    pub observed: u64,
}

/// The counts of every agent, shared between the observer (which the
/// emitter owns) and whoever reads them.
#[derive(Clone)]
pub struct CallCounts(Arc<Mutex<Tally>>);

struct Tally {
    since_start: HashMap<String, Counts>,
    recent: HashMap<String, Recent>,
    /// Where [`Recent`]'s steps are counted from.
    epoch: Instant,
}

impl Default for CallCounts {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Tally {
            since_start: HashMap::new(),
            recent: HashMap::new(),
            epoch: Instant::now(),
        })))
    }
}

impl CallCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counts so far, by agent name.
    pub fn snapshot(&self) -> HashMap<String, Counts> {
        self.lock().since_start.clone()
    }

    /// What agent `name` did over the last [`RECENT_WINDOW`].
    pub fn recent(&self, name: &str) -> RecentCalls {
        let t = self.lock();
        t.recent.get(name).map_or_else(
            || Recent::default().summary(t.epoch),
            |r| r.summary(t.epoch),
        )
    }

    /// The observer to register with the emitter.
    pub fn observer(&self) -> Box<dyn Observer> {
        Box::new(self.clone())
    }
}

impl Observer for CallCounts {
    fn observe(&mut self, stamped: &Stamped) {
        let super::Event::Call(call) = &stamped.event else {
            return;
        };
        let Some(agent) = call.agent.known() else {
            return;
        };
        let mut t = self.lock();
        let c = match t.since_start.get_mut(&agent.name) {
            Some(c) => c,
            None => t.since_start.entry(agent.name.clone()).or_default(),
        };
        match call.outcome {
            CallOutcome::Allowed => c.allowed += 1,
            CallOutcome::Denied => c.denied += 1,
            CallOutcome::Held => c.held += 1,
            CallOutcome::Audited => c.audited += 1,
            CallOutcome::Observed => c.observed += 1,
        }
        let epoch = t.epoch;
        Recent::tally(&mut t.recent, epoch, stamped.time, &agent.name, call);
    }
}

/// How far back [`Recent`] looks: what on-call sees of an agent's last
/// minutes beside a held call.
pub const RECENT_WINDOW: Duration = Duration::from_secs(300);
/// Counts are kept per step of this length, so memory stays bounded
/// whatever the rate: the window is exact to one step.
const RECENT_STEP_SECS: u64 = 10;
/// How many of the latest calls are kept with their targets.
const RECENT_LAST: usize = 5;

/// One agent's calls over the last [`RECENT_WINDOW`]: counts per kind and
/// outcome, and the latest few calls with their targets.
#[derive(Default)]
struct Recent {
    /// (step number since the tracker's epoch, calls of that step).
    steps: VecDeque<(u64, StepCounts)>,
    last: VecDeque<LastCall>,
}

/// Calls by (kind, outcome).
type StepCounts = BTreeMap<(&'static str, &'static str), u64>;

struct LastCall {
    time: SystemTime,
    at: Instant,
    kind: &'static str,
    outcome: &'static str,
    target: String,
}

impl Recent {
    /// Records call `call` of agent `agent`, if it is a net.* or file.*
    /// call (an escape or a tamper is not what an approver weighs).
    fn tally(
        recent: &mut HashMap<String, Recent>,
        epoch: Instant,
        time: SystemTime,
        agent: &str,
        call: &Call,
    ) {
        let kind = call.kind().name();
        if !(kind.starts_with("net.") || kind.starts_with("file.")) {
            return;
        }
        let outcome = call.outcome.name();
        let now = Instant::now();
        let step = now.duration_since(epoch).as_secs() / RECENT_STEP_SECS;
        let r = match recent.get_mut(agent) {
            Some(r) => r,
            None => recent.entry(agent.to_owned()).or_default(),
        };
        if r.steps.back().is_none_or(|(s, _)| *s != step) {
            r.steps.push_back((step, BTreeMap::new()));
        }
        let oldest = step.saturating_sub(RECENT_WINDOW.as_secs() / RECENT_STEP_SECS);
        while r.steps.front().is_some_and(|(s, _)| *s < oldest) {
            r.steps.pop_front();
        }
        if let Some((_, counts)) = r.steps.back_mut() {
            *counts.entry((kind, outcome)).or_default() += 1;
        }
        if r.last.len() == RECENT_LAST {
            r.last.pop_front();
        }
        r.last.push_back(LastCall {
            time,
            at: now,
            kind,
            outcome,
            target: target_text(&call.op),
        });
    }

    /// What the agent did in the window before now.
    fn summary(&self, epoch: Instant) -> RecentCalls {
        let now = Instant::now();
        let step = now.duration_since(epoch).as_secs() / RECENT_STEP_SECS;
        let oldest = step.saturating_sub(RECENT_WINDOW.as_secs() / RECENT_STEP_SECS);
        let mut calls: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (_, counts) in self.steps.iter().filter(|(s, _)| *s >= oldest) {
            for ((kind, outcome), n) in counts {
                *calls
                    .entry((*kind).to_owned())
                    .or_default()
                    .entry((*outcome).to_owned())
                    .or_default() += n;
            }
        }
        let last = self
            .last
            .iter()
            .filter(|c| now.duration_since(c.at) <= RECENT_WINDOW)
            .map(|c| RecentCall {
                time: humantime::format_rfc3339_seconds(c.time).to_string(),
                kind: c.kind.to_owned(),
                outcome: c.outcome.to_owned(),
                target: c.target.clone(),
            })
            .collect();
        RecentCalls {
            window_secs: RECENT_WINDOW.as_secs(),
            calls,
            last,
        }
    }
}

/// A call's target as one string: the path (a rename's or link's as
/// `from -> to`), or address:port.
fn target_text(op: &Op) -> String {
    if let Some(d) = op.destination() {
        return match d.address {
            std::net::IpAddr::V6(a) => format!("[{a}]:{}", d.port),
            std::net::IpAddr::V4(a) => format!("{a}:{}", d.port),
        };
    }
    match (op.path(), op.new_path()) {
        (Some(from), Some(to)) => format!("{from} -> {to}"),
        (Some(path), None) => path.to_owned(),
        (None, _) => op.target_json().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, examples};

    fn stamped(event: Event) -> Stamped {
        Stamped {
            seq: 1,
            time: SystemTime::now(),
            host: "h".into(),
            event,
        }
    }

    /// An example call of `kind`, of agent `bot`, with `outcome` and `path`.
    fn call(kind: &str, outcome: CallOutcome, path: Option<&str>) -> Event {
        let mut c = examples::all()
            .into_iter()
            .find_map(|e| match e {
                Event::Call(c) if c.kind().name() == kind && c.agent.known().is_some() => Some(c),
                _ => None,
            })
            .unwrap_or_else(|| panic!("an example {kind}"));
        c.outcome = outcome;
        if let (Some(path), Op::Unlink(t)) = (path, &mut c.op) {
            t.path = Some(path.to_owned());
        }
        if let crate::events::model::Agent::Known(a) = &mut c.agent {
            a.name = "bot".into();
        }
        Event::Call(c)
    }

    #[test]
    fn recent_counts_by_kind_and_outcome_and_keeps_the_last_few() {
        let mut counts = CallCounts::default();
        for i in 0..7 {
            let outcome = if i % 2 == 0 {
                CallOutcome::Allowed
            } else {
                CallOutcome::Denied
            };
            counts.observe(&stamped(call(
                "file.unlink",
                outcome,
                Some(&format!("/srv/{i}")),
            )));
        }
        counts.observe(&stamped(call("net.connect", CallOutcome::Allowed, None)));
        // Not a call an approver weighs: not counted.
        counts.observe(&stamped(call("agent.escape", CallOutcome::Denied, None)));
        let s = counts.recent("bot");
        assert_eq!(s.window_secs, 300);
        assert_eq!(s.calls["file.unlink"]["allowed"], 4);
        assert_eq!(s.calls["file.unlink"]["denied"], 3);
        assert_eq!(s.calls["net.connect"]["allowed"], 1);
        assert!(!s.calls.contains_key("agent.escape"));
        let targets: Vec<&str> = s.last.iter().map(|l| l.target.as_str()).collect();
        assert_eq!(targets[..4], ["/srv/3", "/srv/4", "/srv/5", "/srv/6"]);
        assert!(targets[4].contains(':'), "{targets:?}");
        assert_eq!(
            counts.recent("nobody"),
            RecentCalls {
                window_secs: 300,
                ..RecentCalls::default()
            }
        );
    }
}
