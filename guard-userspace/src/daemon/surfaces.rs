//! The daemon's on-call and operator surfaces (`[web]`, `[metrics]`,
//! `[[notify]]`): prepared before enforcement starts, so a missing secret
//! or a taken port stops the daemon with a clear error, then run as tasks.
use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;

use super::{
    Shared,
    access::Caller,
    approvals::{self, ScopeRequest},
    tasks::Tasks,
};
use crate::{metrics, notify, policy::Policy, web};

pub struct Surfaces {
    web: Option<(TcpListener, web::Tokens)>,
    metrics: Option<TcpListener>,
    hooks: Vec<Arc<notify::Webhook>>,
    /// The page's public address, for the log and links in webhooks.
    page: Option<String>,
    web_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

impl Surfaces {
    pub async fn prepare(policy: &Policy) -> Result<Self> {
        let web = match &policy.web {
            None => None,
            Some(w) => {
                let tokens = web::Tokens::load(&w.tokens_file).context("[web] tokens_file")?;
                let listener = TcpListener::bind(w.listen)
                    .await
                    .with_context(|| format!("[web] cannot listen on {}", w.listen))?;
                Some((listener, tokens))
            }
        };
        let metrics = match &policy.metrics {
            None => None,
            Some(m) => Some(
                TcpListener::bind(m.listen)
                    .await
                    .with_context(|| format!("[metrics] cannot listen on {}", m.listen))?,
            ),
        };
        let hooks = policy
            .notify
            .iter()
            .map(|n| notify::Webhook::new(n).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            web_addr: web.as_ref().and_then(|(l, _)| l.local_addr().ok()),
            metrics_addr: metrics.as_ref().and_then(|l| l.local_addr().ok()),
            web,
            metrics,
            hooks,
            page: policy.web.as_ref().map(|w| w.public_url()),
        })
    }

    /// What is served on TCP, by surface (guard_common::SURFACE_*), at
    /// the addresses bound (a port 0 resolved).
    pub fn listening(&self) -> super::selfdefense::Listeners {
        let web = self.web_addr.map(|a| (guard_common::SURFACE_WEB, a));
        let metrics = self
            .metrics_addr
            .map(|a| (guard_common::SURFACE_METRICS, a));
        web.into_iter().chain(metrics).collect()
    }

    /// `programs`: the loaded programs' kernel ids, for their run times.
    /// Each surface is a kept task: a restart listens again on the same
    /// address.
    pub fn spawn(self, tasks: &mut Tasks, shared: &Arc<Shared>, programs: Vec<(String, u32)>) {
        // Webhook delivery counts are kept with or without an endpoint.
        let counters = Arc::new(metrics::Metrics::new());
        if let Some(listener) = self.metrics {
            counters.set_programs(programs);
            // Counting starts now, before `daemon.start` is emitted.
            crate::events::with(&shared.emitter, |e| e.observe(counters.observer()));
            tracing::info!(addr = ?listener.local_addr().ok(), "serving metrics on /metrics");
            let first = Arc::new(parking_lot::Mutex::new(Some(listener)));
            let addr = self.metrics_addr;
            let holds = shared.clone();
            let pending: metrics::HoldsPending = Arc::new(move || holds.holds.count());
            let counters = counters.clone();
            tasks.keep("metrics", move || {
                let (first, counters, pending) =
                    (first.lock().take(), counters.clone(), pending.clone());
                async move { metrics::serve(listen(first, addr).await?, counters, pending).await }
            });
        }
        if let Some((listener, tokens)) = self.web {
            tracing::info!(
                addr = ?listener.local_addr().ok(),
                page = self.page.as_deref().unwrap_or_default(),
                "serving the approval page"
            );
            let first = Arc::new(parking_lot::Mutex::new(Some(listener)));
            let (addr, tokens) = (self.web_addr, Arc::new(tokens));
            let shared = shared.clone();
            let backend: Arc<dyn web::Backend> = Arc::new(PageBackend(shared.clone()));
            tasks.keep("web page", move || {
                let (first, backend, tokens) =
                    (first.lock().take(), backend.clone(), tokens.clone());
                async move { web::serve(listen(first, addr).await?, backend, tokens).await }
            });
        }
        if !self.hooks.is_empty() {
            let (shared, hooks, page) = (shared.clone(), self.hooks, self.page);
            tasks.keep("webhooks", move || {
                notify::run(
                    shared.clone(),
                    hooks.clone(),
                    page.clone(),
                    counters.clone(),
                )
            });
        }
    }
}

/// The listener prepared at start, or, for a restarted surface, a new one
/// on the same address.
async fn listen(first: Option<TcpListener>, addr: Option<SocketAddr>) -> Result<TcpListener> {
    match (first, addr) {
        (Some(listener), _) => Ok(listener),
        (None, Some(addr)) => TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening again on {addr}")),
        (None, None) => anyhow::bail!("no address to listen on again"),
    }
}

/// The page's narrow handle on the daemon.
struct PageBackend(Arc<Shared>);

impl web::Backend for PageBackend {
    fn pending(&self) -> Vec<serde_json::Value> {
        self.0.holds.pending()
    }

    fn grants(&self) -> Vec<serde_json::Value> {
        self.0.grants.list()
    }

    fn budgets(&self) -> Vec<serde_json::Value> {
        let registry = self.0.registry();
        let mut list: Vec<_> = registry
            .agents
            .values()
            .filter(|a| a.def.budget.is_some())
            .collect();
        list.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        list.iter()
            .map(|a| {
                serde_json::json!({
                    "agent": a.def.name,
                    "frozen": a.frozen,
                    "budget": self.0.budgets.usage(a.agent_id, &a.def),
                })
            })
            .collect()
    }

    fn decide(
        &self,
        who: &Caller,
        id: &str,
        approve: bool,
        reason: Option<String>,
        scope: ScopeRequest,
    ) -> Result<serde_json::Value> {
        approvals::decide(&self.0, who, id, approve, reason, scope)
    }

    fn kill(&self, who: &Caller, hold: String) -> Result<serde_json::Value> {
        approvals::kill(&self.0, who, Some(hold), None)
    }

    fn revoke(&self, who: &Caller, grant: u32) -> Result<serde_json::Value> {
        approvals::revoke(&self.0, who, grant)
    }

    fn refuse(&self, source: &str, control: crate::events::model::Refusal) {
        self.0.refusals.report(source, control);
    }

    fn events(&self) -> tokio::sync::mpsc::Receiver<Arc<crate::events::Stamped>> {
        crate::events::with(&self.0.emitter, |e| {
            e.watch("web", crate::events::sinks::stream::SUBSCRIBER_QUEUE)
        })
    }
}
