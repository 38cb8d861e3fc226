//! Runs and operators: a run starting and ending, an operator killing,
//! freezing or thawing, a policy reload, and the daemon's own start and
//! stop.
use schemars::JsonSchema;
use serde::Serialize;

use super::{AgentRef, By, Lifecycle, Process, Success, Text};

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

/// `agent.expired`: the agent's `expires` passed; the daemon froze it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AgentExpired {
    pub outcome: Success,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentRef>,
    pub expiry: Expiry,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Expiry {
    /// The policy's `expires`, RFC 3339 UTC.
    pub expires: String,
    /// Live processes in the agent's cgroup when it was frozen.
    pub processes: u64,
    /// To `freeze`.
    pub mode: ModeChange,
    /// Why a restarted daemon would not know of the freeze (it is in
    /// force all the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<Text>,
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
    pub self_defense: SelfDefense,
}

/// What self-defense is in force.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SelfDefense {
    /// Escape detection: `in force` or `unavailable: <why>`.
    pub escape: String,
    /// The tamper LSM hooks: `in force` or `unavailable: <why>`.
    pub lsm: String,
    /// How refusals of an agent's reach for the guard are reported: `reported
    /// by the BPF LSM hooks`, `in force` (seen at system call exit, where
    /// Landlock or the seccomp filter refused them) or `unavailable: <why>`.
    pub refusals: String,
    /// `landlock` or `none (BPF LSM hooks)`.
    pub run_confinement: String,
    /// Paths kept from agents.
    pub protected: Vec<String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Backends {
    /// `cgroup_sock_addr`.
    pub connect: String,
    /// `bpf_lsm` or `seccomp`.
    pub delete: String,
    /// Unix socket rules: `bpf_lsm`, `cgroup_sock_addr`, or `none` (this
    /// kernel cannot enforce them).
    pub unix: String,
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
