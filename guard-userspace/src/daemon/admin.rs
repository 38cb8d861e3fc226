//! Operator requests on the live daemon: reload, the agent registry, and
//! freezing or thawing an agent.
use std::sync::Arc;

use super::{
    Shared,
    access::{Caller, Need},
    reload,
};
use crate::{
    cgroup,
    events::{
        self,
        model::{AgentMode, AgentRef, By, DaemonEvent, ModeChange, Subject, Success, Text},
    },
    policy,
};
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

/// `reload`; with `force`, also `retire` agents the new policy drops
/// while they still have processes.
pub(super) fn reload(shared: &Arc<Shared>, who: &Caller, force: bool) -> Result<Value> {
    let op = if force { "retire" } else { "reload" };
    who.require(shared, Need::Approver, op, Some(Subject::Force(force)))?;
    Ok(reload::reload(shared, force, who.by())?)
}

/// `agent-guard agents`: every agent with its live state (readers only).
pub(super) fn agents(shared: &Shared, who: &Caller) -> Result<Value> {
    who.require(shared, Need::Reader, "agents", None)?;
    let registry = shared.registry.read();
    let counts = shared.counts.snapshot();
    let mut list: Vec<&super::registry::AgentState> = registry.agents.values().collect();
    list.sort_by(|a, b| a.def.name.cmp(&b.def.name));
    let agents: Vec<Value> = list
        .iter()
        .map(|a| {
            let sessions: Vec<&str> = registry
                .sessions
                .values()
                .filter(|s| s.agent_id == a.agent_id)
                .map(|s| s.id.as_str())
                .collect();
            json!({
                "name": a.def.name,
                "owner": a.def.owner,
                "purpose": a.def.purpose,
                "labels": a.def.labels,
                "mode": policy::mode_str(a.mode()),
                "policy_mode": policy::mode_str(a.def.mode),
                "frozen": a.frozen,
                "expires": a.def.expires_text(),
                "expired": a.def.expired(super::expiry::now()),
                "cgroup": a.def.cgroup,
                "cgroup_id": a.cgroup_id,
                "adopted": !a.created,
                "processes": cgroup::count_procs(&a.cgroup_dir),
                "sessions": sessions,
                "grants": shared.grants.of_agent(a.agent_id),
                "budget": shared.budgets.usage(a.agent_id, &a.def),
                "counts": counts.get(&a.def.name).copied().unwrap_or_default(),
            })
        })
        .collect();
    Ok(json!({ "agents": agents }))
}

/// Freezes an agent (or thaws it back to its policy's mode): one AGENTS
/// map update, in force for the next call.
pub(super) fn set_mode(
    shared: &Arc<Shared>,
    who: &Caller,
    agent: &str,
    freeze: bool,
    reason: Option<String>,
) -> Result<Value> {
    let op = if freeze { "freeze" } else { "thaw" };
    who.require(
        shared,
        Need::Approver,
        op,
        Some(Subject::Agent(agent.into())),
    )?;
    switch_and_report(shared, agent, freeze, who.by(), reason)
}

/// Freezes or thaws `agent` on behalf of `by` and reports it (an
/// `agent.mode` event): an operator, or the daemon itself when a budget
/// with `on_exceed = "freeze"` is spent.
pub(super) fn switch_and_report(
    shared: &Arc<Shared>,
    agent: &str,
    freeze: bool,
    by: By,
    reason: Option<String>,
) -> Result<Value> {
    let switched = switch_mode(shared, agent, freeze)?;
    tracing::warn!(agent, mode = policy::mode_str(switched.to), by = %by.user, "agent mode switched");
    events::emit_now(
        &shared.emitter,
        DaemonEvent::AgentMode(AgentMode {
            outcome: Success::Success,
            agent: switched.agent_ref,
            mode: ModeChange {
                from: switched.from.into(),
                to: switched.to.into(),
            },
            by,
            reason: reason.map(Text::message),
        }),
    );
    Ok(json!({ "mode": policy::mode_str(switched.to), "warning": switched.warning }))
}

/// What [`switch_mode`] did.
pub(super) struct Switched {
    pub from: guard_common::Mode,
    pub to: guard_common::Mode,
    pub agent_ref: Option<AgentRef>,
    /// The freeze is in force but could not be recorded for a restart.
    pub warning: Option<String>,
}

/// Freezes or thaws `agent` in the kernel and records the frozen set for
/// a restarted daemon; the caller reports it. An expired agent is not
/// thawed: that would give it back the rights its expiry took.
pub(super) fn switch_mode(shared: &Arc<Shared>, agent: &str, freeze: bool) -> Result<Switched> {
    let _one_at_a_time = shared.reloading.lock();
    let mut registry = shared.registry.write();
    let names = registry.agent_names().join(", ");
    let Some(state) = registry.agents.values_mut().find(|a| a.def.name == agent) else {
        bail!("unknown agent {agent:?}; the policy declares: {names}");
    };
    if !freeze && state.def.expired(super::expiry::now()) {
        bail!(
            "agent {agent:?} expired at {}; a thaw would give it its rights back: extend or \
             remove `expires` in its [[agent]] table and reload first",
            state.def.expires_text().unwrap_or_default()
        );
    }
    let from = state.mode();
    state.frozen = freeze;
    let to = state.mode();
    let mut entry = policy::agent_entry(state.agent_id, &state.def);
    entry.mode = to.raw();
    {
        let mut kernel = shared.kernel.lock();
        let kernel = kernel.as_mut().context("the daemon is stopping")?;
        if to == guard_common::Mode::Freeze {
            // Frozen connects are held: the stopper must be there first.
            kernel.attach_connect_hold_stopper()?;
        }
        if let Err(err) = kernel.set_agent(state.cgroup_id, entry) {
            state.frozen = !freeze;
            return Err(err).context("switching the agent's mode in the kernel");
        }
    }
    let agent_id = state.agent_id;
    let agent_ref = registry.agent_ref(agent_id, 0);
    let names: std::collections::BTreeSet<String> = registry
        .agents
        .values()
        .filter(|a| a.frozen)
        .map(|a| a.def.name.clone())
        .collect();
    drop(registry);
    // In force in the kernel already; recorded so that a restarted daemon
    // keeps it. Failing to record it is said, not hidden.
    let warning = shared.frozen.save(&names).err().map(|err| {
        tracing::error!(error = %format!("{err:#}"), "recording the frozen agents; a restarted daemon would not know");
        format!("{err:#}; a restarted daemon would put {agent} back in its policy's mode")
    });
    Ok(Switched {
        from,
        to,
        agent_ref,
        warning,
    })
}
