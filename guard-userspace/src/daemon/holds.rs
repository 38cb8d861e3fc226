//! Calls held for a human: one registry whatever the backend. A hold ends
//! exactly once, by approve, deny, expiry (deny) or the process going away,
//! and every end is a `hold.decision` event.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use parking_lot::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::Shared;
pub use crate::events::model::{By, Decision as Verdict};
use crate::{
    events::{
        self,
        model::{Call, CallOutcome, Decided, HoldDecision, HoldId, HoldRef, Scope, Text},
    },
    statefile::StateFile,
};

/// How a held call is released.
pub enum Release {
    /// Seccomp supervision: the supervisor task waits on `tx`. The call is
    /// notification `notif` of run `session`, which is how a restarted
    /// daemon finds it again.
    Seccomp {
        tx: oneshot::Sender<bool>,
        session: String,
        notif: u64,
    },
    /// A kernel hold (LSM or connect): the verdict goes into the HOLDS map
    /// entry of thread `tid`, then the stopped process gets SIGCONT.
    Kernel { tid: u32 },
}

pub struct Hold {
    pub id: u64,
    /// The held call, as its `held` event reported it.
    pub call: Call,
    pub pid: u32,
    pub since: Instant,
    pub since_wall: SystemTime,
    pub deadline: Instant,
    release: Release,
}

/// A held seccomp call taken back after a restart, waiting for its run's
/// supervision to resume: the hold's id and the end its verdict comes on.
type Parked = (u64, oneshot::Receiver<bool>);

#[derive(Default)]
pub struct Holds {
    held: Mutex<HashMap<u64, Hold>>,
    /// Where holds are persisted (state_dir/holds.json), once known.
    file: Mutex<Option<PathBuf>>,
    /// Keyed by (session id, notification id).
    parked: Mutex<HashMap<(String, u64), Parked>>,
}

