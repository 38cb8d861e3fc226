//! Deciding the deletes that seccomp supervision hands the daemon (kernels
//! without BPF LSM): the same policy matcher the kernel maps are checked
//! against, the same event shape as the LSM backend.
use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use parking_lot::Mutex;

use tokio::sync::oneshot;

use guard_common::{Mode, Outcome, Verdict};

use super::attribute;
use super::{
    Shared,
    holds::{self, Release},
};
use crate::{
    events::{
        self,
        model::{Call, CallOutcome, GrantRef, HoldId, HoldRef},
    },
    supervise::{Decide, Decision, DeleteOp, DeleteRequest},
};

pub struct SessionDecider {
    shared: Arc<Shared>,
    agent_id: u32,
    /// The run this supervisor serves (its session cgroup's id).
    session_cgroup: u64,
    session: String,
    /// Held calls by notification id, for the event of the call itself
    /// once it is decided.
    held: Arc<Mutex<HashMap<u64, HeldCall>>>,
}

/// A held call's hold id and the call.
type HeldCall = (u64, Call);

impl SessionDecider {
    pub fn new(shared: Arc<Shared>, agent_id: u32, session_cgroup: u64, session: String) -> Self {
        Self {
            shared,
            agent_id,
            session_cgroup,
            session,
            held: Arc::default(),
        }
    }

    /// Judges `req` now, or registers a hold and returns the channel the
    /// decision will come on.
    fn judge(&self, req: &DeleteRequest) -> Judged {
        if let Some((hold, rx)) = self.shared.holds.unpark(&self.session, req.notif_id) {
            return self.rejoin(req, hold, rx);
        }
        let registry = match self.shared.registry.read() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        // The run's agent as the policy now has it (a reload gives it a new id).
        let agent_id = registry
            .sessions
            .get(&self.session_cgroup)
            .map_or(self.agent_id, |s| s.agent_id);
        let Some(agent) = registry.agents.get(&agent_id) else {
            // The agent left the policy while its run goes on: nothing to
            // judge against, so fail closed.
            tracing::error!(agent_id = self.agent_id, path = %req.path, "delete by a run of an unknown agent; denied");
            return Judged::Now(Decision::Deny);
        };
        // The guard's own files: refused whatever the policy says (this
        // daemon performs supervised deletes itself, outside the run's
        // Landlock confinement).
        if let Some(protected) = self.shared.guard.covering(&req.path) {
            if !self
                .shared
                .guard
                .allowance
                .allows(agent.cgroup_id, guard_common::TAMPER_FILE)
            {
                return Judged::Now(Decision::Deny);
            }
            let call = attribute::supervised_delete(
                &registry,
                agent,
                self.session_cgroup,
                req,
                (Outcome::Denied, Verdict::Deny, None),
                &mut super::lock_enricher(&self.shared),
            );
            drop(registry);
            let call = attribute::supervised_tamper(call, protected);
            events::emit_now(&self.shared.emitter, call);
            return Judged::Now(Decision::Deny);
        }
        let (verdict, rule) = agent.def.delete.evaluate(&req.path);
        let mode = agent.mode();
        // The kernel's own rule for freeze, so both backends agree.
        let rule_id = rule.map_or(guard_common::RULE_DEFAULT, |r| r.id.max(1));
        let verdict = Verdict::from_raw(guard_common::applied_verdict(
            mode.raw(),
            verdict.raw(),
            rule_id,
        ))
        .unwrap_or(Verdict::Deny);
        let timeout = registry.policy.approval_timeout(Some(&agent.def.name));
        let enforce = mode != Mode::Audit;
        let (decision, outcome) = if !enforce {
            (Decision::Allow, Outcome::Audited)
        } else if verdict == Verdict::Allow {
            (Decision::Allow, Outcome::Allowed)
        } else if let Some(grant) = (verdict == Verdict::Ask)
            .then(|| self.shared.grants.covers_path(agent_id, &req.path))
            .flatten()
        {
            // An approval's scope covers this call: no hold.
            let mut call = attribute::supervised_delete(
                &registry,
                agent,
                self.session_cgroup,
                req,
                (Outcome::Allowed, verdict, rule),
                &mut super::lock_enricher(&self.shared),
            );
            call.grant = Some(GrantRef { id: grant });
            drop(registry);
            events::emit_now(&self.shared.emitter, call);
            return Judged::Now(Decision::Allow);
        } else if verdict == Verdict::Ask {
            let call = attribute::supervised_delete(
                &registry,
                agent,
                self.session_cgroup,
                req,
                (Outcome::Held, verdict, rule),
                &mut super::lock_enricher(&self.shared),
            );
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
            return Judged::Held(rx);
        } else {
            (Decision::Deny, Outcome::Denied)
        };
        let call = attribute::supervised_delete(
            &registry,
            agent,
            self.session_cgroup,
            req,
            (outcome, verdict, rule),
            &mut super::lock_enricher(&self.shared),
        );
        drop(registry);
        events::emit_now(&self.shared.emitter, call);
        Judged::Now(decision)
    }
}

impl SessionDecider {
    /// A call held before a daemon restart, handled again now that its
    /// run's supervision resumed: it waits for the same hold, provided it
    /// is still the call that was held (the path is read anew from the
    /// caller, whose other threads could have rewritten it meanwhile).
    fn rejoin(&self, req: &DeleteRequest, hold: u64, rx: oneshot::Receiver<bool>) -> Judged {
        let Some(call) = self.shared.holds.call_of(hold) else {
            // Decided while supervision was down: the verdict is in `rx`.
            return Judged::Held(rx);
        };
        if call.op.path() == Some(req.path.as_str()) {
            tracing::info!(hold, path = %req.path, "a call held before the restart waits again");
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
                req.path
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

enum Judged {
    Now(Decision),
    Held(oneshot::Receiver<bool>),
}

/// A hold id for a supervised call: random, never 0. Kernel holds use the
/// boot-time nanosecond of the hold; these do not collide in practice
/// (64 random bits).
fn hold_id() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    u64::from_ne_bytes(bytes) | 1
}

impl Decide for SessionDecider {
    fn decide(
        &self,
        req: DeleteRequest,
    ) -> Pin<Box<dyn Future<Output = (DeleteRequest, Decision)> + Send>> {
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

    fn performed(&self, req: &DeleteRequest, result: Result<(), i32>) {
        // A held call, approved and now performed: its own event, with the
        // hold's id, says what actually ran.
        if let Some((id, body)) = self.held.lock().remove(&req.notif_id) {
            emit_held_call(&self.shared.emitter, id, body, CallOutcome::Allowed);
        }
        if let Err(errno) = result {
            let op = match req.op {
                DeleteOp::Unlink => "unlink",
                DeleteOp::Rmdir => "rmdir",
            };
            tracing::debug!(path = %req.path, errno, "allowed {op} failed on its own");
        }
    }
}
