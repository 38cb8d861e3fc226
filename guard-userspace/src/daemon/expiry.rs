//! Agent expiry (`expires` in the policy): once it passes, the agent is
//! frozen (every call no explicit allow rule covers is held for on-call)
//! with an `agent.expired` event, so an agent retired on schedule keeps no
//! rights even while its processes live on. The freeze is recorded like an
//! operator's (it survives a restart) and `thaw` refuses while the agent is
//! still expired; `run` refuses to start it (see `sessions::open`).
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Result;
use serde_json::json;

use super::{Shared, admin};
use crate::{cgroup, events, policy};

/// How often expiry is checked: a reload can move any agent's `expires`,
/// so the loop re-reads the registry rather than sleeping until one time.
const TICK: Duration = Duration::from_secs(1);

pub async fn watch(shared: Arc<Shared>) -> Result<()> {
    loop {
        freeze_expired(&shared, SystemTime::now());
        tokio::time::sleep(TICK).await;
    }
}

fn freeze_expired(shared: &Arc<Shared>, now: SystemTime) {
    let due: Vec<(String, String, usize)> = {
        let registry = shared.registry();
        registry
            .agents
            .values()
            .filter(|a| !a.frozen && a.def.expired(now))
            .map(|a| {
                (
                    a.def.name.clone(),
                    a.def.expires_text().unwrap_or_default(),
                    cgroup::count_procs(&a.cgroup_dir),
                )
            })
            .collect()
    };
    for (name, at, processes) in due {
        match admin::switch_mode(shared, &name, true) {
            Ok(switched) => {
                tracing::warn!(agent = %name, expires = %at, processes, "agent expired: frozen");
                events::emit_now(
                    &shared.emitter,
                    json!({"kind": "agent.expired", "outcome": "success",
                           "agent": switched.agent_ref,
                           "expiry": {"expires": at, "processes": processes,
                                      "mode": {"from": policy::mode_str(switched.from),
                                               "to": policy::mode_str(switched.to)},
                                      "warning": switched.warning}}),
                );
            }
            // Said each tick until it works: an expired agent running free
            // is what on-call must hear about.
            Err(err) => {
                tracing::error!(agent = %name, error = %format!("{err:#}"), "agent expired but could not be frozen");
            }
        }
    }
}
