//! Agent expiry (`expires` in the policy): once it passes, the agent is
//! frozen (every call no explicit allow rule covers is held for on-call)
//! with an `agent.expired` event, so an agent retired on schedule keeps no
//! rights even while its processes live on. The freeze is recorded like an
//! operator's (it survives a restart) and `thaw` refuses while the agent is
//! still expired; `run` refuses to start it (see `sessions::open`).
use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;

use super::{Shared, admin};
use crate::{
    cgroup,
    events::{
        self,
        model::{AgentExpired, DaemonEvent, Expiry, ModeChange, Success, Text},
    },
};

/// How often expiry is checked: a reload can move any agent's `expires`,
/// so the loop re-reads the registry rather than sleeping until one time.
const TICK: Duration = Duration::from_secs(1);

/// Where the daemon's expiry clock started: the wall clock then, and the
/// monotonic clock then.
static ANCHOR: OnceLock<(SystemTime, Instant)> = OnceLock::new();

/// The time expiry is judged by: the wall clock, but never behind what the
/// monotonic clock has counted since the daemon first asked. An agent
/// running as root may set the system clock back (settimeofday needs only
/// CAP_SYS_TIME, which no hook here refuses); that must not postpone its
/// own expiry. A clock set forward only makes it expire sooner. Across a
/// daemon restart the wall clock is trusted again (docs say so).
pub fn now() -> SystemTime {
    let (wall, mono) = *ANCHOR.get_or_init(|| (SystemTime::now(), Instant::now()));
    trusted(SystemTime::now(), wall, mono.elapsed())
}

fn trusted(wall_now: SystemTime, anchor: SystemTime, elapsed: Duration) -> SystemTime {
    wall_now.max(anchor + elapsed)
}

pub async fn watch(shared: Arc<Shared>) -> Result<()> {
    loop {
        freeze_expired(&shared, now());
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
                    DaemonEvent::AgentExpired(AgentExpired {
                        outcome: Success::Success,
                        agent: switched.agent_ref,
                        expiry: Expiry {
                            expires: at,
                            processes: processes as u64,
                            mode: ModeChange {
                                from: switched.from.into(),
                                to: switched.to.into(),
                            },
                            warning: switched.warning.map(Text::message),
                        },
                    }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_set_back_does_not_postpone_expiry() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ten_min = Duration::from_secs(600);
        // The wall clock set back an hour, ten minutes into the run.
        let set_back = start + ten_min - Duration::from_secs(3600);
        assert_eq!(trusted(set_back, start, ten_min), start + ten_min);
        // Set forward: taken as is (expires sooner, never later).
        let forward = start + Duration::from_secs(7200);
        assert_eq!(trusted(forward, start, ten_min), forward);
        assert!(now() <= now(), "never goes back");
    }
}
