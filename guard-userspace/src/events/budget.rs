//! How a call stopped by its agent's budget reads in events, and the one
//! `agent.budget` event of an exhaustion. The kernel marks such a call's
//! record (CALL_BUDGET, and CALL_BUDGET_EXHAUSTED on the one call that
//! spent the window); the supervisor marks its own calls the same way.
use guard_common::{BudgetClass, CALL_BUDGET, CALL_BUDGET_EXHAUSTED, EventKind};
use serde_json::{Map, Value, json};

use crate::policy::{
    self,
    budget::{class_str, exceed_str},
};

/// The budget a call of `kind` draws on, if it is allowed.
pub const fn class_of(kind: EventKind) -> Option<BudgetClass> {
    match kind {
        EventKind::FileUnlink
        | EventKind::FileRmdir
        | EventKind::FileRename
        | EventKind::FileTruncate => Some(BudgetClass::Deletes),
        EventKind::NetConnect
        | EventKind::NetSend
        | EventKind::NetUnixConnect
        | EventKind::NetUnixSend => Some(BudgetClass::Connects),
        _ => None,
    }
}

/// The reason a held or refused call gives when its budget stopped it.
pub fn reason(class: BudgetClass, rate: &policy::budget::Rate, on_exceed: &str) -> String {
    format!(
        "budget: the agent's {} budget ({}) is spent for this window (on_exceed = \"{on_exceed}\")",
        class_str(class),
        rate.text
    )
}

/// Marks the event `body` of a call of `kind` with `flags` (CALL_* bits)
/// by agent `def`: a `budget` block and the reason, if its budget stopped
/// it. `budget.exhausted` is true on the one call that spent the window.
pub fn mark(
    flags: u8,
    kind: EventKind,
    def: Option<&policy::Agent>,
    body: &mut Map<String, Value>,
) {
    if flags & CALL_BUDGET == 0 {
        return;
    }
    let class = class_of(kind);
    let budget = def.and_then(|d| d.budget.as_ref());
    let found = class.and_then(|c| Some((c, budget?.rate(c)?, budget?)));
    let Some((class, rate, budget)) = found else {
        // A reload took the budget out meanwhile: still say why.
        body.insert(
            "reason".into(),
            "budget: the agent's budget is spent".into(),
        );
        body.insert(
            "budget".into(),
            json!({"exhausted": flags & CALL_BUDGET_EXHAUSTED != 0}),
        );
        return;
    };
    let action = exceed_str(budget.on_exceed);
    body.insert("reason".into(), reason(class, rate, action).into());
    body.insert(
        "budget".into(),
        json!({
            "name": class_str(class),
            "limit": rate.limit,
            "window": rate.window(),
            "rate": rate.text,
            "action": action,
            "exhausted": flags & CALL_BUDGET_EXHAUSTED != 0,
        }),
    );
}

/// Whether the event `body` is the call that exhausted its budget.
pub fn exhausted_by(body: &Map<String, Value>) -> bool {
    body.get("budget")
        .and_then(|b| b.get("exhausted"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The `agent.budget` event for the call (event `body`) that exhausted its
/// budget: which budget, how many calls it counted in which window, and
/// what happens to the ones after.
pub fn exhaustion(body: &Map<String, Value>) -> Value {
    let budget = body.get("budget").cloned().unwrap_or(Value::Null);
    // What happens to the calls after it: refused, or held (freeze too).
    let outcome = match budget.get("action").and_then(Value::as_str) {
        Some("deny") => "denied",
        _ => "held",
    };
    json!({
        "kind": "agent.budget",
        "outcome": outcome,
        "agent": body.get("agent"),
        "budget": {
            "name": budget.get("name"),
            "count": budget.get("limit"),
            "limit": budget.get("limit"),
            "window": budget.get("window"),
            "rate": budget.get("rate"),
            "action": budget.get("action"),
        },
        "process": body.get("process"),
        // The first call over it: what the agent was doing.
        "target": body.get("target"),
        "call": body.get("kind"),
    })
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

    /// The event body of the unlink that spent agent `def`'s budget.
    fn spent(def: &policy::Agent) -> Map<String, Value> {
        let mut body = Map::new();
        let flags = CALL_BUDGET | CALL_BUDGET_EXHAUSTED;
        mark(flags, EventKind::FileUnlink, Some(def), &mut body);
        body
    }

    #[test]
    fn a_call_the_budget_stopped_says_so_and_the_first_one_exhausts_it() {
        let def = agent("ask");
        let body = spent(&def);
        assert!(exhausted_by(&body));
        assert!(
            body["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("budget:"))
        );
        assert_eq!(body["budget"]["limit"], 40);
        assert_eq!(body["budget"]["window"], "1min");
        let event = exhaustion(&body);
        assert_eq!(event["kind"], "agent.budget");
        assert_eq!(event["outcome"], "held");
        assert_eq!(event["budget"]["count"], 40);
        assert_eq!(event["budget"]["action"], "ask");

        let mut later = Map::new();
        mark(CALL_BUDGET, EventKind::FileRename, Some(&def), &mut later);
        assert!(!exhausted_by(&later), "reported once");
        let mut none = Map::new();
        mark(0, EventKind::FileUnlink, Some(&def), &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn renames_and_truncations_are_deletes_datagrams_are_connects() {
        assert_eq!(class_of(EventKind::FileRename), Some(BudgetClass::Deletes));
        assert_eq!(
            class_of(EventKind::FileTruncate),
            Some(BudgetClass::Deletes)
        );
        assert_eq!(class_of(EventKind::NetSend), Some(BudgetClass::Connects));
        assert_eq!(
            class_of(EventKind::NetUnixSend),
            Some(BudgetClass::Connects)
        );
        assert_eq!(class_of(EventKind::FileLink), None);
        assert_eq!(class_of(EventKind::FileMount), None);
    }

    #[test]
    fn the_exhaustion_names_the_action() {
        for (action, outcome) in [("deny", "denied"), ("freeze", "held")] {
            assert_eq!(exhaustion(&spent(&agent(action)))["outcome"], outcome);
        }
    }
}
