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
    /// The system call, where the refusal was seen at its exit (Landlock
    /// or the seccomp filter refused it; BPF LSM hooks see the operation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// The path the refused call named, as resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
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

/// `guard.tamper`'s target: what was reached for. `call` names the system
/// call where the refusal was seen at its exit (Landlock or the seccomp
/// filter refused it; BPF LSM hooks see the operation, not the call).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum TamperTarget {
    /// A signal to a guard process.
    Signal {
        action: GuardAction,
        pid: u32,
        signal: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        call: Option<String>,
    },
    /// ptrace of a guard process, or its /proc entries.
    Ptrace {
        action: GuardAction,
        pid: u32,
        /// The LSM hook's access mode.
        #[serde(skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        /// ptrace(2)'s request.
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<u32>,
        /// pidfd_getfd(2)'s descriptor.
        #[serde(skip_serializing_if = "Option::is_none")]
        fd: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        call: Option<String>,
        /// The /proc path the refused call named.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// bpf(2) on the guard's programs or maps.
    Bpf {
        action: GuardAction,
        command: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        call: Option<String>,
    },
    /// A protected file or directory.
    File {
        action: GuardAction,
        /// The protected path that covers the file.
        #[serde(skip_serializing_if = "Option::is_none")]
        protected: Option<String>,
        write: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        call: Option<String>,
        /// The path the refused call named, as resolved.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
}

impl TamperTarget {
    /// Records the system call the refusal was seen at, and the path it
    /// named (where the target has one).
    pub fn seen(&mut self, name: Option<String>, named: Option<String>) {
        match self {
            TamperTarget::Signal { call, .. } | TamperTarget::Bpf { call, .. } => *call = name,
            TamperTarget::Ptrace { call, path, .. } | TamperTarget::File { call, path, .. } => {
                *call = name;
                *path = named;
            }
        }
    }

    /// The guard process aimed at, for signals and ptrace.
    pub fn pid(&self) -> Option<u32> {
        match self {
            TamperTarget::Signal { pid, .. } | TamperTarget::Ptrace { pid, .. } => Some(*pid),
            TamperTarget::Bpf { .. } | TamperTarget::File { .. } => None,
        }
    }
}

/// `guard.tamper`, what `suppressed`: an agent's refusals of one class
/// held back by the allowance (ten at once, then one a second), counted
/// and reported in one event. Not a call: no process made it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TamperSuppressed {
    pub outcome: super::Refused,
    pub agent: super::Agent,
    pub rule: super::Rule,
    pub target: SuppressedTarget,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SuppressedTarget {
    /// A member of its own (not a serde tag): schemars leaves a struct's
    /// tag out of its schema, and the schema forbids unknown members.
    pub what: SuppressedWhat,
    pub action: GuardAction,
    /// The class: `signal`, `ptrace`, `bpf`, `file`, `escape`.
    pub of: &'static str,
    pub count: u64,
    pub reason: String,
}

/// `target.what` of a suppressed count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuppressedWhat {
    #[default]
    Suppressed,
}
