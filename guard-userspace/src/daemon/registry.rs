//! What the daemon knows about agents, their runs and their rules: the
//! lookup tables that attribute a kernel record to a name, owner and rule.
use std::{collections::HashMap, path::PathBuf};

use crate::{events::model::AgentRef, policy};

pub struct AgentState {
    /// Kernel-side id (maps are keyed by it).
    pub agent_id: u32,
    pub def: policy::Agent,
    pub cgroup_dir: PathBuf,
    pub cgroup_id: u64,
    /// Whether the daemon created the cgroup (only those are removed).
    pub created: bool,
    /// Frozen by an operator (`agent-guard freeze`): mode freeze until
    /// `thaw`, whatever the policy says, across reloads.
    pub frozen: bool,
}

impl AgentState {
    /// The mode in force.
    pub fn mode(&self) -> guard_common::Mode {
        if self.frozen {
            guard_common::Mode::Freeze
        } else {
            self.def.mode
        }
    }

    pub fn clone_state(&self) -> Self {
        Self {
            agent_id: self.agent_id,
            def: self.def.clone(),
            cgroup_dir: self.cgroup_dir.clone(),
            cgroup_id: self.cgroup_id,
            created: self.created,
            frozen: self.frozen,
        }
    }
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
    /// What its seccomp filter leaves out (the agent's policy when it
    /// started).
    pub filter: crate::supervise::FilterOptions,
}

pub struct Registry {
    /// The policy in force; events cite its rules.
    pub policy: policy::Policy,
    /// Files and directories kept from agents, by the kernel's key for
    /// them: `guard.tamper` events name the one an agent reached for.
    pub protected: Vec<(guard_common::InodeKey, PathBuf)>,
    /// Every cgroup filesystem mount: a refused write under one, outside
    /// the agent's own tree, is an escape attempt.
    pub cgroup_mounts: Vec<PathBuf>,
    pub agents: HashMap<u32, AgentState>,
    /// Keyed by the session cgroup's id, which is what records carry.
    pub sessions: HashMap<u64, SessionState>,
    /// Agent ids a reload replaced or removed: records still in the ring
    /// buffer carry them and must still be attributed.
    pub retired: HashMap<u32, AgentState>,
}

impl Registry {
    pub fn new(policy: policy::Policy) -> Self {
        Self {
            policy,
            protected: Vec::new(),
            cgroup_mounts: Vec::new(),
            agents: HashMap::new(),
            sessions: HashMap::new(),
            retired: HashMap::new(),
        }
    }

    /// Agent `agent_id`, current or retired by a reload.
    pub fn agent(&self, agent_id: u32) -> Option<&AgentState> {
        self.agents
            .get(&agent_id)
            .or_else(|| self.retired.get(&agent_id))
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
        let agent = self.agent(agent_id)?;
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
