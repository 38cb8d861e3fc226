//! What was refused, what failed to be delivered, and what was lost.
use schemars::JsonSchema;
use serde::Serialize;

use super::{HoldId, Text};

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
    /// The request: `approve`, `deny`, `revoke`, `kill`, `run`, `join`,
    /// `resume`, `reload`, `retire`, `freeze`, `thaw`, `pending`, `grants`,
    /// `agents`, `status`, `subscribe`, `connect`, `stop`, `web.view`; or
    /// `suppressed` for refusals counted, not reported one by one.
    pub op: Text,
    /// The hold it was about, as the client named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Text>,
    /// `kill`'s target (`hold ID` or `agent NAME`), a socket, a signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// `suppressed`: how many refusals this one stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    pub by: Peer,
    pub reason: Text,
}

/// What a refused request was about.
#[derive(Clone, Debug)]
pub enum Subject {
    Hold(String),
    Grant(u32),
    Agent(String),
    Session(String),
    Target(String),
    Force(bool),
}

impl Refusal {
    /// A refusal of `op` by `by`, about nothing in particular yet.
    pub fn new(op: &str, by: Peer, reason: impl Into<String>) -> Self {
        Self {
            op: Text::name(op),
            hold: None,
            grant: None,
            agent: None,
            session: None,
            target: None,
            force: None,
            count: None,
            by,
            reason: Text::message(reason),
        }
    }

    /// The refusal, about `subject`.
    pub fn about(mut self, subject: Option<Subject>) -> Self {
        match subject {
            Some(Subject::Hold(h)) => self.hold = Some(Text::name(h)),
            Some(Subject::Grant(g)) => self.grant = Some(g),
            Some(Subject::Agent(a)) => self.agent = Some(Text::name(a)),
            Some(Subject::Session(s)) => self.session = Some(Text::name(s)),
            Some(Subject::Target(t)) => self.target = Some(Text::name(t)),
            Some(Subject::Force(f)) => self.force = Some(f),
            None => {}
        }
        self
    }

    /// Whether a cap cut some string of it.
    pub fn truncated(&self) -> bool {
        [&self.hold, &self.agent, &self.session, &self.target]
            .into_iter()
            .flatten()
            .chain([&self.op, &self.reason])
            .any(Text::was_cut)
    }
}

/// Who asked: a control-socket peer (SO_PEERCRED), a signal's sender, or
/// a web client.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct Peer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The agent the caller is inside, if any (agents have no say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
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

/// `daemon.task`: a daemon task failed and is being restarted.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct DaemonTask {
    pub outcome: super::Lifecycle,
    pub task: TaskFailure,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TaskFailure {
    /// The task (`control socket`, `event reader`, ...).
    pub name: String,
    pub error: Text,
    /// Failures of this task since the daemon started.
    pub failures: u64,
    pub restart_in_ms: u64,
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
        /// The hold the document was about (none for a spent budget).
        #[serde(skip_serializing_if = "Option::is_none")]
        hold: Option<HoldId>,
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
    /// An agent spent a budget (`agent.budget`).
    Budget,
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
    /// Self-defense could not track an agent process or kill an escaping
    /// one.
    GuardFailed,
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
            LossReason::GuardFailed => "guard_failed",
            LossReason::UndecodableRecord => "undecodable_record",
            LossReason::SinkSlow => "sink_slow",
            LossReason::SinkDown => "sink_down",
            LossReason::SinkWriteFailed => "sink_write_failed",
            LossReason::SubscriberSlow => "subscriber_slow",
        }
    }
}
