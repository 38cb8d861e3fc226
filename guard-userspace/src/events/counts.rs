//! Calls per agent since the daemon started, for `agent-guard agents`: an
//! observer of the emitter, so every call event counts exactly once.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use super::{Observer, Stamped, model::CallOutcome};

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
#[derive(Clone, Default)]
pub struct CallCounts(Arc<Mutex<HashMap<String, Counts>>>);

impl CallCounts {
    /// The counts so far, by agent name.
    pub fn snapshot(&self) -> HashMap<String, Counts> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let c = match all.get_mut(&agent.name) {
            Some(c) => c,
            None => all.entry(agent.name.clone()).or_default(),
        };
        match call.outcome {
            CallOutcome::Allowed => c.allowed += 1,
            CallOutcome::Denied => c.denied += 1,
            CallOutcome::Held => c.held += 1,
            CallOutcome::Audited => c.audited += 1,
            CallOutcome::Observed => c.observed += 1,
        }
    }
}
