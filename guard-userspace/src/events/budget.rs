//! How a call stopped by its agent's budget reads in events, and the one
//! `agent.budget` event of an exhaustion. The kernel marks such a call's
//! record (CALL_BUDGET, and CALL_BUDGET_EXHAUSTED on the one call that
//! spent the window); the supervisor marks its own calls the same way.
use guard_common::{BudgetClass, CALL_BUDGET, CALL_BUDGET_EXHAUSTED, Exceed};

use super::model::{
    AgentBudget, BudgetAction, BudgetMark, BudgetName, BudgetOutcome, BudgetRef, BudgetSpent,
    BudgetWindow, Call, CallKind,
};
use crate::policy::{
    self,
    budget::{class_str, exceed_str},
};

/// The budget a call of `kind` draws on, if it is allowed.
pub const fn class_of(kind: CallKind) -> Option<BudgetClass> {
    match kind {
        CallKind::Unlink | CallKind::Rmdir | CallKind::Rename | CallKind::Truncate => {
            Some(BudgetClass::Deletes)
        }
        CallKind::Connect | CallKind::Send => Some(BudgetClass::Connects),
        _ => None,
    }
}

fn name(class: BudgetClass) -> BudgetName {
    match class {
        BudgetClass::Deletes => BudgetName::Deletes,
        BudgetClass::Connects => BudgetName::Connects,
    }
}

fn window(rate: &policy::budget::Rate) -> BudgetWindow {
    match rate.period_ms {
        1_000 => BudgetWindow::Second,
        60_000 => BudgetWindow::Minute,
        _ => BudgetWindow::Hour,
    }
}

fn action(e: Exceed) -> BudgetAction {
    match e {
        Exceed::Ask => BudgetAction::Ask,
        Exceed::Deny => BudgetAction::Deny,
        Exceed::Freeze => BudgetAction::Freeze,
    }
}

/// Marks `call` (of agent `def`) with `flags` (CALL_* bits): a `budget`
/// member and the reason, if its budget stopped it.
pub fn mark(flags: u8, call: &mut Call, def: Option<&policy::Agent>) {
    if flags & CALL_BUDGET == 0 {
        return;
    }
    let exhausted = flags & CALL_BUDGET_EXHAUSTED != 0;
    let class = class_of(call.kind());
    let budget = def.and_then(|d| d.budget.as_ref());
    let found = class.and_then(|c| Some((c, budget?.rate(c)?, budget?)));
    let Some((class, rate, budget)) = found else {
        // A reload took the budget out meanwhile: still say why.
        call.reason = Some("budget: the agent's budget is spent".into());
        call.budget = Some(BudgetMark {
            budget: BudgetRef {
                name: class.map(name),
                ..BudgetRef::default()
            },
            exhausted,
        });
        return;
    };
    call.reason = Some(format!(
        "budget: the agent's {} budget ({}) is spent for this window (on_exceed = \"{}\")",
        class_str(class),
        rate.text,
        exceed_str(budget.on_exceed)
    ));
    call.budget = Some(BudgetMark {
        budget: BudgetRef {
            name: Some(name(class)),
            limit: Some(rate.limit),
            window: Some(window(rate)),
            rate: Some(rate.text.clone()),
            action: Some(action(budget.on_exceed)),
        },
        exhausted,
    });
}

/// Whether `call` is the one that exhausted its budget.
pub fn exhausted_by(call: &Call) -> bool {
    call.budget.as_ref().is_some_and(|b| b.exhausted)
}

/// The `agent.budget` event for the call that exhausted its budget: which
/// budget, how many calls its window let through, what happens next.
pub fn exhaustion(call: &Call) -> AgentBudget {
    let budget = call
        .budget
        .as_ref()
        .map(|b| b.budget.clone())
        .unwrap_or_default();
    let action = budget.action;
    AgentBudget {
        // What the calls after it get: refused, or held (freeze too).
        outcome: if action == Some(BudgetAction::Deny) {
            BudgetOutcome::Denied
        } else {
            BudgetOutcome::Held
        },
        agent: call.agent.known().cloned(),
        budget: BudgetSpent {
            // The window let through exactly its limit.
            count: budget.limit,
            budget,
        },
        process: call.process.clone(),
        op: call.op.clone(),
        call: call.kind(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(on_exceed: &str) -> policy::Agent {
        let text = format!(
            "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"g/a\"\n\
             [agent.budget]\ndeletes = \"40/min\"\non_exceed = \"{on_exceed}\"\n"
        );
        let mut p = policy::parse("p.toml", &text).expect("valid");
        p.agents.remove(0)
    }

    fn an_unlink() -> Call {
        crate::events::examples::all()
            .into_iter()
            .find_map(|e| match e {
                crate::events::Event::Call(c) if c.kind() == CallKind::Unlink => Some(c),
                _ => None,
            })
            .expect("an unlink example")
    }

    #[test]
    fn renames_and_truncations_are_deletes_datagrams_are_connects() {
        assert_eq!(class_of(CallKind::Rename), Some(BudgetClass::Deletes));
        assert_eq!(class_of(CallKind::Truncate), Some(BudgetClass::Deletes));
        assert_eq!(class_of(CallKind::Send), Some(BudgetClass::Connects));
        assert_eq!(class_of(CallKind::UnixSend), None);
        assert_eq!(class_of(CallKind::UnixConnect), None);
        assert_eq!(class_of(CallKind::Link), None);
        assert_eq!(class_of(CallKind::Mount), None);
    }

    #[test]
    fn a_call_the_budget_stopped_says_so_and_the_exhaustion_names_the_action() {
        for (on_exceed, outcome) in [("ask", "held"), ("deny", "denied"), ("freeze", "held")] {
            let def = agent(on_exceed);
            let mut call = an_unlink();
            mark(CALL_BUDGET | CALL_BUDGET_EXHAUSTED, &mut call, Some(&def));
            assert!(exhausted_by(&call));
            assert!(
                call.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("budget:"))
            );
            let spent = exhaustion(&call);
            assert_eq!(spent.outcome.name(), outcome);
            assert_eq!(
                (spent.budget.count, spent.budget.budget.limit),
                (Some(40), Some(40))
            );
            assert_eq!(spent.budget.budget.window, Some(BudgetWindow::Minute));
            let mut later = an_unlink();
            mark(CALL_BUDGET, &mut later, Some(&def));
            assert!(!exhausted_by(&later), "reported once");
        }
    }
}
