//! The typed event model: one Rust type per event kind, built in one place
//! per producer (kernel records are turned into [`Call`]s by the daemon's
//! attribution; daemon actions build their own kind). The line written
//! (native, OCSF, ECS) is serialized straight from these types, and
//! docs/events.schema.json is generated from them.
//!
//! Adding a kind: a struct in `call.rs` (a guarded call: a new [`Op`]
//! variant) or `daemon.rs` (anything else: a new [`DaemonEvent`] variant),
//! then the compiler points at every mapping that must say what it is
//! (OCSF class, ECS categories, its name).
mod budget;
mod call;
mod control;
mod daemon;
mod doors;
mod guard;
mod hold;
mod runs;
mod text;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use budget::*;
pub use call::*;
pub use control::*;
pub use daemon::*;
pub use doors::*;
pub use guard::*;
pub use hold::*;
pub use runs::*;
pub use text::{Cmdline, Text, cap};

/// One event, as the emitter takes it (it adds seq, time, host, the OCSF
/// object and the chain link).
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Event {
    /// A guarded call: what an agent process did and what was decided.
    Call(Call),
    /// Everything else: decisions, runs, operators, the daemon itself.
    Daemon(DaemonEvent),
}

impl Event {
    /// The `kind` member.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Call(c) => c.kind().name(),
            Event::Daemon(d) => d.kind(),
        }
    }

    /// The `outcome` member.
    pub fn outcome(&self) -> &'static str {
        match self {
            Event::Call(c) => c.outcome.name(),
            Event::Daemon(d) => d.outcome(),
        }
    }

    /// The agent the event is about, if any.
    pub fn agent(&self) -> Option<&AgentRef> {
        match self {
            Event::Call(c) => c.agent.known(),
            Event::Daemon(d) => d.agent(),
        }
    }

    /// Whether a cap cut some string of it.
    pub fn truncated(&self) -> bool {
        match self {
            Event::Call(c) => c.process.truncated(),
            Event::Daemon(d) => d.truncated(),
        }
    }
}

impl From<Call> for Event {
    fn from(c: Call) -> Self {
        Event::Call(c)
    }
}

impl From<DaemonEvent> for Event {
    fn from(d: DaemonEvent) -> Self {
        Event::Daemon(d)
    }
}

/// Who did it: the agent half of an event.
#[derive(Clone, Debug, Serialize, JsonSchema, Deserialize)]
pub struct AgentRef {
    pub name: String,
    pub owner: String,
    pub purpose: String,
    pub labels: BTreeMap<String, String>,
    /// Its cgroup, relative to the cgroup2 mount.
    pub cgroup: String,
    pub cgroup_id: u64,
    /// The run (`agent-guard run`) the process belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Whom the run acts for (`run --on-behalf-of`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// The agent of a call: known, or only its cgroup (a record of an agent
/// that has since left the policy).
#[derive(Clone, Debug, Serialize, JsonSchema, Deserialize)]
#[serde(untagged)]
pub enum Agent {
    Known(AgentRef),
    Unattributed {
        /// The agent cgroup the kernel attributed the call to.
        cgroup_id: u64,
    },
}

impl Agent {
    pub fn known(&self) -> Option<&AgentRef> {
        match self {
            Agent::Known(a) => Some(a),
            Agent::Unattributed { .. } => None,
        }
    }
}

/// The calling process. `ppid`, `exe` and `cmdline` come from /proc and
/// are absent when the process exited before the event was read.
#[derive(Clone, Debug, Default, Serialize, JsonSchema, Deserialize)]
pub struct Process {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    /// The name of `uid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The name of `gid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The kernel's task name (16 bytes at most).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// At most [`cap::CMDLINE`] bytes (see `truncated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<Cmdline>,
}

impl Process {
    pub fn truncated(&self) -> bool {
        self.cmdline.as_ref().is_some_and(Cmdline::was_cut)
    }
}

/// A policy verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Ask,
    Deny,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Ask => "ask",
            Verdict::Deny => "deny",
        }
    }
}

impl From<guard_common::Verdict> for Verdict {
    fn from(v: guard_common::Verdict) -> Self {
        match v {
            guard_common::Verdict::Allow => Verdict::Allow,
            guard_common::Verdict::Ask => Verdict::Ask,
            guard_common::Verdict::Deny => Verdict::Deny,
        }
    }
}

/// The rule that decided a call.
#[derive(Clone, Debug, Serialize, JsonSchema, Deserialize)]
pub struct Rule {
    /// What the policy said (in audit mode, what enforce mode would have
    /// done). Absent when the agent is no longer known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The rule as written, or `default` for the agent's default.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
    /// FILE:LINE of the rule (or of the agent, for its default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Who did something, as the control socket's SO_PEERCRED (or the daemon
/// itself, with no uid) says.
#[derive(Clone, Debug, Serialize, JsonSchema, Deserialize)]
pub struct By {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    pub user: String,
}

/// A hold id: a string, since 64-bit ids do not survive JSON numbers in
/// every consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HoldId(pub u64);

impl Serialize for HoldId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HoldId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(HoldId).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for HoldId {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HoldId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[0-9]+$"})
    }
}

/// Outcomes of kinds that only ever succeed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Success {
    #[default]
    Success,
}

/// Outcome of something that can fail (a reload).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Success,
    Failure,
}

impl Lifecycle {
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Success => "success",
            Lifecycle::Failure => "failure",
        }
    }
}
