//! Events the daemon originates: decisions on held calls, runs starting and
//! ending, operators' actions and refusals, deliveries that failed, losses,
//! and the daemon's own start and stop.
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    Agent, AgentRef, By, Call, CallKind, HoldId, Lifecycle, Op, Process, Rule, Success, Text,
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
}

impl DaemonEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            DaemonEvent::HoldDecision(_) => "hold.decision",
            DaemonEvent::AgentStart(_) => "agent.start",
            DaemonEvent::AgentExit(_) => "agent.exit",
            DaemonEvent::AgentKill(_) => "agent.kill",
            DaemonEvent::AgentMode(_) => "agent.mode",
            DaemonEvent::PolicyReload(_) => "policy.reload",
            DaemonEvent::ControlRefused(_) => "control.refused",
            DaemonEvent::NotifyFailed(_) => "notify.failed",
            DaemonEvent::Loss(_) => "loss",
            DaemonEvent::DaemonStart(_) => "daemon.start",
            DaemonEvent::DaemonStop(_) => "daemon.stop",
        }
    }

    pub fn outcome(&self) -> &'static str {
        match self {
            DaemonEvent::HoldDecision(d) => d.outcome.name(),
            DaemonEvent::PolicyReload(r) => r.outcome.name(),
            DaemonEvent::ControlRefused(_) => "denied",
            DaemonEvent::NotifyFailed(_) => "failed",
            DaemonEvent::Loss(_) => "lost",
            DaemonEvent::AgentStart(_)
            | DaemonEvent::AgentExit(_)
            | DaemonEvent::AgentKill(_)
            | DaemonEvent::AgentMode(_)
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
            DaemonEvent::AgentKill(_)
            | DaemonEvent::PolicyReload(_)
            | DaemonEvent::ControlRefused(_)
            | DaemonEvent::NotifyFailed(_)
            | DaemonEvent::Loss(_)
            | DaemonEvent::DaemonStart(_)
            | DaemonEvent::DaemonStop(_) => None,
        }
    }

    pub fn truncated(&self) -> bool {
        let cut = |t: &Option<Text>| t.as_ref().is_some_and(Text::was_cut);
        match self {
            DaemonEvent::HoldDecision(d) => d.process.truncated() || cut(&d.hold.reason),
            DaemonEvent::AgentStart(s) => s.process.truncated(),
            DaemonEvent::AgentMode(m) => cut(&m.reason),
            DaemonEvent::PolicyReload(r) => cut(&r.policy.error),
            DaemonEvent::ControlRefused(r) => {
                let c = &r.control;
                cut(&c.hold) || cut(&c.agent) || cut(&c.target)
            }
            DaemonEvent::NotifyFailed(n) => match &n.notify {
                NotifyFailure::Attempt { error, .. } => error.was_cut(),
                NotifyFailure::EventsLost { .. } => false,
            },
            DaemonEvent::Loss(l) => cut(&l.loss.detail),
            DaemonEvent::AgentExit(_)
            | DaemonEvent::AgentKill(_)
            | DaemonEvent::DaemonStart(_)
            | DaemonEvent::DaemonStop(_) => false,
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
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Denied => "denied",
            Decision::Expired => "expired",
            Decision::Killed => "killed",
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

/// `agent.start`: a process joined a run.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AgentStart {
    pub outcome: Success,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentRef>,
    pub process: Process,
    pub session: RunStarted,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RunStarted {
    pub id: String,
    pub started_by: Launcher,
}

/// The `agent-guard run` process that opened the run.
#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
pub struct Launcher {
    pub pid: u32,
    pub uid: u32,
}

/// `agent.exit`: a run ended.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AgentExit {
    pub outcome: Success,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentRef>,
    pub session: RunEnded,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RunEnded {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub reason: String,
}

/// `agent.kill`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AgentKill {
    pub outcome: Success,
    pub control: Killed,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Killed {
    /// `hold ID` or `agent NAME`.
    pub target: String,
    /// The cgroup whose processes were killed.
    pub cgroup: String,
    pub by: By,
}

/// `agent.mode`: `agent-guard freeze` / `thaw`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AgentMode {
    pub outcome: Success,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentRef>,
    pub mode: ModeChange,
    pub by: By,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Text>,
}

#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
pub struct ModeChange {
    pub from: Mode,
    pub to: Mode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforce,
    Audit,
    Freeze,
}

impl From<guard_common::Mode> for Mode {
    fn from(m: guard_common::Mode) -> Self {
        match m {
            guard_common::Mode::Enforce => Mode::Enforce,
            guard_common::Mode::Audit => Mode::Audit,
            guard_common::Mode::Freeze => Mode::Freeze,
        }
    }
}

/// `policy.reload` (SIGHUP or `agent-guard reload`).
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct PolicyReload {
    pub outcome: Lifecycle,
    pub policy: Reloaded,
    pub by: By,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Reloaded {
    /// Absent for the embedded default policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `sha256:<hex>` of the policy now in force (success only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why the reload was refused, with FILE:LINE:COL (failure only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<PolicyDiff>,
}

/// Agents added, removed, and changed in meaning.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct PolicyDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// `control.refused`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ControlRefused {
    pub outcome: Refused,
    pub control: Refusal,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Refused {
    #[default]
    Denied,
}

/// What was asked, by whom, and why it was refused.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Refusal {
    pub op: ControlOp,
    /// The hold it was about, as the client named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<Text>,
    /// `agent.kill`'s target (`hold ID` or `agent NAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    pub by: Peer,
    pub reason: String,
}

impl Refusal {
    /// A refusal of `op` by `by`, about nothing in particular yet.
    pub fn new(op: ControlOp, by: Peer, reason: impl Into<String>) -> Self {
        Self {
            op,
            hold: None,
            grant: None,
            agent: None,
            target: None,
            force: None,
            by,
            reason: reason.into(),
        }
    }
}

/// The requests that need a right the caller may not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub enum ControlOp {
    #[serde(rename = "approve")]
    Approve,
    #[serde(rename = "deny")]
    Deny,
    #[serde(rename = "revoke")]
    Revoke,
    #[serde(rename = "kill")]
    Kill,
    #[serde(rename = "run")]
    Run,
    #[serde(rename = "reload")]
    Reload,
    #[serde(rename = "freeze")]
    Freeze,
    #[serde(rename = "thaw")]
    Thaw,
    /// Reading the web page's state.
    #[serde(rename = "web.view")]
    WebView,
}

