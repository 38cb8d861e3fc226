//! Bounds on connections to the daemon's unix sockets (the control socket
//! and the event sinks), so that nobody, an unprivileged local user or an
//! agent, can exhaust the daemon's file descriptors:
//! - each source (a uid, and where its process sits) may hold at most
//!   [`Limits::per_source`] connections;
//! - all callers that are not approvers outside every agent share one pool
//!   of [`Limits::general`] connections; approvers outside agents have a
//!   pool of their own, so a flood never locks on-call out;
//! - both pools are sized from the daemon's open-file limit, leaving room
//!   for everything else the daemon opens.
//!
//! Idle connections are bounded in time by the servers (see
//! `control_server`).
use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;

/// Most connections one source may hold (a runner's launchers each keep
/// one open for the length of their run).
const PER_SOURCE: usize = 128;
/// Pool sizes never go below these, whatever the limit says.
const MIN_GENERAL: usize = 64;
const MIN_OPERATOR: usize = 16;

/// Which pool a connection draws on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pool {
    /// Approvers outside every agent.
    Operator,
    /// Everyone else: readers, runners, agents, strangers.
    General,
}

#[derive(Default)]
struct Counts {
    per_source: HashMap<String, usize>,
    general: usize,
    operator: usize,
}

pub struct Limits {
    pub per_source: usize,
    pub general: usize,
    pub operator: usize,
    counts: Mutex<Counts>,
}

/// Why a connection was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    Source { cap: usize },
    Pool { cap: usize },
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::Source { cap } => write!(f, "this caller already holds {cap} connections"),
            Full::Pool { cap } => write!(f, "the daemon already serves {cap} such connections"),
        }
    }
}

/// A connection's place in the counts; given back when dropped.
pub struct Slot {
    limits: Arc<Limits>,
    source: String,
    pool: Pool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock();
        if let Some(n) = c.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.source);
            }
        }
        match self.pool {
            Pool::General => c.general -= 1,
            Pool::Operator => c.operator -= 1,
        }
    }
}

impl Limits {
    /// Pools sized for a soft open-file limit of `nofile`: half of it for
    /// connections (the rest is for maps, sinks, runs' listeners, /proc
    /// reads), an eighth of that half for on-call's own pool.
    pub fn for_nofile(nofile: u64) -> Self {
        let half = usize::try_from(nofile / 2).unwrap_or(usize::MAX);
        let operator = (half / 8).max(MIN_OPERATOR);
        let general = half.saturating_sub(operator).max(MIN_GENERAL);
        Self {
            per_source: PER_SOURCE.min(general),
            general,
            operator,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Takes a slot for a connection from `source`, or says why not.
    pub fn admit(self: &Arc<Self>, source: &str, pool: Pool) -> Result<Slot, Full> {
        let mut c = self.counts.lock();
        let mine = c.per_source.get(source).copied().unwrap_or(0);
        if mine >= self.per_source {
            return Err(Full::Source {
                cap: self.per_source,
            });
        }
        match pool {
            Pool::General if c.general >= self.general => {
                return Err(Full::Pool { cap: self.general });
            }
            Pool::Operator if c.operator >= self.operator => {
                return Err(Full::Pool { cap: self.operator });
            }
            Pool::General => c.general += 1,
            Pool::Operator => c.operator += 1,
        }
        *c.per_source.entry(source.to_owned()).or_default() += 1;
        Ok(Slot {
            limits: self.clone(),
            source: source.to_owned(),
            pool,
        })
    }

    /// Connections held now: (general, operator).
    pub fn in_use(&self) -> (usize, usize) {
        let c = self.counts.lock();
        (c.general, c.operator)
    }
}

/// The soft RLIMIT_NOFILE, raised to the hard limit first: a daemon started
/// with a low soft limit (systemd's default is 1024) would run out of
/// descriptors long before its caps. A failure to raise is not fatal.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "raised the open-file limit");
                hard
            }
            Err(err) => {
                tracing::warn!(%err, soft, hard, "could not raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(err) => {
            tracing::warn!(%err, "reading the open-file limit; assuming 1024");
            1024
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_follow_the_limit_and_never_vanish() {
        let small = Limits::for_nofile(1024);
        assert_eq!(small.operator, 64);
        assert_eq!(small.general, 448);
        assert_eq!(small.per_source, PER_SOURCE);
        let tiny = Limits::for_nofile(16);
        assert_eq!(tiny.general, MIN_GENERAL);
        assert_eq!(tiny.operator, MIN_OPERATOR);
        assert_eq!(tiny.per_source, MIN_GENERAL);
    }

    #[test]
    fn one_source_cannot_take_the_pool_and_slots_come_back() {
        let limits = Arc::new(Limits::for_nofile(1024));
        let mut held = Vec::new();
        for _ in 0..PER_SOURCE {
            held.push(limits.admit("uid 65534", Pool::General).expect("slot"));
        }
        assert_eq!(
            limits.admit("uid 65534", Pool::General).err(),
            Some(Full::Source { cap: PER_SOURCE })
        );
        // Others still get in, on-call in its own pool.
        let other = limits.admit("uid 1000", Pool::General).expect("other uid");
        let oncall = limits.admit("uid 0", Pool::Operator).expect("on-call");
        assert_eq!(limits.in_use(), (PER_SOURCE + 1, 1));
        drop((held, other, oncall));
        assert_eq!(limits.in_use(), (0, 0));
        assert!(limits.counts.lock().per_source.is_empty());
    }

    #[test]
    fn the_general_pool_is_bounded_for_many_sources() {
        let limits = Arc::new(Limits::for_nofile(256));
        let held: Vec<Slot> = (0..limits.general)
            .map(|uid| {
                limits
                    .admit(&format!("uid {uid}"), Pool::General)
                    .expect("slot")
            })
            .collect();
        assert_eq!(
            limits.admit("uid 99999", Pool::General).err(),
            Some(Full::Pool {
                cap: limits.general
            })
        );
        assert!(limits.admit("uid 0", Pool::Operator).is_ok());
        drop(held);
    }
}