/// A hold as persisted: enough to take it back after a restart.
#[derive(Serialize, Deserialize)]
struct Persisted {
    id: u64,
    pid: u32,
    release: PersistedRelease,
    /// The held call (`event`: as agent-guard/v1 persisted it, which reads
    /// as the same call).
    #[serde(alias = "event")]
    call: Call,
    since_unix_ms: u64,
    deadline_unix_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
enum PersistedRelease {
    Kernel { tid: u32 },
    Seccomp { session: String, notif: u64 },
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Holds {
    /// Registers a hold and emits its `held` event (`call` has its agent,
    /// process, target and rule; the outcome and the hold are set here).
    pub fn register(
        &self,
        shared: &Shared,
        id: u64,
        mut call: Call,
        pid: u32,
        release: Release,
        timeout: Duration,
    ) {
        call.outcome = CallOutcome::Held;
        // Gathered before any hold lock is taken (it reads /proc and the
        // recent counts), once: a successor shows the same.
        let context = super::context::gather(shared, &call, pid);
        call.hold = Some(HoldRef {
            id: HoldId(id),
            timeout_secs: Some(timeout.as_secs()),
            context: Some(Box::new(context)),
        });
        let announce = call.clone();
        let now = Instant::now();
        let mut held = self.lock();
        // A thread has one kernel hold at a time: a new one for the same
        // thread means the kernel replaced the old (another call of the
        // thread was held), which ends the old one here.
        let superseded: Vec<Hold> = match &release {
            Release::Kernel { tid } => {
                let ids: Vec<u64> = held
                    .values()
                    .filter(|h| matches!(h.release, Release::Kernel { tid: t } if t == *tid))
                    .map(|h| h.id)
                    .collect();
                ids.iter().filter_map(|i| held.remove(i)).collect()
            }
            Release::Seccomp { .. } => Vec::new(),
        };
        held.insert(
            id,
            Hold {
                id,
                call,
                pid,
                since: now,
                since_wall: SystemTime::now(),
                deadline: now + timeout,
                release,
            },
        );
        // Persisted before it is announced: whoever sees the event may
        // crash the daemon right away, and the hold must survive that.
        self.save(&held);
        drop(held);
        for old in superseded {
            self.emit_decision(
                shared,
                old.id,
                old.call,
                Verdict::Superseded,
                By {
                    uid: None,
                    user: "agent-guard".into(),
                },
                Some(format!(
                    "thread made another call that was held (hold {id}); this call, if made \
                     again, is judged afresh"
                )),
                old.since.elapsed(),
                Scope::once(),
            );
        }
        events::emit_now(&shared.emitter, announce);
    }

    /// Writes the holds to the state file (write, fsync, rename), so
    /// a daemon restarted after a crash can take them back.
    fn save(&self, held: &HashMap<u64, Hold>) {
        let Some(path) = self.file.lock().clone() else {
            return;
        };
        let now = Instant::now();
        let wall = SystemTime::now();
        let list: Vec<Persisted> = held
            .values()
            .map(|h| Persisted {
                id: h.id,
                pid: h.pid,
                release: match &h.release {
                    Release::Kernel { tid } => PersistedRelease::Kernel { tid: *tid },
                    Release::Seccomp { session, notif, .. } => PersistedRelease::Seccomp {
                        session: session.clone(),
                        notif: *notif,
                    },
                },
                call: h.call.clone(),
                since_unix_ms: unix_ms(h.since_wall),
                deadline_unix_ms: unix_ms(wall + h.deadline.saturating_duration_since(now)),
            })
            .collect();
        if let Err(err) = StateFile::new(path).save(&list) {
            tracing::error!(%err, "saving held calls; a restart could not take them back");
        }
    }

    /// At start-up: remembers where to persist, and takes back every hold a
    /// crashed predecessor left whose call still waits: kernel holds whose
    /// thread is still stopped (the HOLDS map is pinned), and seccomp holds
    /// whose run's launcher is alive (it keeps the listener open and hands
    /// it back, see `sessions`). No new `held` event: it was emitted once.
    /// Call after the sessions are loaded.
    pub fn resume(&self, shared: &Arc<Shared>, file: PathBuf) {
        let previous: Vec<Persisted> = match StateFile::new(file.clone()).load() {
            Ok(previous) => previous.unwrap_or_default(),
            Err(err) => {
                // Their threads stay stopped until an operator kills them:
                // say so loudly.
                tracing::error!(%err, "calls held before the restart cannot be taken back");
                Vec::new()
            }
        };
        *self.file.lock() = Some(file);
        let now = Instant::now();
        let wall = unix_ms(SystemTime::now());
        let mut held = self.lock();
        let mut gone = Vec::new();
        for p in previous {
            let release = match p.release {
                PersistedRelease::Kernel { tid } => {
                    if !shared.kernel_holds.is_pending(tid, p.id) {
                        // Not in the map (a predecessor of another HOLDS
                        // layout, or the map was lost): nobody could
                        // release the stopped thread. Resume it: its call
                        // restarts and is judged afresh by our programs.
                        if guard_host::proc::state(p.pid) == Some('T') {
                            tracing::warn!(
                                hold = p.id,
                                pid = p.pid,
                                "a call held before the restart is no longer in the kernel's table; resuming it to be judged afresh"
                            );
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(p.pid as i32),
                                nix::sys::signal::Signal::SIGCONT,
                            );
                        }
                        continue;
                    }
                    Release::Kernel { tid }
                }
                PersistedRelease::Seccomp { session, notif } => {
                    if !super::sessions::launcher_alive(shared, &session) {
                        // With the launcher went the last copy of the
                        // listener: the kernel failed the call (ENOSYS).
                        gone.push((p.id, p.call, wall.saturating_sub(p.since_unix_ms)));
                        continue;
                    }
                    let (tx, rx) = oneshot::channel();
                    self.parked_lock()
                        .insert((session.clone(), notif), (p.id, rx));
                    Release::Seccomp { tx, session, notif }
                }
            };
            tracing::warn!(
                hold = p.id,
                pid = p.pid,
                "took back a call held before the restart"
            );
            held.insert(
                p.id,
                Hold {
                    id: p.id,
                    call: p.call,
                    pid: p.pid,
                    since: now - Duration::from_millis(wall.saturating_sub(p.since_unix_ms)),
                    since_wall: SystemTime::UNIX_EPOCH + Duration::from_millis(p.since_unix_ms),
                    deadline: now + Duration::from_millis(p.deadline_unix_ms.saturating_sub(wall)),
                    release,
                },
            );
        }
        self.save(&held);
        drop(held);
        for (id, call, waited_ms) in gone {
            self.emit_decision(
                shared,
                id,
                call,
                Verdict::Denied,
                By {
                    uid: None,
                    user: "agent-guard".into(),
                },
                Some("the run's launcher is gone; the kernel failed the call (ENOSYS)".into()),
                Duration::from_millis(waited_ms),
                Scope::once(),
            );
        }
    }

