//! Attribution: which agent, which run, which rule. Turns what the kernel
//! recorded (or the seccomp supervisor saw) into a typed [`Call`], using
//! the registry and the process-details cache. The one place calls are
//! built.
use guard_common::{Outcome, Verdict};

use super::registry::{AgentState, Registry};
use crate::{
    events::{
        decode::{Header, Record, RecordCall},
        enrich::Enricher,
        model::{
            Agent, Backend, Call, FileTarget, GrantRef, GuardAction, HoldId, HoldRef, Op, Process,
            Rule, TamperTarget, Verdict as RuleVerdict,
        },
    },
    policy::PathRule,
    supervise::{DeleteOp, DeleteRequest},
};

/// Why an observed delete was not enforced.
const NOT_ENFORCED: &str =
    "none: this kernel has no BPF LSM and the process was not started by `agent-guard run`";

/// The call a kernel record reports, or None when another path reports it
/// (a run under seccomp supervision reports its own deletes).
pub fn kernel_call(rec: Record, registry: &Registry, enricher: &mut Enricher) -> Option<Call> {
    let Record { header: h, call } = rec;
    let (op, rule) = match call {
        // Only a refusal that reached for the guard is an event; found out
        // before anything else is looked up.
        RecordCall::Refused(rec) => (
            super::refused::classify(&rec, registry)?,
            self_defense_rule(),
        ),
        RecordCall::Connect(target) => (Op::Connect(target), kernel_rule(&h, registry)),
        RecordCall::Delete { rmdir, target } => (delete(rmdir, target), kernel_rule(&h, registry)),
        RecordCall::Escape(target) => (Op::Escape(target), self_defense_rule()),
        RecordCall::Tamper {
            mut target,
            protected,
        } => {
            if let (
                TamperTarget::File {
                    protected: path, ..
                },
                Some(key),
            ) = (&mut target, protected)
            {
                *path = registry
                    .protected
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, p)| p.display().to_string());
            }
            (Op::Tamper(target), self_defense_rule())
        }
        RecordCall::Observed {
            rmdir,
            raw_path,
            dirfd,
        } => {
            if registry
                .sessions
                .get(&h.cgroup_id)
                .is_some_and(|s| s.supervised)
            {
                return None;
            }
            let path = resolve(h.pid, dirfd, &raw_path);
            let rule = observed_rule(registry, h.agent_id, path.as_deref());
            let target = FileTarget {
                path,
                raw_path: Some(raw_path),
                enforcement: Some(NOT_ENFORCED.into()),
                ..FileTarget::default()
            };
            (delete(rmdir, target), rule)
        }
    };
    let agent = match registry.agent_ref(h.agent_id, h.cgroup_id) {
        Some(a) => Agent::Known(a),
        None => Agent::Unattributed {
            cgroup_id: h.agent_cgroup_id,
        },
    };
    Some(Call {
        op,
        outcome: h.outcome,
        agent,
        process: process(
            enricher,
            Ids {
                pid: h.pid,
                tid: h.tid,
                uid: h.uid,
                gid: h.gid,
            },
            Some(h.comm),
        ),
        rule,
        // A hold starting (the registry adds its timeout), or a held call
        // running on its decision: the same id either way.
        hold: h.hold_id.map(|id| HoldRef {
            id: HoldId(id),
            timeout_secs: None,
            context: None,
        }),
        grant: h.grant_id.map(|id| GrantRef { id }),
        backend: None,
        via: None,
        reason: None,
    })
}

fn delete(rmdir: bool, target: FileTarget) -> Op {
    if rmdir {
        Op::Rmdir(target)
    } else {
        Op::Unlink(target)
    }
}

/// No policy rule decides self-defense: the guard always refuses.
pub fn self_defense_rule() -> Rule {
    Rule {
        verdict: Some(RuleVerdict::Deny),
        matched: Some("self-defense".into()),
        source: None,
    }
}

/// A supervised delete of a file under `protected`, which the daemon
/// refuses whatever the policy says: the `guard.tamper` it reports.
pub fn supervised_tamper(mut call: Call, protected: &std::path::Path) -> Call {
    call.op = Op::Tamper(TamperTarget::File {
        action: GuardAction::Refused,
        protected: Some(protected.display().to_string()),
        write: true,
        call: None,
        path: None,
    });
    call.backend = None;
    call.rule = self_defense_rule();
    call
}

/// The ids of a calling thread.
struct Ids {
    pid: u32,
    tid: u32,
    uid: u32,
    gid: u32,
}

