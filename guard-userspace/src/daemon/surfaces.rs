//! The daemon's on-call and operator surfaces (`[web]`, `[metrics]`,
//! `[[notify]]`): prepared before enforcement starts, so a missing secret
//! or a taken port stops the daemon with a clear error, then run as tasks.
use std::sync::Arc;

use anyhow::{Context as _, Result};
use tokio::{net::TcpListener, task::JoinSet};

use super::Shared;
use crate::{events, metrics, notify, policy::Policy, web};

pub struct Surfaces {
    web: Option<(TcpListener, web::Tokens)>,
    metrics: Option<TcpListener>,
    hooks: Vec<Arc<notify::Webhook>>,
    /// The page's public address, for the log and links in webhooks.
    page: Option<String>,
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
            web,
            metrics,
            hooks,
            page: policy.web.as_ref().map(|w| w.public_url()),
        })
    }

    /// `programs`: the loaded programs' kernel ids, for their run times.
    pub fn spawn(
        self,
        tasks: &mut JoinSet<Result<()>>,
        shared: &Arc<Shared>,
        programs: Vec<(String, u32)>,
    ) {
        // Webhook delivery counts are kept with or without an endpoint.
        let counters = Arc::new(metrics::Metrics::new());
        if let Some(listener) = self.metrics {
            counters.set_programs(programs);
            // Counting starts now, before `daemon.start` is emitted.
            events::with(&shared.emitter, |e| e.observe(counters.observer()));
            tracing::info!(addr = ?listener.local_addr().ok(), "serving metrics on /metrics");
            let holds = shared.clone();
            tasks.spawn(metrics::serve(
                listener,
                counters.clone(),
                Arc::new(move || holds.holds.count()),
            ));
        }
        if let Some((listener, tokens)) = self.web {
            tracing::info!(
                addr = ?listener.local_addr().ok(),
                page = self.page.as_deref().unwrap_or_default(),
                "serving the approval page"
            );
            tasks.spawn(web::serve(listener, shared.clone(), tokens));
        }
        if !self.hooks.is_empty() {
            tasks.spawn(notify::run(shared.clone(), self.hooks, self.page, counters));
        }
    }
}
