//! Deciding the calls that seccomp supervision hands the daemon (kernels
//! without BPF LSM): deletes, renames, links, truncations, and the refused
//! mount family and io_uring. The same policy matchers the kernel maps are
//! checked against, the same decision ladder (guard_common::ladder), the
//! same event shapes as the LSM backend (daemon/attribute.rs).
use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use guard_common::{Charge, Outcome, Rung, Verdict};

use super::{
    Shared,
    attribute::{self, RuleOf},
    holds::{self, Release},
};
use crate::{
    events::{
        self,
        model::{Call, CallOutcome, GrantRef, HoldId, HoldRef},
    },
    policy::PathRule,
    supervise::{Decide, Decision, Op, Request},
};

pub struct SessionDecider {
    shared: Arc<Shared>,
    agent_id: u32,
    /// The run this supervisor serves (its session cgroup's id).
    session_cgroup: u64,
    session: String,
    /// The filter of this run left the mount family (io_uring_setup) out:
    /// its policy allowed them when it started.
    started_with: crate::supervise::FilterOptions,
    /// Held calls by notification id, for the event of the call itself
    /// once it is decided.
    held: Arc<Mutex<HashMap<u64, HeldCall>>>,
}

/// A held call's hold id and the call.
type HeldCall = (u64, Call);

/// What the policy says about a call, before the mode and the ladder.
struct Policy<'a> {
    verdict: Verdict,
    rule: RuleOf<'a>,
    rule_id: u32,
    /// A rename the destination's verdict decided.
    dest_decided: bool,
    /// The path a grant would have to cover.
    grant_path: Option<&'a str>,
    /// Why, when the policy alone does not say it.
    reason: Option<&'static str>,
}

fn path_rule(rule: Option<&PathRule>) -> u32 {
    // The kernel's rule numbering for freeze, so both backends agree.
    rule.map_or(guard_common::RULE_DEFAULT, |r| r.id.max(1))
}

impl SessionDecider {
    pub fn new(
        shared: Arc<Shared>,
        agent_id: u32,
        session_cgroup: u64,
        session: String,
        started_with: crate::supervise::FilterOptions,
    ) -> Self {
        Self {
            shared,
            agent_id,
            session_cgroup,
            session,
            started_with,
            held: Arc::default(),
        }
    }

