//! Events the daemon originates (all but guarded calls), and the decision
//! on a held call. The other kinds are in `runs.rs` and `control.rs`.
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    Agent, AgentExit, AgentExpired, AgentKill, AgentMode, AgentRef, AgentStart, By, Call, CallKind,
    ControlRefused, DaemonStart, DaemonStop, DaemonTask, HoldId, Loss, NotifyFailed, NotifyFailure,
    Op, PolicyReload, Process, Rule, TamperSuppressed, Text,
    call::{AnyTarget, Backend, GrantRef},
};

/// Every daemon-originated kind.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "kind")]
pub enum DaemonEvent {
    /// A hold ended (approved, denied, expired or killed).
    #[serde(rename = "hold.decision")]
    HoldDecision(Box<HoldDecision>),
    /// A process joined a run (`agent-guard run`).
    #[serde(rename = "agent.start")]
    AgentStart(AgentStart),
    /// A run ended.
    #[serde(rename = "agent.exit")]
    AgentExit(AgentExit),
    /// An operator killed a held call's run, or an agent's processes.
    #[serde(rename = "agent.kill")]
    AgentKill(AgentKill),
    /// An operator froze or thawed an agent.
    #[serde(rename = "agent.mode")]
    AgentMode(AgentMode),
    /// An agent spent one of its budgets (once per window).
    #[serde(rename = "agent.budget")]
    AgentBudget(super::AgentBudget),
    /// An agent's `expires` passed: the daemon froze it.
    #[serde(rename = "agent.expired")]
    AgentExpired(AgentExpired),
    #[serde(rename = "policy.reload")]
    PolicyReload(PolicyReload),
    /// Someone asked for something they may not do.
    #[serde(rename = "control.refused")]
    ControlRefused(ControlRefused),
    /// A webhook delivery failed.
    #[serde(rename = "notify.failed")]
    NotifyFailed(NotifyFailed),
    /// Events that were lost, and where.
    #[serde(rename = "loss")]
    Loss(Loss),
    #[serde(rename = "daemon.start")]
    DaemonStart(DaemonStart),
    #[serde(rename = "daemon.stop")]
    DaemonStop(DaemonStop),
    /// A daemon task failed; it is restarted (enforcement is never
    /// released for it).
    #[serde(rename = "daemon.task")]
    DaemonTask(DaemonTask),
    /// An agent's self-defense refusals held back by the allowance, counted
    /// (`target.what` `suppressed`).
    #[serde(rename = "guard.tamper")]
    TamperSuppressed(TamperSuppressed),
}

impl DaemonEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            DaemonEvent::HoldDecision(_) => "hold.decision",
            DaemonEvent::AgentStart(_) => "agent.start",
            DaemonEvent::AgentExit(_) => "agent.exit",
            DaemonEvent::AgentKill(_) => "agent.kill",
            DaemonEvent::AgentMode(_) => "agent.mode",
            DaemonEvent::AgentBudget(_) => "agent.budget",
            DaemonEvent::AgentExpired(_) => "agent.expired",
            DaemonEvent::PolicyReload(_) => "policy.reload",
            DaemonEvent::ControlRefused(_) => "control.refused",
            DaemonEvent::NotifyFailed(_) => "notify.failed",
            DaemonEvent::Loss(_) => "loss",
            DaemonEvent::DaemonStart(_) => "daemon.start",
            DaemonEvent::DaemonStop(_) => "daemon.stop",
            DaemonEvent::DaemonTask(_) => "daemon.task",
            DaemonEvent::TamperSuppressed(_) => "guard.tamper",
        }
    }

    pub fn outcome(&self) -> &'static str {
        match self {
            DaemonEvent::HoldDecision(d) => d.outcome.name(),
            DaemonEvent::PolicyReload(r) => r.outcome.name(),
            DaemonEvent::DaemonTask(t) => t.outcome.name(),
            DaemonEvent::ControlRefused(_) | DaemonEvent::TamperSuppressed(_) => "denied",
            DaemonEvent::AgentBudget(b) => b.outcome.name(),
            DaemonEvent::NotifyFailed(_) => "failed",
            DaemonEvent::Loss(_) => "lost",
            DaemonEvent::AgentStart(_)
            | DaemonEvent::AgentExit(_)
            | DaemonEvent::AgentKill(_)
            | DaemonEvent::AgentMode(_)
            | DaemonEvent::AgentExpired(_)
            | DaemonEvent::DaemonStart(_)
            | DaemonEvent::DaemonStop(_) => "success",
        }
    }

    pub fn agent(&self) -> Option<&AgentRef> {
        match self {
            DaemonEvent::HoldDecision(d) => d.agent.known(),
            DaemonEvent::AgentStart(s) => s.agent.as_ref(),
            DaemonEvent::AgentExit(e) => e.agent.as_ref(),
            DaemonEvent::AgentMode(m) => m.agent.as_ref(),
            DaemonEvent::AgentBudget(b) => b.agent.as_ref(),
            DaemonEvent::AgentExpired(e) => e.agent.as_ref(),
            DaemonEvent::TamperSuppressed(s) => s.agent.known(),
            DaemonEvent::AgentKill(_)
            | DaemonEvent::PolicyReload(_)
            | DaemonEvent::ControlRefused(_)
            | DaemonEvent::NotifyFailed(_)
            | DaemonEvent::Loss(_)
            | DaemonEvent::DaemonStart(_)
            | DaemonEvent::DaemonStop(_)
            | DaemonEvent::DaemonTask(_) => None,
        }
    }

    pub fn truncated(&self) -> bool {
        let cut = |t: &Option<Text>| t.as_ref().is_some_and(Text::was_cut);
        match self {
            DaemonEvent::HoldDecision(d) => d.process.truncated() || cut(&d.hold.reason),
            DaemonEvent::AgentStart(s) => s.process.truncated(),
            DaemonEvent::AgentMode(m) => cut(&m.reason),
            DaemonEvent::AgentBudget(b) => b.process.truncated(),
            DaemonEvent::AgentExpired(e) => cut(&e.expiry.warning),
            DaemonEvent::PolicyReload(r) => cut(&r.policy.error),
            DaemonEvent::ControlRefused(r) => r.control.truncated(),
            DaemonEvent::DaemonTask(t) => t.task.error.was_cut(),
            DaemonEvent::NotifyFailed(n) => match &n.notify {
                NotifyFailure::Attempt { error, .. } => error.was_cut(),
                NotifyFailure::EventsLost { .. } => false,
            },
            DaemonEvent::Loss(l) => cut(&l.loss.detail),
            DaemonEvent::AgentExit(_)
            | DaemonEvent::AgentKill(_)
            | DaemonEvent::DaemonStart(_)
            | DaemonEvent::DaemonStop(_)
            | DaemonEvent::TamperSuppressed(_) => false,
        }
    }
}

