//! Calls per agent since the daemon started, for `agent-guard agents`:
//! counted where every event passes, the emitter.
use std::collections::HashMap;

use serde_json::{Map, Value};

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