    /// The policy's verdict for `req` from agent `def`.
    fn policy<'a>(&self, def: &'a crate::policy::Agent, req: &'a Request) -> Policy<'a> {
        let one = |(verdict, rule): (Verdict, Option<&'a PathRule>)| Policy {
            verdict,
            rule: RuleOf::Path(rule),
            rule_id: path_rule(rule),
            dest_decided: false,
            grant_path: Some(req.object.path.as_str()),
            reason: None,
        };
        let switch = |allowed: bool, lifted: bool, what: &'static str| {
            if allowed && !lifted {
                // Allowed now, but this run's filter was made when it was not:
                // it cannot be let through without "continue".
                return Policy {
                    verdict: Verdict::Allow,
                    rule: RuleOf::Switch,
                    rule_id: guard_common::RULE_DEFAULT,
                    dest_decided: false,
                    grant_path: None,
                    reason: Some(what),
                };
            }
            Policy {
                verdict: if allowed {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                },
                rule: RuleOf::Switch,
                rule_id: guard_common::RULE_DEFAULT,
                dest_decided: false,
                grant_path: None,
                reason: None,
            }
        };
        let delete = &def.delete;
        match req.op {
            Op::Truncate if req.object.path.is_empty() => Policy {
                reason: Some("open_by_handle_at with O_TRUNC names no path the policy could judge"),
                ..one((Verdict::Deny, None))
            },
            Op::Unlink | Op::Rmdir | Op::Truncate | Op::Link | Op::Open => {
                one(delete.evaluate(&req.object.path))
            }
            Op::Rename { exchange } => {
                // Whatever is below a moved directory moves too. The
                // supervisor judges the source's subtree even for a file:
                // it may have become a directory since it was looked at.
                let (sv, sr) = delete.evaluate_subtree(&req.object.path);
                let dst = req.second.as_ref().filter(|d| d.exists).map(|d| {
                    if exchange {
                        delete.evaluate_subtree(&d.path)
                    } else {
                        delete.evaluate(&d.path)
                    }
                });
                let mode = guard_common::Mode::Enforce.raw();
                let (_, second) = guard_common::stricter(
                    mode,
                    (sv.raw(), path_rule(sr)),
                    dst.map(|(v, r)| (v.raw(), path_rule(r))),
                );
                match (second, dst) {
                    (true, Some((dv, dr))) => Policy {
                        dest_decided: true,
                        grant_path: req.second.as_ref().map(|d| d.path.as_str()),
                        ..one((dv, dr))
                    },
                    _ => one((sv, sr)),
                }
            }
            Op::Mount(_) => switch(
                def.allow_mounts,
                self.started_with.allow_mounts,
                "allow_mounts took effect after this run started; start the run again",
            ),
            Op::IoUringSetup => switch(
                def.allow_io_uring,
                self.started_with.allow_io_uring,
                "allow_io_uring took effect after this run started; start the run again",
            ),
        }
    }

    /// The run's agent as the policy now has it (a reload gives it a new id).
    fn agent_now(&self, registry: &super::registry::Registry) -> u32 {
        registry
            .sessions
            .get(&self.session_cgroup)
            .map_or(self.agent_id, |s| s.agent_id)
    }

    /// Judges `req` now, or registers a hold and returns the channel the
    /// decision will come on.
    fn judge(&self, req: &Request) -> Judged {
        if let Some((hold, rx)) = self.shared.holds.unpark(&self.session, req.notif_id) {
            return self.rejoin(req, hold, rx);
        }
        let registry = self.shared.registry.read();
        let agent_id = self.agent_now(&registry);
        let Some(agent) = registry.agents.get(&agent_id) else {
            // The agent left the policy while its run goes on: nothing to
            // judge against, so fail closed.
            tracing::error!(agent_id = self.agent_id, path = %req.object.path, "call by a run of an unknown agent; denied");
            return Judged::Now(Decision::Deny);
        };
        // The guard's own files: refused whatever the policy says (this
        // daemon performs supervised calls itself, outside the run's
        // Landlock confinement), on either side of a rename or link.
        let protected = std::iter::once(&req.object)
            .chain(req.second.as_ref())
            .find_map(|o| self.shared.guard.covering(&o.path));
        if let Some(protected) = protected {
            if !self
                .shared
                .guard
                .allowance
                .allows(agent.cgroup_id, guard_common::TAMPER_FILE)
            {
                return Judged::Now(Decision::Deny);
            }
            let call = attribute::supervised_call(
                &registry,
                agent,
                self.session_cgroup,
                req,
                (Outcome::Denied, Verdict::Deny, RuleOf::Path(None)),
                false,
                None,
                &mut super::lock_enricher(&self.shared),
            );
            drop(registry);
            let call = attribute::supervised_tamper(call, protected);
            events::emit_now(&self.shared.emitter, call);
            return Judged::Now(Decision::Deny);
        }
        if req.op == Op::Open {
            // Not the guard's: an open the policy has nothing to say about.
            return Judged::Now(Decision::Allow);
        }
        let p = self.policy(&agent.def, req);
        let refused_anyway = p.reason.is_some() && p.verdict == Verdict::Allow;
        let grant = || {
            p.grant_path
                .and_then(|path| self.shared.grants.covers_path(agent_id, path))
                .unwrap_or(0)
        };
        // The same budget cell and rule as the kernel's (guard-ebpf
        // budget.rs): a grant covering the call lifts its budget.
        let budget = || match budget_class(req.op) {
            Some(class) if grant() == 0 => self.shared.budgets.charge(agent_id, class),
            _ => Charge::Free,
        };
        let judged = guard_common::ladder(
            agent.mode().raw(),
            p.verdict.raw(),
            p.rule_id,
            grant,
            budget,
        );
        let budget_flags = guard_common::budget::record_flags(judged.budget);
        let verdict = Verdict::from_raw(judged.verdict).unwrap_or(Verdict::Deny);
        let switch = matches!(req.op, Op::Mount(_) | Op::IoUringSetup);
        let (decision, outcome, grant) = match judged.rung {
            _ if refused_anyway => (Decision::Deny, Outcome::Denied, None),
            Rung::Audit => (Decision::Allow, Outcome::Audited, None),
            Rung::Allow => (Decision::Allow, Outcome::Allowed, None),
            Rung::Grant(id) => (Decision::Allow, Outcome::Allowed, Some(id)),
            // Never performed here: holding it would only delay the EPERM.
            Rung::Hold if switch => (Decision::Deny, Outcome::Denied, None),
            Rung::Hold => {
                let mut call = attribute::supervised_call(
                    &registry,
                    agent,
                    self.session_cgroup,
                    req,
                    (Outcome::Held, verdict, p.rule),
                    p.dest_decided,
                    p.reason,
                    &mut super::lock_enricher(&self.shared),
                );
                events::budget::mark(budget_flags, &mut call, Some(&agent.def));
                let spent = events::budget::exhausted_by(&call).then(|| call.clone());
                let timeout = registry.policy.approval_timeout(Some(&agent.def.name));
                drop(registry);
                let (tx, rx) = oneshot::channel();
                let id = hold_id();
                self.held.lock().insert(req.notif_id, (id, call.clone()));
                self.shared.holds.register(
                    &self.shared,
                    id,
                    call,
                    req.pid,
                    Release::Seccomp {
                        tx,
                        session: self.session.clone(),
                        notif: req.notif_id,
                    },
                    timeout,
                );
                if let Some(call) = spent {
                    super::budgets::exhausted(&self.shared, &call);
                }
                return Judged::Held(rx);
            }
            Rung::Deny => (Decision::Deny, Outcome::Denied, None),
        };
        let mut call = attribute::supervised_call(
            &registry,
            agent,
            self.session_cgroup,
            req,
            (outcome, verdict, p.rule),
            p.dest_decided,
            p.reason,
            &mut super::lock_enricher(&self.shared),
        );
        // An approval's scope covers this call: no hold.
        call.grant = grant.map(|id| GrantRef { id });
        events::budget::mark(budget_flags, &mut call, Some(&agent.def));
        drop(registry);
        let spent = events::budget::exhausted_by(&call).then(|| call.clone());
        events::emit_now(&self.shared.emitter, call);
        if let Some(call) = spent {
            super::budgets::exhausted(&self.shared, &call);
        }
        Judged::Now(decision)
    }
}

