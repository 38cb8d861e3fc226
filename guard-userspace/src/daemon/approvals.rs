//! Decisions: approve, deny (with scopes that become grants), revoke and
//! kill. The one decision path for every surface: the control socket
//! (approvers from SO_PEERCRED, never from inside an agent) and the web
//! page (a token's user); see `access`. Every refusal is a
//! `control.refused` event as well as an error reply.
use std::{path::PathBuf, sync::Arc};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::{
    Shared,
    access::{Caller, Need},
};
use crate::{
    cgroup,
    events::{
        self,
        model::{AgentKill, Call, DaemonEvent, Killed, Op, Scope, Subject, Success},
    },
};

/// Approves or denies a hold, for approvers only (see `access`). A
/// refusal is an event, not just a reply.
pub fn decide(
    shared: &Arc<Shared>,
    who: &Caller,
    id: &str,
    approve: bool,
    reason: Option<String>,
    scope: ScopeRequest,
) -> Result<serde_json::Value> {
    who.require(
        shared,
        Need::Approver,
        if approve { "approve" } else { "deny" },
        Some(Subject::Hold(id.into())),
    )?;
    let hold: u64 = id
        .parse()
        .with_context(|| format!("{id:?} is not a hold id"))?;
    let verdict = if approve {
        super::holds::Verdict::Approved
    } else {
        super::holds::Verdict::Denied
    };
    let by = who.by();
    // A scoped approval first becomes a grant, so that calls it covers and
    // that arrive right after the release already pass.
    let granted = match scope.scope.as_deref() {
        None | Some("once") => Scope::once(),
        Some(_) if !approve => bail!("only an approval takes a scope"),
        Some(kind) => Scope::Grant(grant_for_hold(
            shared,
            hold,
            kind,
            &scope,
            &by.user,
            reason.clone(),
        )?),
    };
    if !shared
        .holds
        .decide_scoped(shared, hold, verdict, by, reason, granted.clone())
    {
        bail!("no pending hold {id} (already decided, expired, or never held)");
    }
    Ok(json!({ "scope": granted }))
}

/// The subtree a `subtree` approval of held file call `call` grants
/// unless narrowed: the path of the `ask` rule that held it, else the
/// directory of the path whose rule decided (a rename's destination when
/// the object it would replace decided). None for a call without a path.
pub fn default_subtree(call: &Call) -> Option<String> {
    let target = call.op.decided_path()?;
    let prefix = match call.rule.matched.as_deref() {
        Some(m) if m.starts_with('/') => m.trim_end_matches('/'),
        _ => target.rsplit_once('/').map_or("", |(dir, _)| dir),
    };
    Some(if prefix.is_empty() { "/" } else { prefix }.to_owned())
}

/// The scope part of an approval, as asked.
pub struct ScopeRequest {
    pub scope: Option<String>,
    pub for_secs: Option<u64>,
    pub path: Option<String>,
}

/// Turns an approval's scope into a grant, derived from the held call.
fn grant_for_hold(
    shared: &Arc<Shared>,
    hold: u64,
    kind: &str,
    scope: &ScopeRequest,
    by: &str,
    reason: Option<String>,
) -> Result<events::model::Grant> {
    use super::grants::Scope;
    let call = shared
        .holds
        .call_of(hold)
        .with_context(|| format!("no pending hold {hold}"))?;
    let lasts = std::time::Duration::from_secs(
        scope
            .for_secs
            .with_context(|| format!("scope {kind} needs a duration (--for, e.g. 10m)"))?,
    );
    let agent_name = call
        .agent
        .known()
        .context("held call without an agent")?
        .name
        .clone();
    let agent_id = {
        let registry = shared.registry.read();
        registry
            .agent_by_name(&agent_name)
            .map(|a| a.agent_id)
            .with_context(|| format!("agent {agent_name} is no longer in the policy"))?
    };
    let what = call.kind().name();
    let scope = match kind {
        "agent" => Scope::Agent,
        "subtree" => {
            if !what.starts_with("file.") {
                bail!("scope subtree is for file calls; this hold is a {what}");
            }
            // The path whose rule held it: a rename's destination when the
            // object it would replace decided.
            let target = call
                .op
                .decided_path()
                .context("held file call without a path")?;
            let prefix = match &scope.path {
                Some(p) => match p.trim_end_matches('/') {
                    "" => "/".to_owned(),
                    p => p.to_owned(),
                },
                None => default_subtree(&call).context("held file call without a path")?,
            };
            if !(prefix == "/" || target == prefix || target.starts_with(&format!("{prefix}/"))) {
                bail!("{prefix} does not contain the held path {target}");
            }
            Scope::Subtree { prefix }
        }
        "destination" => {
            let (Op::Connect(dst) | Op::Send(dst)) = &call.op else {
                bail!("scope destination is for connects and datagrams; this hold is a {what}");
            };
            let addr = match dst.address {
                std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(v6) => v6.octets(),
            };
            Scope::Destination {
                addr,
                port: dst.port,
            }
        }
        other => bail!("unknown scope {other:?}: once, subtree, destination or agent"),
    };
    shared
        .grants
        .add(agent_id, agent_name, scope, lasts, by.to_owned(), reason)
}

