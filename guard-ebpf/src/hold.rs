//! Holding a call for a human, in the kernel: the thread is stopped before
//! the call has done anything, and the call restarts when it is resumed.
//!
//! First pass through the hook: record a Pending hold for this thread,
//! send SIGSTOP, and fail the call with -ERESTARTNOINTR (513). The pending
//! signal makes the kernel rewind the system call instead of returning, and
//! the stop takes effect. The daemon writes the decision into the hold and
//! sends SIGCONT; the call runs again, reaches the hook, and consumes the
//! decision. A SIGCONT from anyone else restarts the call early: it finds
//! the hold still Pending and is stopped again, without a second event.
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid,
    generated::{bpf_ktime_get_boot_ns, bpf_send_signal},
};
use guard_common::{ERESTARTNOINTR, HoldEntry, HoldState, LossReason, SIGSTOP};

use crate::{emit, maps::HOLDS};

/// Where a call to hold stands.
pub enum Hold {
    /// A new hold was registered and the thread will stop: report it.
    Started { hold_id: u64 },
    /// Already held and still undecided (restarted early): stop again.
    StillPending,
    /// Decided: the restarted call proceeds or fails.
    Decided { allow: bool },
    /// Could not hold (table full, signal refused): fail closed, counted.
    Failed,
}

/// Whether the current thread has a hold entry (a restarted held call,
/// which must consume its decision before any grant is considered).
#[inline(always)]
pub fn in_progress() -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    HOLDS.get_ptr(&tid).is_some()
}

/// Starts, continues or ends the hold of the current thread's call.
#[inline(always)]
pub fn hold(stop_now: bool) -> Hold {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let pid = (pid_tgid >> 32) as u32;
    if let Some(entry) = HOLDS.get_ptr_mut(&tid) {
        // SAFETY: map value of our own thread's key; only this thread and
        // the daemon (after the stop) touch it.
        let state = unsafe { (*entry).state };
        if state == HoldState::Allow.raw() || state == HoldState::Deny.raw() {
            let _ = HOLDS.remove(&tid);
            return Hold::Decided {
                allow: state == HoldState::Allow.raw(),
            };
        }
        if stop_now && !send_stop() {
            let _ = HOLDS.remove(&tid);
            emit::count_loss(LossReason::HoldFailed);
            return Hold::Failed;
        }
        if !stop_now {
            // SAFETY: as above.
            unsafe { (*entry).stop_pending = 1 };
        }
        return Hold::StillPending;
    }
    if pid <= 1 {
        // Stopping init would stop the machine; never hold it.
        emit::count_loss(LossReason::HoldFailed);
        return Hold::Failed;
    }
    // SAFETY: helper without arguments. Boot-time nanoseconds: unique per
    // hold in practice, and sortable.
    let hold_id = unsafe { bpf_ktime_get_boot_ns() };
    let entry = HoldEntry {
        hold_id,
        pid,
        state: HoldState::Pending.raw(),
        stop_pending: u8::from(!stop_now),
        _pad: [0; 2],
    };
    if HOLDS.insert(&tid, &entry, 0).is_err() {
        emit::count_loss(LossReason::HoldFailed);
        return Hold::Failed;
    }
    if stop_now && !send_stop() {
        let _ = HOLDS.remove(&tid);
        emit::count_loss(LossReason::HoldFailed);
        return Hold::Failed;
    }
    Hold::Started { hold_id }
}

/// tp_btf/sys_exit (`void sys_exit(struct pt_regs *regs, long ret)`): a
/// connect hold fails its attempt with -ERESTARTNOINTR and leaves the stop
/// to us, since cgroup sock_addr programs cannot send signals. Every other
/// system call exit is passed over after one comparison.
#[inline(always)]
pub fn stop_at_exit(ret: i64) {
    if ret != -(ERESTARTNOINTR as i64) {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(entry) = HOLDS.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: our own thread's hold entry.
    unsafe {
        if (*entry).stop_pending == 0 {
            return;
        }
        (*entry).stop_pending = 0;
        if !send_stop() {
            // The attempt already returns -ERESTARTNOINTR; without a signal
            // the kernel will not restart it. Make any retry a deny, and
            // count it: this is the one way errno 513 could leak.
            (*entry).state = HoldState::Deny.raw();
            emit::count_loss(LossReason::HoldFailed);
        }
    }
}

/// SIGSTOP to the current process (all its threads, as job control does).
#[inline(always)]
pub fn send_stop() -> bool {
    // SAFETY: helper with a plain integer argument.
    unsafe { bpf_send_signal(SIGSTOP) == 0 }
}