impl SessionDecider {
    /// A call held before a daemon restart, handled again now that its
    /// run's supervision resumed: it waits for the same hold, provided it
    /// is still the call that was held (the path is read anew from the
    /// caller, whose other threads could have rewritten it meanwhile).
    fn rejoin(&self, req: &Request, hold: u64, rx: oneshot::Receiver<bool>) -> Judged {
        let Some(call) = self.shared.holds.call_of(hold) else {
            // Decided while supervision was down: the verdict is in `rx`.
            return Judged::Held(rx);
        };
        let nonempty = |p: &str| (!p.is_empty()).then_some(p.to_owned());
        let same = call.op.path() == nonempty(&req.object.path).as_deref()
            && call.op.new_path()
                == req
                    .second
                    .as_ref()
                    .and_then(|s| nonempty(&s.path))
                    .as_deref();
        if same {
            tracing::info!(hold, path = %req.object.path, "a call held before the restart waits again");
            self.held.lock().insert(req.notif_id, (hold, call));
            return Judged::Held(rx);
        }
        self.shared.holds.decide(
            &self.shared,
            hold,
            holds::Verdict::Denied,
            holds::By {
                uid: None,
                user: "agent-guard".into(),
            },
            Some(format!(
                "the held call changed while the daemon was down (now {:?})",
                req.object.path
            )),
        );
        Judged::Now(Decision::Deny)
    }
}

