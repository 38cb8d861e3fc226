//! The policy file: parsing and validation, the userspace matchers, and the
//! encoding of connect rules into the kernel's `NET_RULES` LPM trie.
//!
//! One [`Policy`] is the whole file. Every rule gets an id that is unique in
//! the file (1.., in file order; 0 is [`guard_common::RULE_DEFAULT`]) so an
//! event can name the exact line that decided it ([`Policy::rule_source`]).
//!
//! Both matchers pick the *most specific* rule, never the first one written:
//! connect rules by longest address prefix, then narrowest port range, then
//! deny > ask > allow; delete rules by longest path prefix (whole components),
//! then deny > ask > allow. No match means the agent's default verdict.

pub mod budget;
mod check;
mod compile;
mod error;
pub mod expiry;
mod net;
mod parse;
mod path;
pub mod sink;
mod surfaces;
#[cfg(test)]
mod tests;
/// Test vectors shared by the userspace matcher, the kernel-map simulator and
/// the privileged kernel tests. The file depends only on `guard_common`, so a
/// test crate can include it with `#[path = ".../policy/vectors.rs"]`.
#[cfg(test)]
pub mod vectors;

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use guard_common::{Mode, Verdict};

pub use check::path_warnings;
pub use compile::{
    agent_entry, compile_net, compile_path, compile_subtree, compile_unix, path_key,
};
pub use error::PolicyError;
pub use surfaces::{MetricsConfig, NotifyConfig, NotifyEvent, WebConfig};

/// The policy compiled into the binary: one documented demo agent.
pub const DEFAULT_POLICY: &str = include_str!("default.toml");

pub const DEFAULT_CONTROL_SOCKET: &str = "/run/agent-guard/control.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/agent-guard";
pub const DEFAULT_APPROVAL_TIMEOUT_SECS: u64 = 300;

/// A parsed, validated policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The file name errors and rule sources are reported against.
    pub file: String,
    pub daemon: DaemonConfig,
    /// In file order.
    pub agents: Vec<Agent>,
    /// `[web]`: the approval page (off when absent).
    pub web: Option<WebConfig>,
    /// `[metrics]`: the Prometheus endpoint (off when absent).
    pub metrics: Option<MetricsConfig>,
    /// `[[notify]]` webhooks, in file order.
    pub notify: Vec<NotifyConfig>,
    /// `[[sink]]` tables; none means stdout only.
    pub sinks: Vec<sink::SinkConfig>,
    /// `[discover] patterns`: names `agent-guard discover` looks for on top
    /// of its built-in list.
    pub discover: Vec<String>,
}

/// The `[daemon]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub control_socket: PathBuf,
    pub state_dir: PathBuf,
    /// How long an `ask` waits for a human before it is denied. Always > 0.
    pub approval_timeout_secs: u64,
    pub approvers: Approvers,
    /// Who may read (pending holds, grants, agents, status, the event
    /// stream and the unix event sinks) without being an approver. Empty
    /// unless written; approvers may always read.
    pub readers: Approvers,
    /// What a reload does to the processes of an agent it removes (only
    /// with `--force`; without it such a reload is refused).
    pub on_remove: RemovePolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovePolicy {
    Kill,
    /// They keep running, no longer an agent's (the default).
    Unguard,
}

/// A list of users by uid and by group name: approvers, readers, runners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approvers {
    pub uids: Vec<u32>,
    pub groups: Vec<String>,
}

/// One `[[agent]]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub name: String,
    pub owner: String,
    pub purpose: String,
    pub labels: BTreeMap<String, String>,
    /// Relative to the cgroup2 mount, validated: no leading '/', no empty,
    /// '.' or '..' components. No two agents' cgroups nest.
    pub cgroup: String,
    pub mode: Mode,
    pub connect: NetPolicy,
    pub delete: PathPolicy,
    /// `allow_mounts = true`: mounts, bind mounts, pivot_root, chroot and
    /// new mount or user namespaces are not refused (default false: each
    /// could give a protected object a second path no rule names).
    pub allow_mounts: bool,
    /// `allow_io_uring = true`: runs supervised by seccomp may set up
    /// io_uring, whose operations that backend cannot see (default false:
    /// io_uring_setup fails with EPERM there). BPF LSM sees io_uring
    /// operations; there it is always allowed.
    pub allow_io_uring: bool,
    /// Who may start runs of this agent (`runners`; default root only).
    pub runners: Approvers,
    /// How long this agent's `ask` waits (None: [daemon]'s). Always > 0.
    pub approval_timeout_secs: Option<u64>,
    /// `[agent.budget]`: how many allowed deletes and connects per window.
    pub budget: Option<budget::Budget>,
    /// `expires`: after it the agent starts no run, and the daemon freezes
    /// it (an `agent.expired` event), so a retired agent keeps no rights.
    pub expires: Option<std::time::SystemTime>,
    /// Line of the agent's `[[agent]]` header.
    pub line: usize,
}

impl Policy {
    /// How long a call of agent `name` is held before it is denied: the
    /// agent's own `approval_timeout_secs`, else [daemon]'s.
    pub fn approval_timeout(&self, name: Option<&str>) -> std::time::Duration {
        let own = self
            .agents
            .iter()
            .find(|a| Some(a.name.as_str()) == name)
            .and_then(|a| a.approval_timeout_secs);
        std::time::Duration::from_secs(own.unwrap_or(self.daemon.approval_timeout_secs))
    }
}

