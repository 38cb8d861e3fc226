//! Guarded calls: what an agent process did (the [`Op`] and its target),
//! who it was, and what the policy decided.
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};

use super::{Agent, EscapeTarget, HoldId, Process, Rule, TamperTarget};

/// One guarded call.
#[derive(Clone, Debug, Serialize, JsonSchema, Deserialize)]
pub struct Call {
    /// `kind` and `target`.
    #[serde(flatten)]
    pub op: Op,
    pub outcome: CallOutcome,
    pub agent: Agent,
    pub process: Process,
    pub rule: Rule,
    /// When held: the hold and how long it may wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldRef>,
    /// When an earlier approval's grant let the call through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantRef>,
    /// `seccomp` for deletes judged under `run`'s supervision (kernels
    /// without BPF LSM); absent when the kernel judged the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
}

impl Call {
    pub fn kind(&self) -> CallKind {
        self.op.kind()
    }
}

/// What the call does, and to what: the event's `kind` and `target`.
#[derive(Clone, Debug, Serialize, JsonSchema, Deserialize)]
#[serde(tag = "kind", content = "target")]
pub enum Op {
    /// An outbound connect (cgroup/connect4, connect6).
    #[serde(rename = "net.connect")]
    Connect(ConnectTarget),
    #[serde(rename = "file.unlink")]
    Unlink(FileTarget),
    #[serde(rename = "file.rmdir")]
    Rmdir(FileTarget),
    /// An agent process left (or tried to leave) its agent's cgroup.
    #[serde(rename = "agent.escape")]
    Escape(EscapeTarget),
    /// An agent process reached for the guard itself.
    #[serde(rename = "guard.tamper")]
    Tamper(TamperTarget),
}

impl Op {
    pub fn kind(&self) -> CallKind {
        match self {
            Op::Connect(_) => CallKind::Connect,
            Op::Unlink(_) => CallKind::Unlink,
            Op::Rmdir(_) => CallKind::Rmdir,
            Op::Escape(_) => CallKind::Escape,
            Op::Tamper(_) => CallKind::Tamper,
        }
    }

    /// The path of a file operation.
    pub fn path(&self) -> Option<&str> {
        match self {
            Op::Unlink(t) | Op::Rmdir(t) => t.path.as_deref(),
            Op::Connect(_) | Op::Escape(_) | Op::Tamper(_) => None,
        }
    }

    /// The destination of a connect.
    pub fn destination(&self) -> Option<&ConnectTarget> {
        match self {
            Op::Connect(t) => Some(t),
            Op::Unlink(_) | Op::Rmdir(_) | Op::Escape(_) | Op::Tamper(_) => None,
        }
    }

    /// The target as JSON (for replies on the control socket).
    pub fn target_json(&self) -> serde_json::Value {
        let value = match self {
            Op::Connect(t) => serde_json::to_value(t),
            Op::Unlink(t) | Op::Rmdir(t) => serde_json::to_value(t),
            Op::Escape(t) => serde_json::to_value(t),
            Op::Tamper(t) => serde_json::to_value(t),
        };
        value.unwrap_or_default()
    }

    /// Serializes the target alone (a decision carries the held call's
    /// target under its own kind).
    pub fn serialize_target<S: Serializer>(op: &Op, s: S) -> Result<S::Ok, S::Error> {
        match op {
            Op::Connect(t) => t.serialize(s),
            Op::Unlink(t) | Op::Rmdir(t) => t.serialize(s),
            Op::Escape(t) => t.serialize(s),
            Op::Tamper(t) => t.serialize(s),
        }
    }
}

/// Any call's target, for the schema of `hold.decision`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "only its schema is used")]
pub(super) enum AnyTarget {
    Connect(ConnectTarget),
    File(FileTarget),
    Escape(EscapeTarget),
    Tamper(TamperTarget),
}

/// The kinds of guarded calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema, Deserialize)]
pub enum CallKind {
    #[serde(rename = "net.connect")]
    Connect,
    #[serde(rename = "file.unlink")]
    Unlink,
    #[serde(rename = "file.rmdir")]
    Rmdir,
    #[serde(rename = "agent.escape")]
    Escape,
    #[serde(rename = "guard.tamper")]
    Tamper,
}

impl CallKind {
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Connect => "net.connect",
            CallKind::Unlink => "file.unlink",
            CallKind::Rmdir => "file.rmdir",
            CallKind::Escape => "agent.escape",
            CallKind::Tamper => "guard.tamper",
        }
    }
}

/// What became of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    Allowed,
    Denied,
    /// Waiting for a human (see `hold.decision`).
    Held,
    /// Let through in audit mode; `rule.verdict` says what enforce would do.
    Audited,
    /// Seen and not blocked (no BPF LSM, and not under `run`);
    /// `rule.verdict` says what the policy would have done.
    Observed,
}

impl CallOutcome {
    pub fn name(self) -> &'static str {
        match self {
            CallOutcome::Allowed => "allowed",
            CallOutcome::Denied => "denied",
            CallOutcome::Held => "held",
            CallOutcome::Audited => "audited",
            CallOutcome::Observed => "observed",
        }
    }

    pub fn from_kernel(raw: u8) -> Option<Self> {
        guard_common::Outcome::from_raw(raw).map(Into::into)
    }
}

impl From<guard_common::Outcome> for CallOutcome {
    fn from(o: guard_common::Outcome) -> Self {
        use guard_common::Outcome;
        match o {
            Outcome::Allowed => CallOutcome::Allowed,
            Outcome::Denied => CallOutcome::Denied,
            Outcome::Held => CallOutcome::Held,
            Outcome::Audited => CallOutcome::Audited,
            Outcome::Observed => CallOutcome::Observed,
        }
    }
}

/// A connect's destination.
#[derive(Clone, Debug, Serialize, JsonSchema, Deserialize)]
pub struct ConnectTarget {
    pub family: Family,
    pub address: IpAddr,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Ipv4,
    Ipv6,
}

/// A delete's target.
#[derive(Clone, Debug, Default, Serialize, JsonSchema, Deserialize)]
pub struct FileTarget {
    /// Absolute, as the process sees it; absent when it could not be
    /// resolved (see `path_error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path argument as the process passed it (seccomp and observed
    /// deletes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_error: Option<String>,
    /// The kernel's path buffer cut the path.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    /// Observed deletes: why nothing enforced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<String>,
}

impl FileTarget {
    pub fn path(path: String) -> Self {
        Self {
            path: Some(path),
            ..Self::default()
        }
    }
}

/// A call's hold: when held, the hold starting; on a held call that then
/// ran on its decision (allowed or denied), the same id.
#[derive(Clone, Copy, Debug, Serialize, JsonSchema, Deserialize)]
pub struct HoldRef {
    pub id: HoldId,
    /// Held calls: denied after this long without a decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// The grant that let a call through.
#[derive(Clone, Copy, Debug, Serialize, JsonSchema, Deserialize)]
pub struct GrantRef {
    pub id: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Seccomp,
}
