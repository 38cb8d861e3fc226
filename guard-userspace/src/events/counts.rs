//! Calls per agent, counted where every event passes, the emitter: since
//! the daemon started (for `agent-guard agents`), and over the last minutes
//! (for the context of a held call).
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Map, Value, json};

/// Calls of one agent since the daemon started, by outcome.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Counts {
    pub allowed: u64,
    pub denied: u64,
    pub held: u64,
    pub audited: u64,
    pub observed: u64,
}

impl Counts {
    /// Counts one call event `body` (`kind` net.* or file.*).
    pub(super) fn tally(counts: &mut HashMap<String, Counts>, body: &Map<String, Value>) {
        let kind = body.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if !(kind.starts_with("net.") || kind.starts_with("file.")) {
            return;
        }
        let Some(agent) = body
            .get("agent")
            .and_then(|a| a.get("name"))
            .and_then(|n| n.as_str())
        else {
            return;
        };
        let c = counts.entry(agent.to_owned()).or_default();
        match body.get("outcome").and_then(|o| o.as_str()) {
            Some("allowed") => c.allowed += 1,
            Some("denied") => c.denied += 1,
            Some("held") => c.held += 1,
            Some("audited") => c.audited += 1,
            Some("observed") => c.observed += 1,
            _ => {}
        }
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
pub struct Recent {
    /// (step number since the tracker's epoch, calls of that step).
    steps: VecDeque<(u64, StepCounts)>,
    last: VecDeque<LastCall>,
}

/// Calls by (kind, outcome).
type StepCounts = BTreeMap<(String, String), u64>;

struct LastCall {
    time: SystemTime,
    at: Instant,
    kind: String,
    outcome: String,
    target: String,
}

impl Recent {
    /// Records one call event `body` of `agent` (`kind` net.* or file.*).
    pub(super) fn tally(
        recent: &mut HashMap<String, Recent>,
        epoch: Instant,
        time: SystemTime,
        body: &Map<String, Value>,
    ) {
        let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
        let kind = text("kind");
        if !(kind.starts_with("net.") || kind.starts_with("file.")) {
            return;
        }
        let Some(agent) = body
            .get("agent")
            .and_then(|a| a.get("name"))
            .and_then(Value::as_str)
        else {
            return;
        };
        let now = Instant::now();
        let step = now.duration_since(epoch).as_secs() / RECENT_STEP_SECS;
        let r = recent.entry(agent.to_owned()).or_default();
        if r.steps.back().is_none_or(|(s, _)| *s != step) {
            r.steps.push_back((step, BTreeMap::new()));
        }
        let oldest = step.saturating_sub(RECENT_WINDOW.as_secs() / RECENT_STEP_SECS);
        while r.steps.front().is_some_and(|(s, _)| *s < oldest) {
            r.steps.pop_front();
        }
        if let Some((_, counts)) = r.steps.back_mut() {
            *counts
                .entry((kind.to_owned(), text("outcome").to_owned()))
                .or_default() += 1;
        }
        if r.last.len() == RECENT_LAST {
            r.last.pop_front();
        }
        r.last.push_back(LastCall {
            time,
            at: now,
            kind: kind.to_owned(),
            outcome: text("outcome").to_owned(),
            target: target_text(body.get("target")),
        });
    }

    /// What the agent did in the window before now: `calls` by kind, then
    /// outcome, and `last`, the latest calls (oldest first).
    pub fn summary(&self, epoch: Instant) -> Value {
        let now = Instant::now();
        let step = now.duration_since(epoch).as_secs() / RECENT_STEP_SECS;
        let oldest = step.saturating_sub(RECENT_WINDOW.as_secs() / RECENT_STEP_SECS);
        let mut calls: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for (_, counts) in self.steps.iter().filter(|(s, _)| *s >= oldest) {
            for ((kind, outcome), n) in counts {
                *calls.entry(kind).or_default().entry(outcome).or_default() += n;
            }
        }
        let last: Vec<Value> = self
            .last
            .iter()
            .filter(|c| now.duration_since(c.at) <= RECENT_WINDOW)
            .map(|c| {
                json!({
                    "time": humantime::format_rfc3339_seconds(c.time).to_string(),
                    "kind": c.kind, "outcome": c.outcome, "target": c.target,
                })
            })
            .collect();
        json!({"window_secs": RECENT_WINDOW.as_secs(), "calls": calls, "last": last})
    }
}

/// A call's target as one string: the path, or address:port.
fn target_text(target: Option<&Value>) -> String {
    let Some(t) = target else {
        return String::new();
    };
    if let Some(path) = t.get("path").and_then(Value::as_str) {
        return path.to_owned();
    }
    match (t.get("address").and_then(Value::as_str), t.get("port")) {
        (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        _ => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(kind: &str, outcome: &str, path: &str) -> Map<String, Value> {
        json!({"kind": kind, "outcome": outcome, "agent": {"name": "bot"},
               "target": {"path": path}})
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    #[test]
    fn recent_counts_by_kind_and_outcome_and_keeps_the_last_few() {
        let epoch = Instant::now();
        let mut recent = HashMap::new();
        for i in 0..7 {
            let outcome = if i % 2 == 0 { "allowed" } else { "denied" };
            Recent::tally(
                &mut recent,
                epoch,
                SystemTime::now(),
                &call("file.unlink", outcome, &format!("/srv/{i}")),
            );
        }
        Recent::tally(
            &mut recent,
            epoch,
            SystemTime::now(),
            &json!({"kind": "net.connect", "outcome": "allowed", "agent": {"name": "bot"},
                    "target": {"address": "::1", "port": 443}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        // Not a call: not counted.
        Recent::tally(
            &mut recent,
            epoch,
            SystemTime::now(),
            &call("policy.reload", "allowed", "/x"),
        );
        let s = recent["bot"].summary(epoch);
        assert_eq!(s["window_secs"], 300);
        assert_eq!(s["calls"]["file.unlink"]["allowed"], 4);
        assert_eq!(s["calls"]["file.unlink"]["denied"], 3);
        assert_eq!(s["calls"]["net.connect"]["allowed"], 1);
        let last = s["last"].as_array().cloned().unwrap_or_default();
        let targets: Vec<&str> = last.iter().filter_map(|l| l["target"].as_str()).collect();
        assert_eq!(
            targets,
            ["/srv/3", "/srv/4", "/srv/5", "/srv/6", "[::1]:443"]
        );
    }
}
