//! Tasks that move kernel output to the event stream: the ring-buffer reader
//! and the loss-counter poller.
use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use guard_common::{LOSS_REASONS, LossReason};
use serde_json::json;
use tokio::io::unix::AsyncFd;

use super::{Shared, holds::Release};
use crate::{
    events::{self, decode},
    kernel::LossCounters,
};

/// The kernel wakes us only every few dozen records (batched wakeups); this
/// timer bounds how long a quiet stream's last records wait.
const DRAIN_INTERVAL: Duration = Duration::from_millis(25);
const LOSS_POLL_INTERVAL: Duration = Duration::from_millis(500);

pub async fn read_events(ring: RingBuf<MapData>, shared: Arc<Shared>) -> anyhow::Result<()> {
    // SAFETY: the ring buffer owns its map fd, which stays open and
    // unchanged until the AsyncFd (which owns the RingBuf) is dropped.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the event ring buffer: {e}"))?;
    let clock = decode::BootClock::new();
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &shared, &clock);
                guard.clear_ready();
            }
            _ = tick.tick() => drain(fd.get_mut(), &shared, &clock),
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, shared: &Arc<Shared>, clock: &decode::BootClock) {
    let mut held = Vec::new();
    {
        let registry = match shared.registry.read() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Lock order everywhere: registry, then enricher, then emitter.
        let mut enricher = super::lock_enricher(shared);
        let timeout = Duration::from_secs(registry.policy.daemon.approval_timeout_secs);
        while let Some(item) = ring.next() {
            match decode::decode(&item, &registry, clock, &mut enricher) {
                Ok(None) => {}
                Ok(Some((_, body)))
                    if body.get("outcome").and_then(|o| o.as_str()) == Some("held") =>
                {
                    held.push((body, timeout));
                }
                Ok(Some((time, body))) => {
                    let mut emitter = match shared.emitter.lock() {
                        Ok(e) => e,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    emitter.emit(time, body);
                }
                Err(err) => {
                    // Not silent: a record we cannot read is a lost event.
                    tracing::error!(%err, "undecodable kernel record");
                    events::emit_now(
                        &shared.emitter,
                        json!({"kind": "loss", "outcome": "lost",
                               "loss": {"reason": "undecodable_record", "count": 1, "detail": err.to_string()}}),
                    );
                }
            }
        }
    }
    // A kernel hold: the thread is stopped until the registry releases it.
    for (body, timeout) in held {
        let num = |a: &str, b: &str| {
            body.get(a)
                .and_then(|v| v.get(b))
                .and_then(serde_json::Value::as_u64)
        };
        let (Some(id), Some(tid), Some(pid)) = (
            num("hold", "id"),
            num("process", "tid"),
            num("process", "pid"),
        ) else {
            tracing::error!("held record without hold id or thread");
            continue;
        };
        shared.holds.register(
            shared,
            id,
            body,
            pid as u32,
            Release::Kernel { tid: tid as u32 },
            timeout,
        );
    }
}

fn reason_name(index: usize) -> &'static str {
    match LossReason::from_raw(index as u32) {
        Some(LossReason::RingbufFull) => "ringbuf_full",
        Some(LossReason::HoldFailed) => "hold_failed",
        None => "unknown",
    }
}

/// Turns every increase of a kernel loss counter into a `loss` event.
pub async fn poll_losses(counters: LossCounters, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut last = [0u64; LOSS_REASONS as usize];
    let mut tick = tokio::time::interval(LOSS_POLL_INTERVAL);
    loop {
        tick.tick().await;
        let totals = match counters.totals() {
            Ok(t) => t,
            Err(err) => {
                tracing::error!(%err, "reading loss counters");
                continue;
            }
        };
        for (i, (now, before)) in totals.iter().zip(last.iter()).enumerate() {
            if now > before {
                events::emit_now(
                    &shared.emitter,
                    json!({"kind": "loss", "outcome": "lost",
                           "loss": {"reason": reason_name(i), "count": now - before, "total": now}}),
                );
            }
        }
        last = totals;
        // Sink and reader losses, and the chain tip (written outside the lock).
        if let Some((path, tip)) = events::with(&shared.emitter, events::Emitter::tick) {
            if let Err(err) = tip.save(&path) {
                tracing::error!(%err, file = %path.display(), "persisting the event chain");
            }
        }
    }
}
