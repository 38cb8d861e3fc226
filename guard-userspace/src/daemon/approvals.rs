//! Decisions: approve, deny (with scopes that become grants), revoke and
//! kill. The one decision path for every surface: the control socket
//! (approvers from SO_PEERCRED) and the web page (a token's user). Every
//! refusal is a `control.refused` event as well as an error reply.
use std::{path::PathBuf, sync::Arc};

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use tokio::net::unix::UCred;

use super::Shared;
use crate::{
    cgroup,
    events::{
        self,
        model::{
            AgentKill, ControlOp, ControlRefused, DaemonEvent, Killed, Op, Peer, Refusal, Refused,
            Scope, Success, Text, Via,
        },
    },
};

/// Who asks for a decision.
pub enum Approver {
    /// A control-socket peer, as SO_PEERCRED says; an approver if root or
    /// listed in `[daemon] approvers`.
    Peer(UCred),
    /// A web token's user; the root-only tokens file is the list of who may
    /// decide there, so holding a token is being an approver.
    Token { user: String },
}

impl Approver {
    fn user(&self) -> String {
        match self {
            Approver::Peer(cred) => user_name(cred),
            Approver::Token { user } => user.clone(),
        }
    }

    fn uid(&self) -> Option<u32> {
        match self {
            Approver::Peer(cred) => Some(cred.uid()),
            Approver::Token { .. } => None,
        }
    }

    fn allowed(&self, shared: &Shared) -> bool {
        match self {
            Approver::Peer(cred) => is_approver(shared, cred),
            Approver::Token { .. } => true,
        }
    }

    /// The `by` of refusal events.
    fn peer(&self) -> Peer {
        match self {
            Approver::Peer(cred) => Peer {
                uid: Some(cred.uid()),
                pid: cred.pid(),
                user: Some(user_name(cred)),
                ..Peer::default()
            },
            Approver::Token { user } => Peer {
                user: Some(user.clone()),
                via: Some(Via::Web),
                ..Peer::default()
            },
        }
    }

    fn by(&self) -> super::holds::By {
        super::holds::By {
            uid: self.uid(),
            user: self.user(),
        }
    }

    /// Refuses a non-approver: an event (`about` says what was asked)
    /// and an error.
    fn check(
        &self,
        shared: &Shared,
        op: ControlOp,
        about: impl FnOnce(&mut Refusal),
    ) -> Result<()> {
        if self.allowed(shared) {
            return Ok(());
        }
        let mut control = Refusal::new(op, self.peer(), "not an approver ([daemon] approvers)");
        about(&mut control);
        events::emit_now(
            &shared.emitter,
            DaemonEvent::ControlRefused(ControlRefused {
                outcome: Refused::Denied,
                control,
            }),
        );
        let uid = self.uid().map_or_else(String::new, |u| format!("uid {u} "));
        bail!(
            "{uid}({}) is not an approver; see [daemon] approvers in the policy",
            self.user()
        );
    }
}

/// Approves or denies a hold, for approvers only (see [`Approver`]). A
/// refusal is an event, not just a reply.
pub fn decide(
    shared: &Arc<Shared>,
    who: &Approver,
    id: &str,
    approve: bool,
    reason: Option<String>,
    scope: ScopeRequest,
) -> Result<serde_json::Value> {
    let op = if approve {
        ControlOp::Approve
    } else {
        ControlOp::Deny
    };
    who.check(shared, op, |r| r.hold = Some(Text::name(id)))?;
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
        let registry = shared
            .registry
            .read()
            .map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
        registry
            .agent_by_name(&agent_name)
            .map(|a| a.agent_id)
            .with_context(|| format!("agent {agent_name} is no longer in the policy"))?
    };
    let what = call.kind().name();
    let scope = match kind {
        "agent" => Scope::Agent,
        "subtree" => {
            let (Op::Unlink(t) | Op::Rmdir(t)) = &call.op else {
                bail!("scope subtree is for deletes; this hold is a {what}");
            };
            let target = t.path.as_deref().context("held delete without a path")?;
            // Default: the subtree of the ask rule that held the call.
            let prefix = match (&scope.path, call.rule.matched.as_deref()) {
                (Some(p), _) => p.trim_end_matches('/').to_owned(),
                (None, Some(m)) if m.starts_with('/') => m.trim_end_matches('/').to_owned(),
                _ => target
                    .rsplit_once('/')
                    .map(|(dir, _)| dir.to_owned())
                    .unwrap_or_default(),
            };
            let prefix = if prefix.is_empty() {
                "/".to_owned()
            } else {
                prefix
            };
            if !(prefix == "/" || target == prefix || target.starts_with(&format!("{prefix}/"))) {
                bail!("{prefix} does not contain the held path {target}");
            }
            Scope::Subtree { prefix }
        }
        "destination" => {
            let Op::Connect(dst) = &call.op else {
                bail!("scope destination is for connects; this hold is a {what}");
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

pub fn revoke(shared: &Arc<Shared>, who: &Approver, id: u32) -> Result<serde_json::Value> {
    who.check(shared, ControlOp::Revoke, |r| r.grant = Some(id))?;
    if !shared.grants.revoke(id) {
        bail!("no live grant {id}");
    }
    Ok(json!({}))
}

/// Kills a held call's run (its session cgroup, or the agent's cgroup for a
/// process started without `run`), or every process of an agent.
pub fn kill(
    shared: &Arc<Shared>,
    who: &Approver,
    hold: Option<String>,
    agent: Option<String>,
) -> Result<serde_json::Value> {
    let what = match (&hold, &agent) {
        (Some(h), None) => format!("hold {h}"),
        (None, Some(a)) => format!("agent {a}"),
        _ => bail!("kill takes exactly one of a hold id or an agent name"),
    };
    who.check(shared, ControlOp::Kill, |r| {
        r.target = Some(Text::name(&what))
    })?;
    let user = who.user();
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
            let registry = shared
                .registry
                .read()
                .map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
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
            let registry = shared
                .registry
                .read()
                .map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
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

pub(super) fn user_name(cred: &UCred) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(cred.uid()))
        .ok()
        .flatten()
        .map_or_else(|| cred.uid().to_string(), |u| u.name)
}

/// Refuses (with a `control.refused` event naming `op`, and what `about`
/// adds) unless the control-socket peer may approve.
pub(super) fn require_approver(
    shared: &Shared,
    cred: &UCred,
    op: ControlOp,
    about: impl FnOnce(&mut Refusal),
) -> Result<()> {
    Approver::Peer(*cred).check(shared, op, about)
}

pub(super) fn is_approver(shared: &Shared, cred: &UCred) -> bool {
    let registry = match shared.registry.read() {
        Ok(r) => r,
        Err(poisoned) => poisoned.into_inner(),
    };
    is_member(&registry.policy.daemon.approvers, cred)
}

/// Whether the caller is root, or listed in `list` by uid or by a group it
/// is in (primary or supplementary, as the kernel sees the process now).
pub(super) fn is_member(list: &crate::policy::Approvers, cred: &UCred) -> bool {
    let approvers = list;
    if cred.uid() == 0 || approvers.uids.contains(&cred.uid()) {
        return true;
    }
    // Group membership of the caller process, as the kernel sees it now.
    let groups: Vec<u32> = cred
        .pid()
        .and_then(|pid| u32::try_from(pid).ok())
        .and_then(guard_host::proc::groups)
        .unwrap_or_default();
    approvers.groups.iter().any(|name| {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .is_some_and(|g| g.gid.as_raw() == cred.gid() || groups.contains(&g.gid.as_raw()))
    })
}
