//! Attribution: which agent, which run, which rule. Turns what the kernel
//! recorded (or the seccomp supervisor saw) into a typed [`Call`], using
//! the registry and the process-details cache. The one place calls are
//! built.
use guard_common::{Outcome, Verdict};

use super::registry::{AgentState, Registry};
use crate::{
    events::{
        decode::{self, Header, Record, RecordCall},
        enrich::Enricher,
        model::{
            Agent, Backend, Call, CallOutcome, CallVia, FileTarget, GrantRef, GuardAction, HoldId,
            HoldRef, IO_URING_REASON, IoUringOperation, IoUringTarget, MountTarget, Op, PathPair,
            Process, RenameTarget, Rule, Side, TamperTarget, Verdict as RuleVerdict,
        },
    },
    policy::PathRule,
    supervise::{self, Object, Request},
};

/// Why an observed delete was not enforced.
const NOT_ENFORCED: &str =
    "none: this kernel has no BPF LSM and the process was not started by `agent-guard run`";

/// The call a kernel record reports, or None when another path reports it
/// (a run under seccomp supervision reports its own deletes).
pub fn kernel_call(rec: Record, registry: &Registry, enricher: &mut Enricher) -> Option<Call> {
    let Record {
        header: h,
        call,
        io_uring,
        budget,
    } = rec;
    let (op, rule) = match call {
        // Only a refusal that reached for the guard is an event; found out
        // before anything else is looked up.
        RecordCall::Refused(rec) => (
            super::refused::classify(&rec, registry)?,
            self_defense_rule(),
        ),
        RecordCall::Connect(target) => (Op::Connect(target), kernel_rule(&h, registry)),
        RecordCall::Send(target) => (Op::Send(target), kernel_rule(&h, registry)),
        RecordCall::Unix { send, target } => (
            if send {
                Op::UnixSend(target)
            } else {
                Op::UnixConnect(target)
            },
            kernel_rule(&h, registry),
        ),
        RecordCall::Delete { rmdir, target } => (delete(rmdir, target), kernel_rule(&h, registry)),
        RecordCall::Truncate(target) => (Op::Truncate(target), kernel_rule(&h, registry)),
        RecordCall::Rename(target) => (Op::Rename(Box::new(target)), kernel_rule(&h, registry)),
        RecordCall::Link(target) => (Op::Link(Box::new(target)), kernel_rule(&h, registry)),
        RecordCall::Mount(target) => {
            // The agent's switch decided, not a rule.
            let mut rule = kernel_rule(&h, registry);
            rule.matched = Some(switch_rule(false, h.verdict == Some(Verdict::Allow)).into());
            (Op::Mount(target), rule)
        }
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
    // An `ask` through io_uring is refused: a hold cannot rewind it.
    let ask_refused = h.outcome == CallOutcome::Denied && h.verdict == Some(Verdict::Ask);
    let mut call = Call {
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
            Some((h.comm, h.ktime_ns, h.exec_id)),
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
        via: io_uring.then_some(CallVia::IoUring),
        reason: (io_uring && ask_refused).then(|| IO_URING_REASON.to_owned()),
        budget: None,
    };
    let def = registry.agent(h.agent_id).map(|a| &a.def);
    crate::events::budget::mark(budget, &mut call, def);
    Some(call)
}

fn delete(rmdir: bool, target: FileTarget) -> Op {
    if rmdir {
        Op::Rmdir(target)
    } else {
        Op::Unlink(target)
    }
}

/// The `rule.match` of a call the agent's switch decides (the mount
/// family, io_uring): the switch as the policy writes it.
fn switch_rule(io_uring: bool, allowed: bool) -> &'static str {
    match (io_uring, allowed) {
        (true, true) => "allow_io_uring = true",
        (true, false) => "allow_io_uring = false",
        (false, true) => "allow_mounts = true",
        (false, false) => "allow_mounts = false",
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

/// The calling process; `record` (the calling thread's comm, the record's
/// kernel time and the task's exec count) lets a kernel record's lookup
/// skip /proc.
fn process(enricher: &mut Enricher, ids: Ids, record: Option<(String, u64, u64)>) -> Process {
    let details = match &record {
        Some((comm, ktime_ns, exec_id)) => enricher.details_at(ids.pid, comm, *exec_id, *ktime_ns),
        None => enricher.details(ids.pid),
    };
    let comm = record.map(|(comm, _, _)| comm);
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
        // No policy rule: the guard's own listeners (net.rs).
        Some(id) if id >= guard_common::RULE_GUARD => Rule {
            verdict,
            matched: Some(super::selfdefense::surface_rule(
                id - guard_common::RULE_GUARD,
            )),
            source: None,
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

/// What a supervised call's event says about the rule that decided it.
pub enum RuleOf<'a> {
    /// A delete rule of the policy (None: the agent's default).
    Path(Option<&'a PathRule>),
    /// The agent's `allow_mounts` / `allow_io_uring` switch.
    Switch,
}

/// An object a supervised call acts on: its resolved path (absent when
/// not resolved) and the argument as passed.
fn object(o: &Object) -> (Option<String>, Option<String>) {
    (
        (!o.path.is_empty()).then(|| o.path.clone()),
        Some(o.raw_path.clone()),
    )
}

/// What a supervised call does, and to what: the same targets as the
/// kernel's records give.
fn supervised_op(req: &Request, dest_decided: bool) -> Op {
    let (path, raw_path) = object(&req.object);
    let file = || FileTarget {
        path: path.clone(),
        raw_path: raw_path.clone(),
        ..FileTarget::default()
    };
    let pair = || {
        let (new_path, raw_new_path) = req.second.as_ref().map(object).unwrap_or_default();
        PathPair {
            path: path.clone(),
            raw_path: raw_path.clone(),
            new_path,
            raw_new_path,
            ..PathPair::default()
        }
    };
    match req.op {
        supervise::Op::Unlink => Op::Unlink(file()),
        supervise::Op::Rmdir => Op::Rmdir(file()),
        // An open is only ever reported refused, as guard.tamper (which
        // replaces the op).
        supervise::Op::Truncate | supervise::Op::Open => Op::Truncate(file()),
        supervise::Op::Rename { exchange } => Op::Rename(Box::new(RenameTarget {
            paths: pair(),
            exchange,
            replaces: req.second.as_ref().is_some_and(|s| s.exists),
            directory: req.object.dir,
            decided_by: if dest_decided {
                Side::Destination
            } else {
                Side::Source
            },
        })),
        supervise::Op::Link => Op::Link(Box::new(pair())),
        supervise::Op::Mount(op) => Op::Mount(MountTarget {
            operation: decode::mount_operation(op),
            path,
            raw_path,
            path_error: None,
            path_truncated: false,
        }),
        supervise::Op::IoUringSetup => Op::IoUring(IoUringTarget {
            operation: IoUringOperation::IoUringSetup,
        }),
    }
}

/// A call judged in userspace under seccomp supervision: the same call
/// as the LSM backend's, with `backend: seccomp`. `session_cgroup` is the
/// run whose supervisor handled it: the filter belongs to that run, so
/// that is whose call it is. `dest_decided`: a rename the destination's
/// verdict decided; `reason`: why, where the rule alone does not say it.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per outcome; a struct would only rename them"
)]
pub fn supervised_call(
    registry: &Registry,
    agent: &AgentState,
    session_cgroup: u64,
    req: &Request,
    (outcome, verdict, rule): (Outcome, Verdict, RuleOf<'_>),
    dest_decided: bool,
    reason: Option<&str>,
    enricher: &mut Enricher,
) -> Call {
    let op = supervised_op(req, dest_decided);
    let rule = match rule {
        RuleOf::Path(rule) => rule_of(registry, agent, verdict, rule),
        RuleOf::Switch => Rule {
            verdict: Some(verdict.into()),
            matched: Some(
                switch_rule(matches!(op, Op::IoUring(_)), verdict == Verdict::Allow).to_owned(),
            ),
            source: Some(format!("{}:{}", registry.policy.file, agent.def.line)),
        },
    };
    let agent_ref = registry.agent_ref(agent.agent_id, session_cgroup);
    Call {
        op,
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
        rule,
        hold: None,
        grant: None,
        backend: Some(Backend::Seccomp),
        via: None,
        reason: reason.map(str::to_owned),
        budget: None,
    }
}
