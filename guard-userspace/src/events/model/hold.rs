//! What on-call needs to decide a held call (`hold.context` of a `held`
//! event), gathered once when the call is held and carried by every
//! surface: the event, `pending`, the web page, webhooks.
use std::{collections::BTreeMap, net::IpAddr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the held call came from, what the agent did just before, and
/// what each approval scope would grant. The call's own command line, the
/// agent's purpose and `on_behalf_of` are in the event already.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
pub struct HoldContext {
    /// The held process's parents, nearest first, for as long as they are
    /// in the agent's cgroup: the last is the agent's first process. What
    /// a process says of itself (comm, arguments) is the agent's to write;
    /// pids and membership are the kernel's.
    pub ancestry: Vec<Ancestor>,
    /// The chain was longer than the parents listed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ancestry_truncated: bool,
    pub recent: RecentCalls,
    /// Each approval scope on offer, and exactly what it grants. A scope
    /// beyond `once` lasts what the approver chooses (`--for`).
    pub scopes: Vec<ScopeOffer>,
}

/// One parent of the held process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    pub comm: String,
    /// At most 32 arguments and 1024 bytes (see `cmdline_truncated`).
    pub cmdline: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cmdline_truncated: bool,
}

/// An agent's calls over the last `window_secs` (net.* and file.* kinds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
pub struct RecentCalls {
    pub window_secs: u64,
    /// Calls by kind, then by outcome.
    pub calls: BTreeMap<String, BTreeMap<String, u64>>,
    /// The latest few calls, oldest first.
    pub last: Vec<RecentCall>,
}

/// One of an agent's latest calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
pub struct RecentCall {
    /// RFC 3339, seconds.
    pub time: String,
    pub kind: String,
    pub outcome: String,
    /// The path, or address:port (`[v6]:port`).
    pub target: String,
}

/// An approval scope on offer for a held call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum ScopeOffer {
    /// This call only.
    Once { grants: String },
    /// File calls under `path` (the `ask` rule's path, or the held path's
    /// directory; `--path` narrows it).
    Subtree { path: String, grants: String },
    /// Connects and datagrams to this address and port.
    Destination {
        address: IpAddr,
        port: u16,
        grants: String,
    },
    /// Every call of the agent that would be held.
    Agent {
        agent: Option<String>,
        grants: String,
    },
}