    /// A held seccomp call taken back after a restart, when its run's
    /// supervision resumes: the hold's id and where its verdict comes.
    pub fn unpark(&self, session: &str, notif: u64) -> Option<Parked> {
        self.parked_lock().remove(&(session.to_owned(), notif))
    }

    fn parked_lock(&self) -> MutexGuard<'_, HashMap<(String, u64), Parked>> {
        self.parked.lock()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Hold>> {
        self.held.lock()
    }

    /// Pending holds, oldest first, as the control socket reports them.
    pub fn pending(&self) -> Vec<Value> {
        let now = Instant::now();
        let held = self.lock();
        let mut list: Vec<&Hold> = held.values().collect();
        list.sort_by_key(|h| h.since);
        list.iter()
            .map(|h| {
                let agent = h.call.agent.known();
                json!({
                    "id": h.id.to_string(),
                    "kind": h.call.kind(),
                    "agent": agent.map(|a| &a.name),
                    "owner": agent.map(|a| &a.owner),
                    "pid": h.pid,
                    "exe": h.call.process.exe,
                    "cmdline": h.call.process.cmdline,
                    "purpose": agent.map(|a| &a.purpose),
                    "on_behalf_of": agent.and_then(|a| a.on_behalf_of.as_ref()),
                    "target": h.call.op.target_json(),
                    // Why it waits when the rule alone does not say (a spent budget).
                    "reason": h.call.reason,
                    "budget": h.call.budget,
                    "rule": h.call.rule,
                    "context": h.call.hold.as_ref().and_then(|x| x.context.as_ref()),
                    "since": humantime::format_rfc3339_seconds(h.since_wall).to_string(),
                    "waited_ms": now.duration_since(h.since).as_millis() as u64,
                    "left_ms": h.deadline.saturating_duration_since(now).as_millis() as u64,
                })
            })
            .collect()
    }

    /// How many calls are held now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// The pid holding hold `id`, if pending.
    pub fn pid_of(&self, id: u64) -> Option<u32> {
        self.lock().get(&id).map(|h| h.pid)
    }

    /// The held call of pending hold `id`.
    pub fn call_of(&self, id: u64) -> Option<Call> {
        self.lock().get(&id).map(|h| h.call.clone())
    }

    /// How long pending hold `id` has before it expires.
    pub fn left(&self, id: u64) -> Option<Duration> {
        self.lock()
            .get(&id)
            .map(|h| h.deadline.saturating_duration_since(Instant::now()))
    }

    /// Ends hold `id`; false if there is no such pending hold.
    pub fn decide(
        &self,
        shared: &Arc<Shared>,
        id: u64,
        verdict: Verdict,
        by: By,
        reason: Option<String>,
    ) -> bool {
        self.decide_scoped(shared, id, verdict, by, reason, Scope::once())
    }