pub fn revoke(shared: &Arc<Shared>, who: &Caller, id: u32) -> Result<serde_json::Value> {
    who.require(shared, Need::Approver, "revoke", Some(Subject::Grant(id)))?;
    if !shared.grants.revoke(id) {
        bail!("no live grant {id}");
    }
    Ok(json!({}))
}

/// Kills a held call's run (its session cgroup, or the agent's cgroup for a
/// process started without `run`), or every process of an agent.
pub fn kill(
    shared: &Arc<Shared>,
    who: &Caller,
    hold: Option<String>,
    agent: Option<String>,
) -> Result<serde_json::Value> {
    let what = match (&hold, &agent) {
        (Some(h), None) => format!("hold {h}"),
        (None, Some(a)) => format!("agent {a}"),
        _ => bail!("kill takes exactly one of a hold id or an agent name"),
    };
    who.require(
        shared,
        Need::Approver,
        "kill",
        Some(Subject::Target(what.clone())),
    )?;
    let user = who.user.clone();
    let dir: PathBuf = match (&hold, &agent) {
        (Some(h), _) => {
            let id: u64 = h
                .parse()
                .with_context(|| format!("{h:?} is not a hold id"))?;
            let pid = shared
                .holds
                .pid_of(id)
                .with_context(|| format!("no pending hold {h}"))?;
            let own = guard_host::proc::cgroup(pid)
                .with_context(|| format!("cannot read the cgroup of pid {pid}"))?;
            let registry = shared.registry.read();
            let session = registry
                .sessions
                .values()
                .find(|s| own.ends_with(&format!("/run-{}", s.id)))
                .map(|s| s.dir.clone());
            let agent_dir = registry
                .agents
                .values()
                .find(|a| {
                    own.trim_start_matches('/')
                        .starts_with(a.def.cgroup.as_str())
                })
                .map(|a| a.cgroup_dir.clone());
            session
                .or(agent_dir)
                .with_context(|| format!("pid {pid} is in no agent cgroup ({own})"))?
        }
        (_, Some(name)) => {
            let registry = shared.registry.read();
            registry
                .agent_by_name(name)
                .map(|a| a.cgroup_dir.clone())
                .with_context(|| format!("unknown agent {name:?}"))?
        }
        _ => unreachable!("checked above"),
    };
    cgroup::kill_all(&dir)?;
    if let Some(h) = hold.as_deref().and_then(|h| h.parse().ok()) {
        shared
            .holds
            .decide(shared, h, super::holds::Verdict::Killed, who.by(), None);
    }
    tracing::warn!(%what, by = %user, cgroup = %dir.display(), "killed");
    events::emit_now(
        &shared.emitter,
        DaemonEvent::AgentKill(AgentKill {
            outcome: Success::Success,
            control: Killed {
                target: what,
                cgroup: dir.display().to_string(),
                by: who.by(),
            },
        }),
    );
    Ok(json!({ "cgroup": dir.display().to_string() }))
}
