//! Guarded calls: what an agent process did (the [`Op`] and its target),
//! who it was, and what the policy decided.
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};

use super::{
    Agent, CallVia, EscapeTarget, HoldContext, HoldId, IoUringTarget, MountTarget, PathPair,
    Process, RenameTarget, Rule, TamperTarget, UnixTarget,
};

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
    /// `seccomp` for calls judged under `run`'s supervision (kernels
    /// without BPF LSM); absent when the kernel judged the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// `io_uring` for a call an io_uring worker made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<CallVia>,
    /// Why, where the rule alone does not say it (an `ask` refused because
    /// it could not be held, a switch changed since the run started, a
    /// spent budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agent's budget, not a rule, held or refused this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<super::BudgetMark>,
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
    /// A datagram sent to an address (sendmsg/sendto with a destination;
    /// a connected socket's were judged at connect).
    #[serde(rename = "net.send")]
    Send(ConnectTarget),
    /// A connect to a unix socket (stream or seqpacket).
    #[serde(rename = "net.unix_connect")]
    UnixConnect(UnixTarget),
    /// A datagram to a unix socket.
    #[serde(rename = "net.unix_send")]
    UnixSend(UnixTarget),
    #[serde(rename = "file.unlink")]
    Unlink(FileTarget),
    #[serde(rename = "file.rmdir")]
    Rmdir(FileTarget),
    /// rename/renameat/renameat2, RENAME_EXCHANGE included.
    /// (Boxed, as is a link's: two paths would make every call larger.)
    #[serde(rename = "file.rename")]
    Rename(Box<RenameTarget>),
    /// truncate, ftruncate, or an open with O_TRUNC of an existing file.
    #[serde(rename = "file.truncate")]
    Truncate(FileTarget),
    /// A hard link: a second name for an existing file.
    #[serde(rename = "file.link")]
    Link(Box<PathPair>),
    /// A mount, bind mount, move_mount, pivot_root, chroot or new
    /// namespace.
    #[serde(rename = "file.mount")]
    Mount(MountTarget),
    /// io_uring_setup, refused to a run the seccomp backend supervises (it
    /// cannot see io_uring operations).
    #[serde(rename = "file.io_uring")]
    IoUring(IoUringTarget),
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
            Op::Send(_) => CallKind::Send,
            Op::UnixConnect(_) => CallKind::UnixConnect,
            Op::UnixSend(_) => CallKind::UnixSend,
            Op::Unlink(_) => CallKind::Unlink,
            Op::Rmdir(_) => CallKind::Rmdir,
            Op::Rename(_) => CallKind::Rename,
            Op::Truncate(_) => CallKind::Truncate,
            Op::Link(_) => CallKind::Link,
            Op::Mount(_) => CallKind::Mount,
            Op::IoUring(_) => CallKind::IoUring,
            Op::Escape(_) => CallKind::Escape,
            Op::Tamper(_) => CallKind::Tamper,
        }
    }

    /// The path a file operation acts on (a rename's source, a link's
    /// existing file, a mount point); a unix socket's path.
    pub fn path(&self) -> Option<&str> {
        match self {
            Op::Unlink(t) | Op::Rmdir(t) | Op::Truncate(t) => t.path.as_deref(),
            Op::Rename(t) => t.paths.path.as_deref(),
            Op::Link(t) => t.path.as_deref(),
            Op::Mount(t) => t.path.as_deref(),
            Op::UnixConnect(t) | Op::UnixSend(t) => t.path.as_deref(),
            Op::Connect(_) | Op::Send(_) | Op::IoUring(_) | Op::Escape(_) | Op::Tamper(_) => None,
        }
    }

    /// The second path of a rename or link.
    pub fn new_path(&self) -> Option<&str> {
        match self {
            Op::Rename(t) => t.paths.new_path.as_deref(),
            Op::Link(t) => t.new_path.as_deref(),
            _ => None,
        }
    }

    /// The path whose rule decided a file call (a rename's stricter side):
    /// what a subtree grant must cover.
    pub fn decided_path(&self) -> Option<&str> {
        match self {
            Op::Rename(t) => t.decided_path(),
            _ => self.path(),
        }
    }

    /// The destination of a connect or a datagram.
    pub fn destination(&self) -> Option<&ConnectTarget> {
        match self {
            Op::Connect(t) | Op::Send(t) => Some(t),
            _ => None,
        }
    }

    /// The target as JSON (for replies on the control socket).
    pub fn target_json(&self) -> serde_json::Value {
        let value = match self {
            Op::Connect(t) | Op::Send(t) => serde_json::to_value(t),
            Op::UnixConnect(t) | Op::UnixSend(t) => serde_json::to_value(t),
            Op::Unlink(t) | Op::Rmdir(t) | Op::Truncate(t) => serde_json::to_value(t),
            Op::Rename(t) => serde_json::to_value(t),
            Op::Link(t) => serde_json::to_value(t),
            Op::Mount(t) => serde_json::to_value(t),
            Op::IoUring(t) => serde_json::to_value(t),
            Op::Escape(t) => serde_json::to_value(t),
            Op::Tamper(t) => serde_json::to_value(t),
        };
        value.unwrap_or_default()
    }

    /// Serializes the target alone (a decision carries the held call's
    /// target under its own kind).
    pub fn serialize_target<S: Serializer>(op: &Op, s: S) -> Result<S::Ok, S::Error> {
        match op {
            Op::Connect(t) | Op::Send(t) => t.serialize(s),
            Op::UnixConnect(t) | Op::UnixSend(t) => t.serialize(s),
            Op::Unlink(t) | Op::Rmdir(t) | Op::Truncate(t) => t.serialize(s),
            Op::Rename(t) => t.serialize(s),
            Op::Link(t) => t.serialize(s),
            Op::Mount(t) => t.serialize(s),
            Op::IoUring(t) => t.serialize(s),
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
    Unix(UnixTarget),
    File(FileTarget),
    Rename(RenameTarget),
    Link(PathPair),
    Mount(MountTarget),
    IoUring(IoUringTarget),
    Escape(EscapeTarget),
    Tamper(TamperTarget),
}

/// The kinds of guarded calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema, Deserialize)]
pub enum CallKind {
    #[serde(rename = "net.connect")]
    Connect,
    #[serde(rename = "net.send")]
    Send,
    #[serde(rename = "net.unix_connect")]
    UnixConnect,
    #[serde(rename = "net.unix_send")]
    UnixSend,
    #[serde(rename = "file.unlink")]
    Unlink,
    #[serde(rename = "file.rmdir")]
    Rmdir,
    #[serde(rename = "file.rename")]
    Rename,
    #[serde(rename = "file.truncate")]
    Truncate,
    #[serde(rename = "file.link")]
    Link,
    #[serde(rename = "file.mount")]
    Mount,
    #[serde(rename = "file.io_uring")]
    IoUring,
    #[serde(rename = "agent.escape")]
    Escape,
    #[serde(rename = "guard.tamper")]
    Tamper,
}

impl CallKind {
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Connect => "net.connect",
            CallKind::Send => "net.send",
            CallKind::UnixConnect => "net.unix_connect",
            CallKind::UnixSend => "net.unix_send",
            CallKind::Unlink => "file.unlink",
            CallKind::Rmdir => "file.rmdir",
            CallKind::Rename => "file.rename",
            CallKind::Truncate => "file.truncate",
            CallKind::Link => "file.link",
            CallKind::Mount => "file.mount",
            CallKind::IoUring => "file.io_uring",
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

/// The target of a call on one file: a delete, a truncation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
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
#[derive(Clone, Debug, Serialize, JsonSchema, Deserialize)]
pub struct HoldRef {
    pub id: HoldId,
    /// Held calls: denied after this long without a decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Held calls: what on-call needs to decide.
    /// (Boxed: most calls are never held.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Box<HoldContext>>,
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
