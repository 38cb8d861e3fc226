//! Holding a call for a human, in the kernel: the thread is stopped before
//! the call has done anything, and the call restarts when it is resumed.
//!
//! First pass through the hook: record a Pending hold for this thread,
//! with the call it is for (its kind and target, see
//! [`guard_common::HeldCall`]), send SIGSTOP, and fail the call with
//! -ERESTARTNOINTR (513). The pending signal makes the kernel rewind the
//! system call instead of returning, and the stop takes effect. The daemon
//! writes the decision into the hold and sends SIGCONT; the call runs
//! again, reaches the hook, and consumes the decision. A SIGCONT from
//! anyone else restarts the call early: it finds the hold still Pending
//! and is stopped again, without a second event.
//!
//! A decision applies only to the call that was held: the same thread
//! (the map's key), process, kind and target. Any other call of the thread
//! (a signal handler that runs when the thread resumes, a restarted call
//! whose arguments were rewritten meanwhile) is judged afresh: it may pass
//! on its own verdict or a grant, or start a hold of its own, which
//! replaces the old one (the daemon ends that one as superseded).
//!
//! Using it from a hook: build the current call with [`Call::connect`] or
//! [`Call::path`] (plus [`Call::second_path`] for two-path operations)
//! when the verdict is `ask`, check [`Call::held`] before looking for a
//! grant, then [`hold`]. Report [`Hold::Decided`] as the call's own event
//! with its hold id: it is what actually ran.
use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_send_signal},
    },
};
use guard_common::{
    ERESTARTNOINTR, HOLD_SECOND_PATH, HOLD_TARGET_BYTES, HoldEntry, HoldState, LossReason, SIGSTOP,
};

use crate::{
    emit,
    maps::{HOLD_SCRATCH, HOLDS, HOLDS_MADE},
};

/// u64 words in a held call's target.
const TARGET_WORDS: usize = HOLD_TARGET_BYTES / 8;

/// Where a call to hold stands.
pub enum Hold {
    /// A new hold was registered and the thread will stop: report it.
    Started { hold_id: u64 },
    /// Already held and still undecided (restarted early): stop again.
    StillPending,
    /// Decided: the restarted call proceeds or fails. Report it with the
    /// hold's id.
    Decided { allow: bool, hold_id: u64 },
    /// Could not hold (table full, signal refused): fail closed, counted.
    Failed,
}

/// The current call as a hold binds it, built in per-CPU scratch (a hold
/// entry is too large for the BPF stack). One per program run.
pub struct Call {
    entry: *mut HoldEntry,
}

impl Call {
    /// Scratch for a call of `kind` with an all-zero target.
    #[inline(always)]
    fn new(kind: u16, port: u16) -> Option<Self> {
        let entry = HOLD_SCRATCH.get_ptr_mut(0)?;
        // SAFETY: per-CPU scratch, ours for this program run; the target
        // is written as u64 words at offsets the verifier can bound.
        unsafe {
            (*entry).call.kind = kind;
            (*entry).call.port = port;
            (*entry).call._pad = 0;
            let words = (*entry).call.target.as_mut_ptr().cast::<u64>();
            let mut i = 0;
            while i < TARGET_WORDS {
                *words.add(i) = 0;
                i += 1;
            }
        }
        Some(Self { entry })
    }

    /// A connect (or datagram) to `addr` (IPv6, or IPv4-mapped) and `port`.
    #[inline(always)]
    pub fn connect(kind: u16, addr: &[u8; 16], port: u16) -> Option<Self> {
        let call = Self::new(kind, port)?;
        // SAFETY: as in `new`; 16 bytes into a 512-byte target.
        let target = unsafe { &mut (*call.entry).call.target };
        target[..16].copy_from_slice(addr);
        Some(call)
    }

    /// A file operation on the first `len` bytes of the kernel buffer
    /// `path` (the rule-lookup path, at most PATH_KEY_BYTES).
    #[inline(always)]
    pub fn path(kind: u16, path: *const u8, len: usize) -> Option<Self> {
        let call = Self::new(kind, 0)?;
        call.copy_path(0, path, len);
        Some(call)
    }

    /// The second path of a two-path operation (a rename's destination).
    #[inline(always)]
    pub fn second_path(&self, path: *const u8, len: usize) {
        self.copy_path(HOLD_SECOND_PATH, path, len);
    }

    #[inline(always)]
    fn copy_path(&self, at: usize, path: *const u8, len: usize) {
        // Bounded for the verifier: at most 255 bytes from `at`, which is
        // 0 or 256, inside the 512-byte target.
        let len = len & 0xff;
        if len == 0 {
            return;
        }
        // SAFETY: reading `len` bytes of a kernel buffer the caller owns
        // into our scratch target, through the probe helper.
        unsafe {
            bpf_probe_read_kernel(
                (*self.entry)
                    .call
                    .target
                    .as_mut_ptr()
                    .add(at & 0x100)
                    .cast::<c_void>(),
                len as u32,
                path.cast::<c_void>(),
            );
        }
    }

    /// Whether this thread's hold is for this very call (so the call must
    /// consume its decision before any grant is considered).
    #[inline(always)]
    pub fn held(&self) -> bool {
        let pid_tgid = bpf_get_current_pid_tgid();
        let tid = pid_tgid as u32;
        match HOLDS.get_ptr(tid) {
            // SAFETY: our own thread's entry and our scratch.
            Some(entry) => unsafe { self.is(&*entry, (pid_tgid >> 32) as u32) },
            None => false,
        }
    }

