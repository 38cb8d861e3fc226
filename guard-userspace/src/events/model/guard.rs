//! The targets of self-defense events (guard-ebpf escape.rs, tamper.rs):
//! an agent process leaving its cgroup (`agent.escape`) or reaching for
//! the guard's processes, files or kernel objects (`guard.tamper`). Both
//! are [`super::Call`]s: an agent's process did it, and it was refused.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the guard did about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    Refused,
    /// SIGKILL before the call returned.
    Killed,
    /// Another process left: killed when it next leaves a system call.
    KillPending,
}

/// `agent.escape`'s target: how the process left, and where to.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct EscapeTarget {
    pub how: EscapeHow,
    pub action: GuardAction,
    /// The process that left.
    pub pid: u32,
    /// The cgroup it went to (0 when refused before it went anywhere).
    pub cgroup_id: u64,
    /// That cgroup's path, relative to the cgroup2 mount, when the kernel
    /// gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscapeHow {
    /// A move through cgroup.procs or cgroup.threads.
    CgroupWrite,
    /// clone3 with CLONE_INTO_CGROUP.
    CloneIntoCgroup,
    /// Opening a cgroup file outside the agent's tree (BPF LSM).
    CgroupOpen,
}

/// `guard.tamper`'s target: what was reached for.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum TamperTarget {
    /// A signal to a guard process.
    Signal {
        action: GuardAction,
        pid: u32,
        signal: u32,
    },
    /// ptrace of a guard process.
    Ptrace {
        action: GuardAction,
        pid: u32,
        mode: u32,
    },
    /// bpf(2) on the guard's programs or maps.
    Bpf { action: GuardAction, command: u32 },
    /// A protected file or directory.
    File {
        action: GuardAction,
        /// The protected path that covers the file.
        #[serde(skip_serializing_if = "Option::is_none")]
        protected: Option<String>,
        write: bool,
    },
}

impl TamperTarget {
    /// The guard process aimed at, for signals and ptrace.
    pub fn pid(&self) -> Option<u32> {
        match self {
            TamperTarget::Signal { pid, .. } | TamperTarget::Ptrace { pid, .. } => Some(*pid),
            TamperTarget::Bpf { .. } | TamperTarget::File { .. } => None,
        }
    }
}