    /// Like [`Holds::decide`], recording the approval's scope (a grant).
    pub fn decide_scoped(
        &self,
        shared: &Arc<Shared>,
        id: u64,
        verdict: Verdict,
        by: By,
        reason: Option<String>,
        scope: Scope,
    ) -> bool {
        let hold = {
            let mut held = self.lock();
            let Some(hold) = held.remove(&id) else {
                return false;
            };
            self.save(&held);
            hold
        };
        let allow = verdict == Verdict::Approved;
        match hold.release {
            Release::Seccomp { tx, .. } => {
                // The supervisor may be gone (process killed): nothing to do.
                let _ = tx.send(allow);
            }
            Release::Kernel { tid } => {
                if let Err(err) = shared.kernel_holds.release(tid, id, allow, hold.pid) {
                    tracing::error!(%err, hold = id, "releasing a kernel hold");
                }
            }
        }
        let waited = hold.since.elapsed();
        self.emit_decision(shared, id, hold.call, verdict, by, reason, waited, scope);
        true
    }

    /// The `hold.decision` event of hold `id`, whose held call was `call`.
    #[expect(clippy::too_many_arguments, reason = "one field of the event each")]
    fn emit_decision(
        &self,
        shared: &Shared,
        id: u64,
        call: Call,
        verdict: Verdict,
        by: By,
        reason: Option<String>,
        waited: Duration,
        scope: Scope,
    ) {
        let decided = Decided {
            id: HoldId(id),
            call: call.kind(),
            decision: verdict,
            by,
            reason: reason.map(Text::message),
            waited_ms: waited.as_millis() as u64,
            scope,
        };
        events::emit_now(
            &shared.emitter,
            events::model::DaemonEvent::HoldDecision(Box::new(HoldDecision::new(call, decided))),
        );
    }

    /// Denies every pending hold (clean shutdown).
    pub fn deny_all(&self, shared: &Arc<Shared>, why: &str) {
        let ids: Vec<u64> = self.lock().keys().copied().collect();
        for id in ids {
            self.decide(
                shared,
                id,
                Verdict::Denied,
                By {
                    uid: None,
                    user: "agent-guard".into(),
                },
                Some(why.to_owned()),
            );
        }
    }

    /// Expires every hold past its deadline (a deny).
    pub fn expire(&self, shared: &Arc<Shared>) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .lock()
            .values()
            .filter(|h| h.deadline <= now)
            .map(|h| h.id)
            .collect();
        for id in due {
            self.decide(
                shared,
                id,
                Verdict::Expired,
                By {
                    uid: None,
                    user: "agent-guard (approval timeout)".into(),
                },
                Some("no decision before approval_timeout_secs".into()),
            );
        }
    }
}

/// Expires holds once a second; evicts stale process details every 30 s.
/// Each second also tells the programs whether any thread has a kernel
/// hold (`settle_holds`), so that counted calls skip looking for one.
pub async fn expire_loop(shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u32;
    loop {
        tick.tick().await;
        shared.holds.expire(&shared);
        settle_holds(&shared);
        shared.grants.expire();
        shared.refusals.flush();
        n = n.wrapping_add(1);
        if n.is_multiple_of(30) {
            super::lock_enricher(&shared).sweep();
            let swept = shared.kernel_holds.sweep();
            if swept > 0 {
                tracing::debug!(swept, "removed kernel hold entries of exited threads");
            }
        }
    }
}

/// Once the HOLDS map is empty, records the programs' count of holds made
/// at that point in CONFIG (see `KernelHolds::quiet`); a failure only
/// leaves the programs looking, as before.
fn settle_holds(shared: &Shared) {
    let Some(made) = shared.kernel_holds.quiet() else {
        return;
    };
    let mut kernel = shared.kernel.lock();
    if let Some(kernel) = kernel.as_mut() {
        if let Err(err) = kernel.settle_holds(made) {
            tracing::warn!(%err, "telling the programs that no call is held");
        }
    }
}