/// `hold.decision`: the held call's members, and how its hold ended.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct HoldDecision {
    pub outcome: DecisionOutcome,
    pub agent: Agent,
    pub process: Process,
    pub rule: Rule,
    /// The held call's target.
    #[serde(rename = "target", serialize_with = "Op::serialize_target")]
    #[schemars(with = "AnyTarget")]
    pub op: Op,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    pub hold: Decided,
}

impl HoldDecision {
    /// The decision on `call` (the held call) as `decided` says.
    pub fn new(call: Call, decided: Decided) -> Self {
        let outcome = if decided.decision == Decision::Approved {
            DecisionOutcome::Allowed
        } else {
            DecisionOutcome::Denied
        };
        Self {
            outcome,
            agent: call.agent,
            process: call.process,
            rule: call.rule,
            op: call.op,
            grant: call.grant,
            backend: call.backend,
            hold: decided,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionOutcome {
    Allowed,
    Denied,
}

impl DecisionOutcome {
    pub fn name(self) -> &'static str {
        match self {
            DecisionOutcome::Allowed => "allowed",
            DecisionOutcome::Denied => "denied",
        }
    }
}

/// How a hold ended.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Decided {
    pub id: HoldId,
    /// The held call's kind.
    pub call: CallKind,
    pub decision: Decision,
    pub by: By,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Text>,
    pub waited_ms: u64,
    /// `once`, or the grant an approval with a scope became.
    pub scope: Scope,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Denied,
    /// No decision before `approval_timeout_secs`.
    Expired,
    /// The run (or agent) was killed; the call never completes.
    Killed,
    /// The held thread made another call that had to be held: the kernel
    /// holds that one instead, and this call, if made again, is judged
    /// afresh.
    Superseded,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Denied => "denied",
            Decision::Expired => "expired",
            Decision::Killed => "killed",
            Decision::Superseded => "superseded",
        }
    }
}

/// What an approval covers.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Scope {
    /// This call only.
    Once(Once),
    /// Later calls the grant covers, for its time.
    Grant(Grant),
}

impl Scope {
    pub fn once() -> Self {
        Scope::Once(Once::Once)
    }
}

#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Once {
    Once,
}

/// A grant: an approval's scope, checked by the kernel until it expires.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Grant {
    pub id: u32,
    pub agent: String,
    pub scope: GrantScope,
    /// RFC 3339, seconds.
    pub expires: String,
    pub left_secs: u64,
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Text>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrantScope {
    /// Deletes under `path`.
    Subtree { path: String },
    /// Connects to `address`:`port`.
    Destination { address: String, port: u16 },
    /// Every held call of the agent.
    Agent,
}