impl ControlOp {
    pub fn name(self) -> &'static str {
        match self {
            ControlOp::Approve => "approve",
            ControlOp::Deny => "deny",
            ControlOp::Revoke => "revoke",
            ControlOp::Kill => "kill",
            ControlOp::Run => "run",
            ControlOp::Reload => "reload",
            ControlOp::Freeze => "freeze",
            ControlOp::Thaw => "thaw",
            ControlOp::WebView => "web.view",
        }
    }
}

/// Who asked: a control-socket peer (SO_PEERCRED), or a web client.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct Peer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `web` for the approval page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    /// The web client's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Web,
}

/// `notify.failed`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct NotifyFailed {
    pub outcome: Failed,
    pub notify: NotifyFailure,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Failed {
    #[default]
    Failed,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum NotifyFailure {
    /// One delivery attempt failed.
    Attempt {
        #[serde(rename = "type")]
        channel: Channel,
        url: String,
        event: NotifyWhat,
        hold: HoldId,
        attempt: u32,
        attempts_max: u32,
        will_retry: bool,
        error: Text,
        /// Failed attempts to this URL so far.
        failures: u64,
    },
    /// The webhook task's own queue overflowed: holds or decisions it
    /// never saw.
    EventsLost {
        #[serde(rename = "type")]
        channel: Channel,
        reason: EventsLost,
        count: u64,
        will_retry: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Webhook,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventsLost {
    EventsLost,
}

/// Which webhook document failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyWhat {
    Held,
    Decision,
}

/// `loss`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Loss {
    pub outcome: Lost,
    pub loss: LossDetail,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lost {
    #[default]
    Lost,
}

/// How many events were lost, where, and why.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct LossDetail {
    pub reason: LossReason,
    pub count: u64,
    /// Lost so far for this reason (and sink or reader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Text>,
}

impl Loss {
    pub fn new(reason: LossReason, count: u64) -> Self {
        Self {
            outcome: Lost::Lost,
            loss: LossDetail {
                reason,
                count,
                total: None,
                sink: None,
                subscriber: None,
                detail: None,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    /// The kernel's ring buffer was full.
    RingbufFull,
    /// A hold could not be set up and became a deny.
    HoldFailed,
    /// A kernel record the daemon could not read.
    UndecodableRecord,
    /// A writer sink's queue was full.
    SinkSlow,
    /// A writer sink's collector was down and its queue full.
    SinkDown,
    /// The sink took the line but could not write it.
    SinkWriteFailed,
    /// A stream reader's queue was full.
    SubscriberSlow,
}

impl LossReason {
    pub fn name(self) -> &'static str {
        match self {
            LossReason::RingbufFull => "ringbuf_full",
            LossReason::HoldFailed => "hold_failed",
            LossReason::UndecodableRecord => "undecodable_record",
            LossReason::SinkSlow => "sink_slow",
            LossReason::SinkDown => "sink_down",
            LossReason::SinkWriteFailed => "sink_write_failed",
            LossReason::SubscriberSlow => "subscriber_slow",
        }
    }
}

/// `daemon.start`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct DaemonStart {
    pub outcome: Success,
    pub daemon: Started,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Started {
    pub pid: u32,
    pub version: String,
    /// The policy file, or `<embedded default policy>`.
    pub policy: String,
    /// The control socket.
    pub socket: String,
    pub agents: Vec<String>,
    pub backends: Backends,
    pub sinks: Vec<String>,
    pub chain: ChainSetup,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Backends {
    /// `cgroup_sock_addr`.
    pub connect: String,
    /// `bpf_lsm` or `seccomp`.
    pub delete: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ChainSetup {
    /// `sha256` or `hmac-sha256`.
    pub alg: String,
    /// Where the last link is persisted.
    pub state: String,
}

/// `daemon.stop`: a clean stop, which releases enforcement.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct DaemonStop {
    pub outcome: Success,
    pub daemon: Stopped,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Stopped {
    pub pid: u32,
    pub enforcement: Released,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Released {
    #[default]
    Released,
}