impl Agent {
    /// Cgroup level of the agent cgroup (the cgroup2 root is level 0), the
    /// bit to set in `guard_common::Config::agent_levels`.
    pub fn cgroup_level(&self) -> u32 {
        let n = self.cgroup.split('/').count();
        // Validation caps the depth at MAX_CGROUP_LEVEL, so this never saturates.
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// An agent's `[agent.connect]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetPolicy {
    pub default: Verdict,
    /// In file order (ascending id).
    pub rules: Vec<NetRule>,
}

/// One connect entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRule {
    pub id: u32,
    pub verdict: Verdict,
    pub target: NetTarget,
    /// The entry as written.
    pub text: String,
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetTarget {
    Ip {
        /// Network address with the host bits zeroed; IPv4 as ::ffff:a.b.c.d.
        addr: Ipv6Addr,
        /// In IPv6 space: an IPv4 /N is 96 + N.
        prefix: u8,
        /// Inclusive; `*` is 0..=65535.
        lo: u16,
        hi: u16,
        /// Written as IPv4.
        v4: bool,
    },
    Unix {
        /// A normalized absolute path prefix (see `path::normalize_abs`), or
        /// `@name` for an abstract socket name (whole '/' components).
        path: String,
    },
}

/// An agent's `[agent.delete]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPolicy {
    pub default: Verdict,
    /// In file order (ascending id).
    pub rules: Vec<PathRule>,
    /// Start even where deletes can only be observed (see `agent-guard doctor`).
    pub accept_observe_only: bool,
}

impl PathPolicy {
    /// Whether any delete of this agent could be refused.
    pub fn guards_anything(&self) -> bool {
        self.default != Verdict::Allow || self.rules.iter().any(|r| r.verdict != Verdict::Allow)
    }
}

/// Agents in enforce mode whose delete rules this kernel can neither block
/// (BPF LSM) nor supervise (seccomp under `run`), and whose policy does not
/// accept observe-only. The daemon refuses to start with any.
pub fn unenforceable_deletes(policy: &Policy, lsm: bool, seccomp: bool) -> Vec<&str> {
    if lsm || seccomp {
        return Vec::new();
    }
    policy
        .agents
        .iter()
        .filter(|a| {
            a.mode != Mode::Audit && a.delete.guards_anything() && !a.delete.accept_observe_only
        })
        .map(|a| a.name.as_str())
        .collect()
}

/// One delete entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRule {
    pub id: u32,
    pub verdict: Verdict,
    /// Normalized: absolute, single '/' separators, no trailing '/' (except
    /// the root itself), no '.' or '..' components.
    pub prefix: String,
    /// The entry as written.
    pub text: String,
    pub line: usize,
    pub col: usize,
}

/// Which table a rule came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    Connect,
    Delete,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Connect => "connect",
            RuleKind::Delete => "delete",
        }
    }
}

/// Where a rule id came from, for events and `ask` prompts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub id: u32,
    pub agent: String,
    pub kind: RuleKind,
    pub verdict: Verdict,
    /// The entry as written in the file.
    pub text: String,
    /// `FILE:LINE` of the entry.
    pub source: String,
}

impl Policy {
    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// Looks up a rule id from an event; `None` for [`guard_common::RULE_DEFAULT`]
    /// or an id this policy does not have (e.g. from before a reload).
    pub fn rule_source(&self, id: u32) -> Option<RuleRef> {
        // A linear scan: policies hold hundreds of rules at most, and this
        // keeps `Policy` a plain value that callers can build by hand.
        self.agents.iter().find_map(|agent| {
            let rule_ref = |kind, verdict, text: &str, line| RuleRef {
                id,
                agent: agent.name.clone(),
                kind,
                verdict,
                text: text.to_owned(),
                source: format!("{}:{line}", self.file),
            };
            if let Some(r) = agent.connect.rules.iter().find(|r| r.id == id) {
                return Some(rule_ref(RuleKind::Connect, r.verdict, &r.text, r.line));
            }
            let r = agent.delete.rules.iter().find(|r| r.id == id)?;
            Some(rule_ref(RuleKind::Delete, r.verdict, &r.text, r.line))
        })
    }
}

/// Parses and validates a policy. `file` is only used in error messages and
/// rule sources.
pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
    parse::parse(file, text)
}

/// Reads and parses a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&file, &text),
        Err(error) => Err(PolicyError::Read { file, error }),
    }
}

/// The policy-file spelling of a verdict.
pub fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Ask => "ask",
        Verdict::Deny => "deny",
    }
}

pub fn parse_verdict(s: &str) -> Option<Verdict> {
    Verdict::ALL.iter().copied().find(|v| verdict_str(*v) == s)
}

/// The policy-file spelling of a mode.
pub fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit",
        Mode::Freeze => "freeze",
    }
}

pub fn parse_mode(s: &str) -> Option<Mode> {
    Mode::ALL.iter().copied().find(|m| mode_str(*m) == s)
}
