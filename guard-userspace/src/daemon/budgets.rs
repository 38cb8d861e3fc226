//! Blast-radius budgets: the daemon's side. It writes each agent's
//! budgets into the kernel's BUDGETS map (where the programs count), keeps
//! a budget's window across a reload (a rewritten agent gets a new id, not
//! a fresh allowance), charges the calls the seccomp supervisor decides to
//! the same cells with the same rule, and counts exhaustions for `status`.
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use guard_common::{BudgetCell, BudgetClass, BudgetKey, Charge};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::{
    events::{
        budget::exhaustion,
        model::{BudgetAction, By, Call, DaemonEvent},
    },
    policy,
};

pub struct Budgets {
    map: Mutex<BpfHashMap<MapData, BudgetKey, BudgetCell>>,
    /// Exhaustions reported since the daemon started (`status`).
    hits: AtomicU64,
}

/// CLOCK_BOOTTIME in milliseconds, the kernel's clock for budgets.
pub fn now_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

fn key(agent_id: u32, class: BudgetClass) -> BudgetKey {
    BudgetKey {
        agent_id,
        class: class.raw(),
    }
}

impl Budgets {
    pub fn new(map: BpfHashMap<MapData, BudgetKey, BudgetCell>) -> Self {
        Self {
            map: Mutex::new(map),
            hits: AtomicU64::new(0),
        }
    }

    /// Writes agent `def`'s budgets under `agent_id`, and takes out a class
    /// it no longer budgets. `carry`: the id this one replaces, whose
    /// window (state) goes on under the new id.
    pub fn set(&self, agent_id: u32, def: &policy::Agent, carry: Option<u32>) -> Result<()> {
        let mut map = self.map.lock();
        for &class in BudgetClass::ALL {
            let rate = def.budget.as_ref().and_then(|b| Some((b.rate(class)?, b)));
            let Some((rate, budget)) = rate else {
                // Absent already is fine: nothing to count.
                let _ = map.remove(&key(agent_id, class));
                continue;
            };
            let state = carry
                .and_then(|old| map.get(&key(old, class), 0).ok())
                .map_or(0, |c| c.state);
            let cell = BudgetCell {
                state,
                limit: rate.limit,
                period_ms: rate.period_ms,
                on_exceed: budget.on_exceed.raw(),
                _pad: [0; 7],
            };
            map.insert(key(agent_id, class), cell, 0).with_context(|| {
                format!(
                    "writing the {} budget of agent {}",
                    policy::budget::class_str(class),
                    def.name
                )
            })?;
        }
        Ok(())
    }

    /// Takes out every budget of `agent_id` (a retired id).
    pub fn drop_agent(&self, agent_id: u32) {
        let mut map = self.map.lock();
        for &class in BudgetClass::ALL {
            let _ = map.remove(&key(agent_id, class));
        }
    }

    /// Charges one call the supervisor decides, with the kernel's rule, to
    /// the kernel's cell. The lock orders the supervisor's own updates; the
    /// programs never count the same class on a host where the supervisor
    /// does (deletes go to one backend or the other).
    pub fn charge(&self, agent_id: u32, class: BudgetClass) -> Charge {
        let mut map = self.map.lock();
        let k = key(agent_id, class);
        let Ok(mut cell) = map.get(&k, 0) else {
            return Charge::Free;
        };
        let (state, taken) =
            guard_common::budget::step(cell.state, now_ms(), cell.limit, cell.period_ms);
        cell.state = state;
        if let Err(err) = map.insert(k, cell, 0) {
            // Counted nowhere: fail closed.
            tracing::error!(%err, agent_id, "updating a budget; the call is refused");
            return Charge::Over {
                action: guard_common::Exceed::Deny.raw(),
                first: false,
            };
        }
        guard_common::budget::charge(taken, cell.on_exceed)
    }

    /// Counts one exhaustion (an `agent.budget` event).
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Each budget of agent `def` (id `agent_id`): used/limit in the open
    /// window, for `agents` and the web page.
    pub fn usage(&self, agent_id: u32, def: &policy::Agent) -> Value {
        let Some(budget) = &def.budget else {
            return Value::Null;
        };
        let map = self.map.lock();
        let now = now_ms();
        let mut out = serde_json::Map::new();
        for &class in BudgetClass::ALL {
            let Some(rate) = budget.rate(class) else {
                continue;
            };
            let cell = map.get(&key(agent_id, class), 0).ok();
            let used = cell.map_or(0, |c| guard_common::budget::used(&c, now));
            let exhausted = cell.is_some_and(|c| guard_common::budget::exhausted(&c, now));
            out.insert(
                policy::budget::class_str(class).into(),
                json!({
                    "used": used,
                    "limit": rate.limit,
                    "window": rate.window(),
                    "exhausted": exhausted,
                }),
            );
        }
        out.insert(
            "on_exceed".into(),
            policy::budget::exceed_str(budget.on_exceed).into(),
        );
        Value::Object(out)
    }
}

/// After `call` spent its agent's budget: one `agent.budget` event (which
/// fires webhooks), counted for `status`; and with `on_exceed =
/// "freeze"`, the agent frozen as `agent-guard freeze` would (the calls
/// over budget are held meanwhile).
pub fn exhausted(shared: &std::sync::Arc<super::Shared>, call: &Call) {
    shared.budgets.hit();
    let event = exhaustion(call);
    let freeze = event.budget.budget.action == Some(BudgetAction::Freeze);
    let agent = event.agent.as_ref().map(|a| a.name.clone());
    tracing::warn!(agent = ?agent, budget = ?event.budget, "budget spent");
    crate::events::emit_now(&shared.emitter, DaemonEvent::AgentBudget(event));
    let (true, Some(agent)) = (freeze, agent) else {
        return;
    };
    let already = shared
        .registry()
        .agent_by_name(&agent)
        .is_some_and(|a| a.frozen);
    if already {
        return;
    }
    let by = By {
        uid: None,
        user: "agent-guard".into(),
    };
    let reason = Some("its budget is spent (on_exceed = \"freeze\")".to_owned());
    if let Err(err) = super::admin::switch_and_report(shared, &agent, true, by, reason) {
        // The calls over budget are held anyway: nothing runs meanwhile.
        tracing::error!(%err, %agent, "freezing an agent whose budget is spent");
    }
}
