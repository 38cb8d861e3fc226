//! Tasks that move kernel output to the event stream: the ring-buffer reader
//! and the loss-counter poller.
use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use guard_common::{LOSS_REASONS, LossReason as KernelLoss};
use tokio::io::unix::AsyncFd;

use super::{
    Shared, attribute,
    holds::Release,
    tasks::{Lease, Owned},
};
use crate::{
    events::{
        self, decode,
        model::{CallOutcome, DaemonEvent, Loss, LossReason},
    },
    kernel::LossCounters,
};

/// The kernel wakes us at once only for holds and denials, and otherwise
/// only when a quarter of the ring is queued (see guard-ebpf emit.rs); this
/// timer is what collects ordinary records, and bounds how long they wait.
const DRAIN_INTERVAL: Duration = Duration::from_millis(25);
const LOSS_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Records read before the reader yields. Under a steady stream the ring is
/// never empty; a drain that ran until it was would keep its worker from
/// ever polling the runtime's I/O driver, and the signalfd (stop, reload)
/// and the control socket would go unread for as long as the agent kept
/// calling.
const DRAIN_BUDGET: usize = 1024;

/// The ring buffer, registered with the runtime once: a restarted reader
/// takes it up again (see `tasks::Owned`).
pub type Ring = Owned<AsyncFd<RingBuf<MapData>>>;

pub fn register(ring: RingBuf<MapData>) -> anyhow::Result<Ring> {
    // SAFETY: the ring buffer owns its map fd, which stays open and
    // unchanged until the AsyncFd (which owns the RingBuf) is dropped.
    let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the event ring buffer: {e}"))?;
    Ok(Owned::new(fd))
}

pub async fn read_events(ring: Ring, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut fd = ring.lease()?;
    let clock = decode::BootClock::new();
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    loop {
        let more = tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let more = drain(guard.get_inner_mut(), &shared, &clock);
                // Readiness is cleared only once the ring is empty, so a
                // partial drain comes straight back here.
                if !more {
                    guard.clear_ready();
                }
                more
            }
            _ = tick.tick() => drain(fd.get_mut(), &shared, &clock),
        };
        if more {
            // Yielding defers this task until the worker has polled the
            // I/O driver, so signals and sockets are served between drains.
            tokio::task::yield_now().await;
        }
    }
}

/// Reads up to [`DRAIN_BUDGET`] records; true when the budget ran out
/// before the ring did.
fn drain(ring: &mut RingBuf<MapData>, shared: &Arc<Shared>, clock: &decode::BootClock) -> bool {
    // The registry is read per record, not per drain, so that neither a
    // reload waiting to write nor a held call waiting to be registered
    // waits for a whole drain.
    for _ in 0..DRAIN_BUDGET {
        let Some(item) = ring.next() else {
            return false;
        };
        let decoded = decode::decode(&item, clock);
        drop(item);
        let record = match decoded {
            Ok(record) => record,
            Err(err) => {
                // Not silent: a record we cannot read is a lost event.
                tracing::error!(%err, "undecodable kernel record");
                events::with(&shared.emitter, |e| {
                    e.lost(LossReason::UndecodableRecord, 1, Some(err.to_string()));
                });
                continue;
            }
        };
        let (time, hold) = (record.header.time, record.header.hold_id);
        let (tid, pid) = (record.header.tid, record.header.pid);
        let (call, timeout) = {
            let registry = shared.registry.read();
            // Lock order everywhere: registry, then enricher, then emitter.
            let mut enricher = super::lock_enricher(shared);
            let call = attribute::kernel_call(record, &registry, &mut enricher);
            // A held call waits as long as its agent's policy says.
            let timeout = match &call {
                Some(c) if c.outcome == CallOutcome::Held => registry
                    .policy
                    .approval_timeout(c.agent.known().map(|a| a.name.as_str())),
                _ => Duration::ZERO,
            };
            (call, timeout)
        };
        let Some(call) = call else { continue };
        let spent = crate::events::budget::exhausted_by(&call).then(|| call.clone());
        match (call.outcome, hold) {
            // A kernel hold: the thread is stopped until the registry
            // releases it.
            (CallOutcome::Held, Some(id)) => {
                shared
                    .holds
                    .register(shared, id, call, pid, Release::Kernel { tid }, timeout);
            }
            (CallOutcome::Held, None) => {
                tracing::error!("held record without a hold id");
                events::with(&shared.emitter, |e| e.emit(time, call.into()));
            }
            _ => events::with(&shared.emitter, |e| e.emit(time, call.into())),
        }
        if let Some(call) = spent {
            super::budgets::exhausted(shared, &call);
        }
    }
    true
}

/// The loss reason of the kernel's counter at `index`.
fn reason(index: usize) -> Option<LossReason> {
    match KernelLoss::from_raw(index as u32)? {
        KernelLoss::RingbufFull => Some(LossReason::RingbufFull),
        KernelLoss::HoldFailed => Some(LossReason::HoldFailed),
        KernelLoss::GuardFailed => Some(LossReason::GuardFailed),
    }
}

/// The loss counters and what of them was reported, kept across restarts
/// of the poller.
pub struct LossPoll {
    counters: LossCounters,
    last: [u64; LOSS_REASONS as usize],
}

/// What was reported is kept in `reported` (state dir): counters taken back
/// from a crashed predecessor (`reused`) are reported from there on, so a
/// loss is reported once, including losses while no daemon was running.
pub fn loss_poll(counters: LossCounters, reported: &std::path::Path, reused: bool) -> LossPoll {
    let mut last = [0u64; LOSS_REASONS as usize];
    if reused {
        if let Some(saved) = std::fs::read(reported)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<u64>>(&b).ok())
        {
            for (l, s) in last.iter_mut().zip(saved) {
                *l = s;
            }
        }
    }
    LossPoll { counters, last }
}

/// Turns every increase of a kernel loss counter into a `loss` event.
pub async fn poll_losses(
    poll: Owned<LossPoll>,
    shared: Arc<Shared>,
    reported: std::path::PathBuf,
) -> anyhow::Result<()> {
    let mut poll: Lease<LossPoll> = poll.lease()?;
    let mut tick = tokio::time::interval(LOSS_POLL_INTERVAL);
    loop {
        tick.tick().await;
        let totals = match poll.counters.totals() {
            Ok(t) => t,
            Err(err) => {
                tracing::error!(%err, "reading loss counters");
                continue;
            }
        };
        let mut any = false;
        for (i, (now, before)) in totals.iter().zip(poll.last.iter()).enumerate() {
            if now > before {
                any = true;
                let Some(reason) = reason(i) else {
                    tracing::error!(
                        counter = i,
                        "a kernel loss counter this build does not know"
                    );
                    continue;
                };
                let mut loss = Loss::new(reason, now - before);
                loss.loss.total = Some(*now);
                events::emit_now(&shared.emitter, DaemonEvent::Loss(loss));
            }
        }
        poll.last = totals;
        if any {
            if let Err(err) = std::fs::write(&reported, serde_json::to_vec(&poll.last.to_vec())?) {
                tracing::warn!(%err, file = %reported.display(), "saving reported loss totals");
            }
        }
        // Sink and reader losses, and the chain tip (written outside the lock).
        if let Some((path, tip)) = events::with(&shared.emitter, events::Emitter::tick) {
            if let Err(err) = tip.save(&path) {
                tracing::error!(%err, file = %path.display(), "persisting the event chain");
            }
        }
    }
}
