//! Deciding the deletes that seccomp supervision hands the daemon (kernels
//! without BPF LSM): the same policy matcher the kernel maps are checked
//! against, the same event shape as the LSM backend.
use std::{future::Future, pin::Pin, sync::Arc};

use guard_common::{Mode, Outcome, Verdict};

use super::Shared;
use crate::{
    events::{self, decode},
    supervise::{Decide, Decision, DeleteOp, DeleteRequest},
};

pub struct SessionDecider {
    shared: Arc<Shared>,
    agent_id: u32,
}

impl SessionDecider {
    pub fn new(shared: Arc<Shared>, agent_id: u32) -> Self {
        Self { shared, agent_id }
    }

    fn judge(&self, req: &DeleteRequest) -> Decision {
        let registry = match self.shared.registry.read() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(agent) = registry.agents.get(&self.agent_id) else {
            // The agent left the policy while its run goes on: nothing to
            // judge against, so fail closed.
            tracing::error!(agent_id = self.agent_id, path = %req.path, "delete by a run of an unknown agent; denied");
            return Decision::Deny;
        };
        let (verdict, rule) = agent.def.delete.evaluate(&req.path);
        let (decision, outcome) = if agent.def.mode == Mode::Audit {
            (Decision::Allow, Outcome::Audited)
        } else if verdict == Verdict::Allow {
            (Decision::Allow, Outcome::Allowed)
        } else {
            // Deny, and Ask until holds exist: fail closed.
            (Decision::Deny, Outcome::Denied)
        };
        let body = decode::supervised_delete(&registry, agent, req, outcome, verdict, rule);
        drop(registry);
        events::emit_now(&self.shared.emitter, serde_json::Value::Object(body));
        decision
    }
}

impl Decide for SessionDecider {
    fn decide(
        &self,
        req: DeleteRequest,
    ) -> Pin<Box<dyn Future<Output = (DeleteRequest, Decision)> + Send>> {
        let decision = self.judge(&req);
        Box::pin(async move { (req, decision) })
    }

    fn performed(&self, req: &DeleteRequest, result: Result<(), i32>) {
        if let Err(errno) = result {
            let op = match req.op {
                DeleteOp::Unlink => "unlink",
                DeleteOp::Rmdir => "rmdir",
            };
            tracing::debug!(path = %req.path, errno, "allowed {op} failed on its own");
        }
    }
}
