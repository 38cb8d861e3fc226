//! Live policy reload (SIGHUP, `agent-guard reload`) with no enforcement
//! gap.
//!
//! A kernel program reads the agent's `AgentEntry` once per call and then
//! only rules keyed by the agent id in it. A reload therefore writes every
//! new or changed agent's rules under a fresh id that no entry points at
//! yet, then flips each AGENTS entry in one map update, and only then
//! deletes what the old ids used. A call sees the old entry with the old
//! rules or the new entry with the new rules: never a mix, never none.
//! Agents whose compiled policy is unchanged are not touched at all.
use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{Shared, holds::By, registry::AgentState};
use crate::{
    cgroup,
    events::{
        self,
        model::{DaemonEvent, Lifecycle, PolicyDiff, PolicyReload, Reloaded, Text},
    },
    kernel::Kernel,
    policy::{self, Agent, Policy, RemovePolicy},
};

/// Why a reload was refused; the old policy stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    #[error("applying the new policy failed: {0:#}")]
    Kernel(anyhow::Error),
}

/// One agent's fate in a reload.
enum Change<'a> {
    Add(&'a Agent),
    /// Same name and cgroup; the rules (or their ids) differ.
    Rewrite(&'a AgentState, &'a Agent),
    Remove(&'a AgentState),
}

/// Reloads the policy file the daemon was started with. `force` lets a
/// reload retire agents that still have processes (`[daemon] on_remove`
/// says whether they are killed or left unguarded).
pub fn reload(shared: &Arc<Shared>, force: bool, by: By) -> Result<Value, ReloadError> {
    let _one_at_a_time = shared.reloading.lock();
    let result = try_reload(shared, force);
    let path = shared.policy_path.as_ref().map(|p| p.display().to_string());
    let (outcome, policy) = match &result {
        Ok((digest, diff)) => {
            tracing::info!(%digest, "policy reloaded");
            let policy = Reloaded {
                path,
                digest: Some(digest.clone()),
                error: None,
                diff: Some(diff.clone()),
            };
            (Lifecycle::Success, policy)
        }
        Err(err) => {
            tracing::error!(%err, "policy reload refused; the previous policy stays in force");
            let policy = Reloaded {
                path,
                digest: None,
                error: Some(Text::message(err.to_string())),
                diff: None,
            };
            (Lifecycle::Failure, policy)
        }
    };
    events::emit_now(
        &shared.emitter,
        DaemonEvent::PolicyReload(PolicyReload {
            outcome,
            policy,
            by,
        }),
    );
    result.map(|(digest, diff)| json!({ "digest": digest, "diff": diff }))
}

fn try_reload(shared: &Arc<Shared>, force: bool) -> Result<(String, PolicyDiff), ReloadError> {
    let Some(path) = &shared.policy_path else {
        return Err(ReloadError::Invalid(
            "the daemon runs the embedded default policy; start it with --policy FILE to reload"
                .into(),
        ));
    };
    let bytes = std::fs::read(path)
        .map_err(|e| ReloadError::Invalid(format!("reading {}: {e}", path.display())))?;
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let digest = format!("sha256:{digest}");
    let new = policy::load(path).map_err(|e| ReloadError::Invalid(e.to_string()))?;
    let refused = policy::unenforceable_deletes(
        &new,
        shared.lsm,
        crate::kernel::seccomp_user_notif_available(),
    );
    if !refused.is_empty() {
        return Err(ReloadError::Invalid(format!(
            "this kernel cannot enforce the delete rules of agent(s) {} (see `agent-guard doctor`, \
             or set accept_observe_only)",
            refused.join(", ")
        )));
    }

    let registry = shared.registry.read();
    let old = &registry.policy;
    if new.daemon.control_socket != old.daemon.control_socket
        || new.daemon.state_dir != old.daemon.state_dir
    {
        return Err(ReloadError::Invalid(
            "control_socket and state_dir cannot change while the daemon runs; restart it".into(),
        ));
    }
    let changes = plan(&registry.agents, &new);
    let diff = summary(&changes);
    let mut busy = Vec::new();
    for change in &changes {
        if let Change::Remove(a) = change {
            let procs = cgroup::count_procs(&a.cgroup_dir);
            if procs > 0 {
                busy.push(format!("{} ({procs} processes)", a.def.name));
            }
        }
    }
    if !busy.is_empty() && !force {
        return Err(ReloadError::Refused(format!(
            "agent(s) {} would leave the policy while they have live processes; reload with \
             --force to {} ([daemon] on_remove)",
            busy.join(", "),
            match new.daemon.on_remove {
                RemovePolicy::Kill => "kill them",
                RemovePolicy::Unguard => "leave them running unguarded",
            }
        )));
    }

    let mut kernel = shared.kernel.lock();
    let Some(kernel) = kernel.as_mut() else {
        return Err(ReloadError::Refused("the daemon is stopping".into()));
    };
    let applied = apply(shared, kernel, &changes, &registry, &new).map_err(ReloadError::Kernel)?;
    drop(registry);

    let mut registry = shared.registry.write();
    for (old_id, state) in applied.retired {
        registry.agents.remove(&old_id);
        registry.retired.insert(old_id, state);
    }
    for (old_id, state) in applied.installed {
        if let Some(old_id) = old_id {
            for s in registry.sessions.values_mut() {
                if s.agent_id == old_id {
                    s.agent_id = state.agent_id;
                }
            }
        }
        registry.agents.insert(state.agent_id, state);
    }
    registry.policy = new;
    Ok((digest, diff))
}

/// Which agents are added, rewritten or removed. An agent whose cgroup
/// changed is removed and added.
fn plan<'a>(current: &'a HashMap<u32, AgentState>, new: &'a Policy) -> Vec<Change<'a>> {
    let by_name: HashMap<&str, &AgentState> =
        current.values().map(|a| (a.def.name.as_str(), a)).collect();
    let mut changes = Vec::new();
    for def in &new.agents {
        match by_name.get(def.name.as_str()) {
            None => changes.push(Change::Add(def)),
            Some(old) if old.def.cgroup != def.cgroup => {
                changes.push(Change::Remove(old));
                changes.push(Change::Add(def));
            }
            Some(old) if old.def == *def => {}
            Some(old) => changes.push(Change::Rewrite(old, def)),
        }
    }
    for old in current.values() {
        if !new.agents.iter().any(|d| d.name == old.def.name) {
            changes.push(Change::Remove(old));
        }
    }
    changes
}

/// The `diff` of the `policy.reload` event: agents added, removed, and
/// changed in meaning (not merely moved to other lines of the file).
fn summary(changes: &[Change<'_>]) -> PolicyDiff {
    let (mut added, mut removed, mut changed) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for c in changes {
        match c {
            Change::Add(d) => {
                added.insert(d.name.clone());
            }
            Change::Remove(a) => {
                removed.insert(a.def.name.clone());
            }
            Change::Rewrite(a, d) if !same_meaning(&a.def, d) => {
                changed.insert(d.name.clone());
            }
            Change::Rewrite(..) => {}
        }
    }
    // A moved cgroup shows as changed, not as removed and added.
    let moved: Vec<String> = added.intersection(&removed).cloned().collect();
    for name in moved {
        added.remove(&name);
        removed.remove(&name);
        changed.insert(name);
    }
    PolicyDiff {
        added: added.into_iter().collect(),
        removed: removed.into_iter().collect(),
        changed: changed.into_iter().collect(),
    }
}

/// Equal but for rule ids and file positions.
fn same_meaning(a: &Agent, b: &Agent) -> bool {
    fn strip(a: &Agent) -> Agent {
        let mut a = a.clone();
        a.line = 0;
        for r in &mut a.connect.rules {
            (r.id, r.line, r.col) = (0, 0, 0);
        }
        for r in &mut a.delete.rules {
            (r.id, r.line, r.col) = (0, 0, 0);
        }
        a
    }
    strip(a) == strip(b)
}

struct Applied {
    /// New agent states, with the id they replace (None: a new agent).
    installed: Vec<(Option<u32>, AgentState)>,
    retired: Vec<(u32, AgentState)>,
}

fn apply(
    shared: &Arc<Shared>,
    kernel: &mut Kernel,
    changes: &[Change<'_>],
    registry: &super::registry::Registry,
    new: &Policy,
) -> Result<Applied> {
    // 1. Everything new goes in under fresh ids that nothing points at.
    let mut fresh: Vec<(u32, &Agent)> = Vec::new();
    let staged = (|| -> Result<()> {
        for c in changes {
            let def = match c {
                Change::Add(def) | Change::Rewrite(_, def) => *def,
                Change::Remove(_) => continue,
            };
            let id = shared.next_agent_id();
            fresh.push((id, def));
            super::write_rules(kernel, id, def)?;
            // A rewritten agent's windows go on: a reload is no refill.
            let carry = match c {
                Change::Rewrite(old, _) => Some(old.agent_id),
                _ => None,
            };
            shared.budgets.set(id, def, carry)?;
            if let Change::Rewrite(old, _) = c {
                shared
                    .grants
                    .copy_to(old.agent_id, id)
                    .context("copying grants")?;
            }
        }
        Ok(())
    })();
    if let Err(err) = staged {
        // Nothing was switched: take the staged rules out again.
        for (id, def) in &fresh {
            super::remove_rules(kernel, *id, def);
            shared.budgets.drop_agent(*id);
        }
        return Err(err);
    }

    // 2. Agent cgroups and levels for the union of old and new, then the flips.
    let mut levels = super::agent_levels(registry.agents.values().map(|a| &a.def));
    levels |= super::agent_levels(new.agents.iter());
    kernel.set_agent_levels(levels)?;
    let mut installed = Vec::new();
    let mut retired = Vec::new();
    let ids: HashMap<&str, u32> = fresh.iter().map(|(id, d)| (d.name.as_str(), *id)).collect();
    for c in changes {
        match c {
            Change::Add(def) => {
                let id = ids[def.name.as_str()];
                let state = super::install_agent(kernel, &shared.hierarchy, id, def, false)?;
                // An adopted cgroup may already have processes.
                super::selfdefense::track(kernel, state.cgroup_id, &state.cgroup_dir);
                installed.push((None, state));
            }
            Change::Rewrite(old, def) => {
                let id = ids[def.name.as_str()];
                let mut entry = policy::agent_entry(id, def);
                if old.frozen {
                    entry.mode = guard_common::Mode::Freeze.raw();
                }
                kernel.set_agent(old.cgroup_id, entry)?;
                installed.push((
                    Some(old.agent_id),
                    AgentState {
                        agent_id: id,
                        def: (*def).clone(),
                        cgroup_dir: old.cgroup_dir.clone(),
                        cgroup_id: old.cgroup_id,
                        created: old.created,
                        frozen: old.frozen,
                    },
                ));
            }
            Change::Remove(_) => {}
        }
    }

    // 3. Retire what left, and what only the old ids used.
    for c in changes {
        match c {
            Change::Rewrite(old, _) => {
                super::remove_rules(kernel, old.agent_id, &old.def);
                shared.budgets.drop_agent(old.agent_id);
                shared
                    .grants
                    .moved(old.agent_id, ids[old.def.name.as_str()]);
                retired.push((old.agent_id, old.clone_state()));
            }
            Change::Remove(old) => {
                retire(shared, kernel, old, new.daemon.on_remove);
                retired.push((old.agent_id, old.clone_state()));
            }
            Change::Add(_) => {}
        }
    }
    kernel.set_agent_levels(super::agent_levels(new.agents.iter()))?;
    if super::needs_connect_holds(new.agents.iter()) {
        kernel.attach_connect_hold_stopper()?;
    }
    Ok(Applied { installed, retired })
}

/// An agent that left the policy: its processes are killed or left
/// running unguarded, its kernel entries and attachments go, and its cgroup
/// too if the daemon made it and nothing lives in it.
fn retire(shared: &Shared, kernel: &mut Kernel, old: &AgentState, on_remove: RemovePolicy) {
    let name = &old.def.name;
    if on_remove == RemovePolicy::Kill && cgroup::count_procs(&old.cgroup_dir) > 0 {
        match cgroup::kill_all(&old.cgroup_dir) {
            Ok(()) => {
                tracing::warn!(agent = %name, "agent left the policy; its processes were killed")
            }
            Err(err) => {
                tracing::error!(agent = %name, %err, "killing the processes of a retired agent")
            }
        }
    }
    if let Err(err) = kernel.remove_agent(old.cgroup_id) {
        tracing::error!(agent = %name, %err, "removing a retired agent's entry");
    }
    kernel.detach_cgroup(old.cgroup_id);
    super::remove_rules(kernel, old.agent_id, &old.def);
    shared.grants.drop_agent(old.agent_id);
    shared.budgets.drop_agent(old.agent_id);
    if old.created && !cgroup::populated(&old.cgroup_dir).unwrap_or(true) {
        if let Err(err) = cgroup::remove_tree(&old.cgroup_dir) {
            tracing::warn!(agent = %name, %err, "cgroup of a retired agent left in place");
        }
    } else if cgroup::count_procs(&old.cgroup_dir) > 0 {
        tracing::warn!(agent = %name, "agent left the policy; its processes run on unguarded");
    }
}