fn process(enricher: &mut Enricher, ids: Ids, comm: Option<String>) -> Process {
    let details = enricher.details(ids.pid);
    Process {
        pid: ids.pid,
        tid: Some(ids.tid),
        ppid: details.ppid,
        uid: ids.uid,
        gid: ids.gid,
        user: enricher.user(ids.uid),
        group: enricher.group(ids.gid),
        comm,
        exe: details.exe,
        cmdline: details.cmdline,
    }
}

/// The rule the kernel matched, by id, as the policy in force wrote it.
fn kernel_rule(h: &Header, registry: &Registry) -> Rule {
    let verdict = h.verdict.map(Into::into);
    match h.rule_id {
        None => Rule {
            verdict,
            matched: Some("default".into()),
            source: registry
                .agent(h.agent_id)
                .map(|a| format!("{}:{}", registry.policy.file, a.def.line)),
        },
        Some(id) => {
            let info = registry.policy.rule_source(id);
            Rule {
                verdict,
                matched: info.as_ref().map(|r| r.text.clone()),
                source: info.map(|r| r.source),
            }
        }
    }
}

/// What the policy would have done with an observed delete of `path`.
fn observed_rule(registry: &Registry, agent_id: u32, path: Option<&str>) -> Rule {
    let (Some(agent), Some(path)) = (registry.agent(agent_id), path) else {
        return Rule {
            verdict: None,
            matched: None,
            source: None,
        };
    };
    let (verdict, rule) = agent.def.delete.evaluate(path);
    rule_of(registry, agent, verdict, rule)
}

fn rule_of(
    registry: &Registry,
    agent: &AgentState,
    verdict: Verdict,
    rule: Option<&PathRule>,
) -> Rule {
    Rule {
        verdict: Some(verdict.into()),
        matched: Some(rule.map_or_else(|| "default".to_owned(), |r| r.text.clone())),
        source: Some(format!(
            "{}:{}",
            registry.policy.file,
            rule.map_or(agent.def.line, |r| r.line)
        )),
    }
}

/// The absolute path `raw` names for `pid`, resolved against its cwd or the
/// directory fd, lexically normalized; None when /proc no longer has them.
fn resolve(pid: u32, dirfd: i32, raw: &str) -> Option<String> {
    let joined = if raw.starts_with('/') {
        raw.to_owned()
    } else {
        format!("{}/{raw}", proc_base(pid, dirfd)?)
    };
    Some(normalize(&joined))
}

/// The directory a relative path of `pid` starts from, read from /proc
/// while the process is alive: its cwd, or directory descriptor `dirfd`.
pub(super) fn proc_base(pid: u32, dirfd: i32) -> Option<String> {
    let link = if dirfd == libc::AT_FDCWD {
        format!("/proc/{pid}/cwd")
    } else {
        format!("/proc/{pid}/fd/{dirfd}")
    };
    let base = std::fs::read_link(link).ok()?;
    Some(base.display().to_string())
}

/// `path` made absolute and lexically normalized ("." and ".." folded,
/// repeated slashes collapsed).
pub(super) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A delete judged in userspace under seccomp supervision: the same call
/// as the LSM backend's, with `backend: seccomp`. `session_cgroup` is the
/// run whose supervisor handled it: the filter belongs to that run, so
/// that is whose call it is.
pub fn supervised_delete(
    registry: &Registry,
    agent: &AgentState,
    session_cgroup: u64,
    req: &DeleteRequest,
    (outcome, verdict, rule): (Outcome, Verdict, Option<&PathRule>),
    enricher: &mut Enricher,
) -> Call {
    let target = FileTarget {
        path: Some(req.path.clone()),
        raw_path: Some(req.raw_path.clone()),
        ..FileTarget::default()
    };
    let agent_ref = registry.agent_ref(agent.agent_id, session_cgroup);
    Call {
        op: delete(req.op == DeleteOp::Rmdir, target),
        outcome: outcome.into(),
        agent: match agent_ref {
            Some(a) => Agent::Known(a),
            None => Agent::Unattributed {
                cgroup_id: agent.cgroup_id,
            },
        },
        process: process(
            enricher,
            Ids {
                pid: req.pid,
                tid: req.tid,
                uid: req.uid,
                gid: req.gid,
            },
            None,
        ),
        rule: rule_of(registry, agent, verdict, rule),
        hold: None,
        grant: None,
        backend: Some(Backend::Seccomp),
        via: None,
        reason: None,
    }
}
