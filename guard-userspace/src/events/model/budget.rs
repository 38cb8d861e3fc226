//! Blast-radius budgets in events: the `budget` member of a call the
//! agent's budget (not a rule) held or refused, and `agent.budget`, the one
//! event of a spent window.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AgentRef, AnyTarget, CallKind, Op, Process};

/// Which budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetName {
    /// unlink, rmdir, rename, truncate.
    Deletes,
    /// Connects and datagrams to IPv4/IPv6 addresses (not unix sockets).
    Connects,
}

impl BudgetName {
    /// As the policy spells it.
    pub fn name(self) -> &'static str {
        match self {
            BudgetName::Deletes => "deletes",
            BudgetName::Connects => "connects",
        }
    }
}

/// A budget's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
pub enum BudgetWindow {
    #[serde(rename = "1s")]
    Second,
    #[serde(rename = "1min")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
}

/// What a call over budget gets (`on_exceed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAction {
    Ask,
    Deny,
    Freeze,
}

/// A budget as the policy sets it. Each member is absent when a reload
/// took the budget out meanwhile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
pub struct BudgetRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<BudgetName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<BudgetWindow>,
    /// As written in the policy, e.g. `40/min`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<BudgetAction>,
}

/// On a call the budget stopped (its rule's verdict is `allow`).
#[derive(Clone, Debug, Serialize, JsonSchema, Deserialize)]
pub struct BudgetMark {
    #[serde(flatten)]
    pub budget: BudgetRef,
    /// This call spent the window (it also made the `agent.budget` event).
    pub exhausted: bool,
}

/// `agent.budget`: an agent spent one of its budgets. One per window,
/// not per call.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AgentBudget {
    /// What the calls after it get: `held` (ask, freeze) or `denied`.
    pub outcome: BudgetOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentRef>,
    pub budget: BudgetSpent,
    /// The process of the call that spent it.
    pub process: Process,
    /// That call's target.
    #[serde(rename = "target", serialize_with = "Op::serialize_target")]
    #[schemars(with = "AnyTarget")]
    pub op: Op,
    /// That call's kind.
    pub call: CallKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetOutcome {
    Held,
    Denied,
}

impl BudgetOutcome {
    pub fn name(self) -> &'static str {
        match self {
            BudgetOutcome::Held => "held",
            BudgetOutcome::Denied => "denied",
        }
    }
}

/// The budget that was spent.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct BudgetSpent {
    #[serde(flatten)]
    pub budget: BudgetRef,
    /// Calls the window let through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}
