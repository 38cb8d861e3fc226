//! Handles on maps that leave the loader for the daemon's tasks: decisions
//! for held calls, and the loss counters.
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use guard_common::{HoldEntry, HoldState, LOSS_REASONS};

use super::{KernelError, map_err};

/// BPF_EXIST: update an entry only if it is there.
const BPF_EXIST: u64 = 2;

/// The daemon's handle on the kernel's HOLDS map: writes decisions and
/// resumes the stopped process.
pub struct KernelHolds {
    pub(super) map: parking_lot::Mutex<BpfHashMap<MapData, u32, HoldEntry>>,
    /// HOLDS_MADE: how many holds the programs have made (read only).
    pub(super) made: Array<MapData, u64>,
}

impl KernelHolds {
    /// The programs' count of holds made, if the HOLDS map was empty after
    /// it was read: then no thread had a hold when the count read this,
    /// and any hold made since has moved it on (see guard-ebpf's
    /// hold::holds_maybe). None while some entry is there, or on an error.
    pub fn quiet(&self) -> Option<u64> {
        // The count first: an entry made after this read moves it on.
        let made = self.made.get(&0, 0).ok()?;
        let map = self.lock();
        map.keys().next().is_none().then_some(made)
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, BpfHashMap<MapData, u32, HoldEntry>> {
        self.map.lock()
    }
    /// Whether thread `tid` still waits in hold `hold_id`.
    pub fn is_pending(&self, tid: u32, hold_id: u64) -> bool {
        let map = self.lock();
        map.get(&tid, 0)
            .is_ok_and(|e| e.hold_id == hold_id && e.state == HoldState::Pending.raw())
    }

    /// Writes the decision for `tid`'s hold `hold_id`, then SIGCONT to `pid`:
    /// the stopped call restarts, finds the decision and consumes it.
    pub fn release(
        &self,
        tid: u32,
        hold_id: u64,
        allow: bool,
        pid: u32,
    ) -> Result<(), KernelError> {
        let mut map = self.lock();
        let mut entry = map.get(&tid, 0).map_err(map_err("HOLDS"))?;
        if entry.hold_id != hold_id {
            // The thread's hold is another call's (it was killed and the
            // tid reused): never hand this decision to it.
            return Err(KernelError::StaleHold { tid, hold_id });
        }
        entry.state = if allow {
            HoldState::Allow
        } else {
            HoldState::Deny
        }
        .raw();
        // Only into the entry still there: a decision never makes an entry
        // the programs did not count (see `quiet`).
        map.insert(tid, entry, BPF_EXIST)
            .map_err(map_err("HOLDS"))?;
        let resumed = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        if resumed == Err(nix::errno::Errno::ESRCH) {
            // Gone (killed while held): a reused thread id must not find
            // this decision.
            let _ = map.remove(&tid);
        }
        Ok(())
    }
}

impl KernelHolds {
    /// Removes the entries of threads that no longer exist: a decided hold
    /// whose call was abandoned (the thread died, or never made the call
    /// again) must not wait for a reused thread id. Returns how many.
    pub fn sweep(&self) -> usize {
        let mut map = self.lock();
        let dead: Vec<u32> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(tid, entry)| {
                !std::path::Path::new(&format!("/proc/{}/task/{tid}", entry.pid)).exists()
            })
            .map(|(tid, _)| tid)
            .collect();
        for tid in &dead {
            let _ = map.remove(tid);
        }
        dead.len()
    }
}

pub struct LossCounters(pub(super) PerCpuArray<MapData, u64>);

impl LossCounters {
    /// Totals over all CPUs, per LossReason index.
    pub fn totals(&self) -> Result<[u64; LOSS_REASONS as usize], KernelError> {
        let mut out = [0u64; LOSS_REASONS as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let values = self.0.get(&(i as u32), 0).map_err(map_err("LOSSES"))?;
            *slot = values.iter().sum();
        }
        Ok(out)
    }
}
