//! Giving freed heap back to the system.
//!
//! glibc keeps memory that was freed mapped in its arenas, one per thread
//! that allocates, unless asked to return it. Two things free a lot at once:
//! start-up (the kernel's BTF and the programs' object are parsed, then
//! dropped) and a sink that fell behind (its queue holds up to `queue`
//! rendered lines, a few KiB each, until it catches up). Without a trim
//! that peak would stay in the daemon's RSS for its whole run.
use std::time::Duration;

use anyhow::Result;

/// How often freed memory is handed back. A trim walks the arenas' free
/// lists; once in this long it costs nothing measurable.
const EVERY: Duration = Duration::from_secs(10);

/// Returns free heap to the system now.
fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; no pointer is involved.
    unsafe {
        libc::malloc_trim(0)
    };
}

/// Trims at once, which is after start-up (the task is started once the
/// programs are loaded and the agents installed), then every [`EVERY`]
/// for as long as the daemon runs.
pub async fn trim_periodically() -> Result<()> {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // It takes each arena's lock in turn: not on a runtime thread.
        tokio::task::spawn_blocking(trim).await?;
    }
}