/// The event of a held call itself, run (`allowed`) or failed (`denied`)
/// on its decision, with its hold's id.
fn emit_held_call(
    emitter: &events::SharedEmitter,
    hold: u64,
    mut call: Call,
    outcome: CallOutcome,
) {
    call.outcome = outcome;
    call.hold = Some(HoldRef {
        id: HoldId(hold),
        timeout_secs: None,
        context: None,
    });
    events::emit_now(emitter, call);
}

/// The budget a supervised call draws on if it is allowed: every call
/// that destroys data (renames and truncations too).
fn budget_class(op: Op) -> Option<guard_common::BudgetClass> {
    match op {
        Op::Unlink | Op::Rmdir | Op::Truncate | Op::Rename { .. } => {
            Some(guard_common::BudgetClass::Deletes)
        }
        Op::Link | Op::Open | Op::Mount(_) | Op::IoUringSetup => None,
    }
}

enum Judged {
    Now(Decision),
    Held(oneshot::Receiver<bool>),
}

/// A hold id for a supervised call: random, never 0. Kernel holds use the
/// boot-time nanosecond of the hold; these do not collide in practice
/// (64 random bits). Without a random source (it does not fail on Linux
/// 3.17+ once seeded) the boot-time nanosecond serves, as for kernel holds.
fn hold_id() -> u64 {
    getrandom::u64().unwrap_or_else(|err| {
        tracing::warn!(%err, "the OS's random source; the hold id is the boot-time clock");
        crate::events::enrich::boot_ns()
    }) | 1
}

impl Decide for SessionDecider {
    fn decide(&self, req: Request) -> Pin<Box<dyn Future<Output = (Request, Decision)> + Send>> {
        match self.judge(&req) {
            Judged::Now(decision) => Box::pin(async move { (req, decision) }),
            // The agent's thread waits in the kernel meanwhile. A dropped
            // sender (daemon shutting down) denies: fail closed.
            Judged::Held(rx) => {
                let (held, emitter) = (self.held.clone(), self.shared.emitter.clone());
                Box::pin(async move {
                    let allow = rx.await.unwrap_or(false);
                    if !allow {
                        // The held call fails now (EPERM): its own event says so.
                        if let Some((id, body)) = held.lock().remove(&req.notif_id) {
                            emit_held_call(&emitter, id, body, CallOutcome::Denied);
                        }
                    }
                    (
                        req,
                        if allow {
                            Decision::Allow
                        } else {
                            Decision::Deny
                        },
                    )
                })
            }
        }
    }

    fn performed(&self, req: &Request, result: Result<(), i32>) {
        // A held call, approved and now performed: its own event, with the
        // hold's id, says what actually ran.
        if let Some((id, body)) = self.held.lock().remove(&req.notif_id) {
            emit_held_call(&self.shared.emitter, id, body, CallOutcome::Allowed);
        }
        if let Err(errno) = result {
            tracing::debug!(path = %req.object.path, errno, op = ?req.op, "an allowed call failed on its own");
        }
    }

    fn cgroup_refused(&self, req: &Request) {
        let registry = self.shared.registry.read();
        let agent_id = self.agent_now(&registry);
        let Some(agent) = registry.agents.get(&agent_id) else {
            return;
        };
        let Some(target) =
            super::refused::supervised_escape(&req.object.path, req.pid, agent_id, &registry)
        else {
            return; // its own tree: refused, but no way out
        };
        if !self
            .shared
            .guard
            .allowance
            .allows(agent.cgroup_id, guard_common::REFUSAL_ESCAPE)
        {
            return;
        }
        let mut call = attribute::supervised_call(
            &registry,
            agent,
            self.session_cgroup,
            req,
            (Outcome::Denied, Verdict::Deny, RuleOf::Path(None)),
            false,
            None,
            &mut super::lock_enricher(&self.shared),
        );
        drop(registry);
        // Refused by the supervisor for the run, but it is a reach for the
        // way out, reported as the kernel's refusals are.
        call.op = events::model::Op::Escape(target);
        call.backend = None;
        call.rule = attribute::self_defense_rule();
        events::emit_now(&self.shared.emitter, call);
    }
}
