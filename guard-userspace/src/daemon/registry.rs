//! What the daemon knows about agents, their runs and their rules: the
//! lookup tables that attribute a kernel record to a name, owner and rule.
use std::{collections::HashMap, path::PathBuf};

use crate::{events::AgentRef, policy};

pub struct AgentState {
    /// Kernel-side id (maps are keyed by it).
    pub agent_id: u32,
    pub def: policy::Agent,
    pub cgroup_dir: PathBuf,
    pub cgroup_id: u64,
    /// Whether the daemon created the cgroup (only those are removed).
    pub created: bool,
}

/// One `agent-guard run` of an agent: its own child cgroup.
pub struct SessionState {
    pub id: String,
    pub agent_id: u32,
    pub dir: PathBuf,
    pub on_behalf_of: Option<String>,
    pub argv: Vec<String>,
    /// Secret handed to the launcher; the joining process must present it.
    pub token: String,
    /// The launcher (the joining process must be its child).
    pub opener_pid: u32,
    pub opener_uid: u32,
    /// Deletes of this run are supervised through seccomp (no BPF LSM).
    pub supervised: bool,
}

pub struct Registry {
    /// The policy in force; events cite its rules.
    pub policy: policy::Policy,
    pub agents: HashMap<u32, AgentState>,
    /// Keyed by the session cgroup's id, which is what records carry.
    pub sessions: HashMap<u64, SessionState>,
}

impl Registry {
    pub fn new(policy: policy::Policy) -> Self {
        Self {
            policy,
            agents: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    pub fn agent_by_name(&self, name: &str) -> Option<&AgentState> {
        self.agents.values().find(|a| a.def.name == name)
    }

    pub fn agent_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.agents.values().map(|a| a.def.name.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// The agent block of an event for a task in cgroup `task_cgroup`.
    pub fn agent_ref(&self, agent_id: u32, task_cgroup: u64) -> Option<AgentRef> {
        let agent = self.agents.get(&agent_id)?;
        let session = self.sessions.get(&task_cgroup);
        Some(AgentRef {
            name: agent.def.name.clone(),
            owner: agent.def.owner.clone(),
            purpose: agent.def.purpose.clone(),
            labels: agent.def.labels.clone(),
            cgroup: agent.def.cgroup.clone(),
            cgroup_id: agent.cgroup_id,
            session: session.map(|s| s.id.clone()),
            on_behalf_of: session.and_then(|s| s.on_behalf_of.clone()),
        })
    }
}