    /// Whether `entry` (of this thread) holds this call of process `pid`.
    #[inline(always)]
    unsafe fn is(&self, entry: &HoldEntry, pid: u32) -> bool {
        // SAFETY: our scratch.
        let mine = unsafe { &(*self.entry).call };
        if entry.pid != pid || entry.call.kind != mine.kind || entry.call.port != mine.port {
            return false;
        }
        let a = entry.call.target.as_ptr().cast::<u64>();
        let b = mine.target.as_ptr().cast::<u64>();
        let mut i = 0;
        while i < TARGET_WORDS {
            // SAFETY: both targets are 512 bytes at 8-aligned offsets.
            if unsafe { *a.add(i) != *b.add(i) } {
                return false;
            }
            i += 1;
        }
        true
    }
}

/// Whether some thread may have a hold, given the daemon's
/// `Config::holds_settled`: the count of holds made (HOLDS_MADE) is
/// compared with the count at which the daemon last saw the HOLDS map
/// empty. Equal: no entry was made since the map was empty, so there is
/// none to find and [`settle`] can be skipped. Every hold is counted right
/// after its entry is inserted, by the thread that is then stopped, so its
/// call coming back always sees the count moved on (fail closed: a missing
/// slot says yes).
#[inline(always)]
pub fn holds_maybe(settled: u64) -> bool {
    match HOLDS_MADE.get_ptr(0) {
        // SAFETY: aligned pointer into the array value; a torn read is
        // impossible for an aligned u64.
        Some(made) => (unsafe { core::ptr::read_volatile(made) }) != settled,
        None => true,
    }
}

/// Counts a hold entry just inserted (see [`holds_maybe`]).
#[inline(always)]
fn count_made() {
    if let Some(made) = HOLDS_MADE.get_ptr_mut(0) {
        // SAFETY: aligned pointer into the array value; BPF atomic add.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::SeqCst }>(
                made, 1,
            );
        }
    }
}

/// The current thread's hold, for a call that would run on its own (its
/// budget refilled while a human decided): a decided hold is consumed and
/// applies to it (a denial must not turn into a run), a pending one stops
/// it again; None if the thread (of this process) has no hold. Matched by
/// thread and process only, not by the whole call, to stay cheap on the
/// allowed path: a signal handler's call in between would take the
/// decision instead, and the held call, made again, is held afresh.
#[inline(always)]
pub fn settle(stop_now: bool) -> Option<Hold> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let entry = HOLDS.get_ptr_mut(tid)?;
    // SAFETY: map value of our own thread's key.
    let (pid, state, hold_id) = unsafe { ((*entry).pid, (*entry).state, (*entry).hold_id) };
    if pid != (pid_tgid >> 32) as u32 {
        return None;
    }
    if state == HoldState::Allow.raw() || state == HoldState::Deny.raw() {
        let _ = HOLDS.remove(tid);
        return Some(Hold::Decided {
            allow: state == HoldState::Allow.raw(),
            hold_id,
        });
    }
    if stop_now && !send_stop() {
        let _ = HOLDS.remove(tid);
        emit::count_loss(LossReason::HoldFailed);
        return Some(Hold::Failed);
    }
    if !stop_now {
        // SAFETY: as above.
        unsafe { (*entry).stop_pending = 1 };
    }
    Some(Hold::StillPending)
}

/// Starts, continues or ends the hold of the current thread's `call`.
#[inline(always)]
pub fn hold(stop_now: bool, call: &Call) -> Hold {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let pid = (pid_tgid >> 32) as u32;
    if let Some(entry) = HOLDS.get_ptr_mut(tid) {
        // SAFETY: map value of our own thread's key; only this thread and
        // the daemon (after the stop) touch it.
        let (same, state, hold_id) =
            unsafe { (call.is(&*entry, pid), (*entry).state, (*entry).hold_id) };
        if same {
            if state == HoldState::Allow.raw() || state == HoldState::Deny.raw() {
                let _ = HOLDS.remove(tid);
                return Hold::Decided {
                    allow: state == HoldState::Allow.raw(),
                    hold_id,
                };
            }
            if stop_now && !send_stop() {
                let _ = HOLDS.remove(tid);
                emit::count_loss(LossReason::HoldFailed);
                return Hold::Failed;
            }
            if !stop_now {
                // SAFETY: as above.
                unsafe { (*entry).stop_pending = 1 };
            }
            return Hold::StillPending;
        }
        // Another call of this thread: judged afresh, and held in its own
        // right below (the entry is replaced).
    }
    if pid <= 1 {
        // Stopping init would stop the machine; never hold it.
        emit::count_loss(LossReason::HoldFailed);
        return Hold::Failed;
    }
    // SAFETY: helper without arguments. Boot-time nanoseconds: unique per
    // hold in practice, and sortable.
    let hold_id = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: our scratch, whose call part the caller built.
    let inserted = unsafe {
        let e = &mut *call.entry;
        e.hold_id = hold_id;
        e.pid = pid;
        e.state = HoldState::Pending.raw();
        e.stop_pending = u8::from(!stop_now);
        e._pad = [0; 2];
        HOLDS.insert(tid, e, 0)
    };
    if inserted.is_err() {
        emit::count_loss(LossReason::HoldFailed);
        return Hold::Failed;
    }
    count_made();
    if stop_now && !send_stop() {
        let _ = HOLDS.remove(tid);
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
    let Some(entry) = HOLDS.get_ptr_mut(tid) else {
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
