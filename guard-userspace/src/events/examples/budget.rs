//! The examples of a spent budget: the call that spent it (held, though
//! its rule allows it) and the one `agent.budget` event of that window.
use super::{HOLD, agent, process, rule};
use crate::events::{budget::exhaustion, model::*};

/// The 41st delete of an `rm -rf` under a `deletes = "40/min"` budget
/// with `on_exceed = "ask"`, and the `agent.budget` event it made.
pub(super) fn spent() -> (Call, DaemonEvent) {
    let call = Call {
        op: Op::Unlink(FileTarget::path("/srv/claims/tmp/cache-0041".into())),
        outcome: CallOutcome::Held,
        agent: Agent::Known(agent()),
        process: process("rm", "/usr/bin/rm", &["rm", "-rf", "/srv/claims/tmp"]),
        rule: rule(Verdict::Allow, "/srv/claims/tmp", 13),
        hold: Some(HoldRef {
            id: HoldId(HOLD + 1),
            timeout_secs: Some(300),
            context: None,
        }),
        grant: None,
        backend: None,
        via: None,
        reason: Some(
            "budget: the agent's deletes budget (40/min) is spent for this window \
             (on_exceed = \"ask\")"
                .into(),
        ),
        budget: Some(BudgetMark {
            budget: BudgetRef {
                name: Some(BudgetName::Deletes),
                limit: Some(40),
                window: Some(BudgetWindow::Minute),
                rate: Some("40/min".into()),
                action: Some(BudgetAction::Ask),
            },
            exhausted: true,
        }),
    };
    let event = DaemonEvent::AgentBudget(exhaustion(&call));
    (call, event)
}
