//! Writing records to the ring buffer, and counting what could not be written.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_boot_ns},
    },
};
use guard_common::{EventHeader, EventKind, LossReason, Outcome, Verdict};

use crate::{
    decide::Report,
    identity::Agent,
    maps::{EVENTS, LOSSES},
    offsets::{off, read_u64},
};

/// Wake the reader only once this much is queued; below it, the daemon's
/// drain timer collects records. A wakeup is not just the helper's cost:
/// the woken reader preempts the very call that made the record, so each
/// one charged the guarded connect with the reader's whole slice (measured:
/// an allowed connect's program took 9.9 us per call with a wakeup every
/// 8 KiB, 0.96 us with none; docs/performance.md). A quarter of the ring
/// still leaves the reader three quarters of headroom under a burst.
const WAKEUP_BYTES: u64 = 1024 * 1024;

/// Fills the parts of a header every record shares.
#[inline(always)]
pub fn header(kind: u16, agent: &Agent) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    EventHeader {
        kind,
        outcome: 0,
        verdict: 0,
        agent_id: agent.entry.agent_id,
        // SAFETY: helpers without arguments.
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        agent_cgroup_id: agent.cgroup_id,
        hold_id: 0,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        rule_id: 0,
        grant_id: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        exec_id: exec_id(),
    }
}

/// The current task's `self_exec_id` (0 where the loader had no offset).
#[inline(always)]
fn exec_id() -> u64 {
    let off = off!(task_self_exec_id);
    if off == 0 {
        return 0;
    }
    // SAFETY: helper without arguments; the pointer is only probe-read.
    let task = unsafe { bpf_get_current_task() };
    read_u64(task + off)
}

/// The header of a judged call's record.
#[inline(always)]
pub fn judged_header(kind: EventKind, agent: &Agent, report: &Report, rule_id: u32) -> EventHeader {
    let mut h = header(kind.raw(), agent);
    h.outcome = report.outcome.raw();
    h.verdict = report.verdict;
    h.rule_id = rule_id;
    h.hold_id = report.hold_id;
    h.grant_id = report.grant_id;
    h
}

/// Holds, denials and decided holds wake the reader now (on-call waits
/// for them); allowed and audited calls ride the batch.
#[inline(always)]
pub fn urgent(report: &Report) -> bool {
    report.hold_id != 0 || !matches!(report.outcome, Outcome::Allowed | Outcome::Audited)
}

/// Whether a call of `kind` with this report makes an event. Every call
/// does, except a datagram the policy simply allows: datagrams are judged
/// per message, not per flow (a DNS or QUIC client, or syslog on a unix
/// socket, sends thousands), so only refused, held, granted, decided and
/// audit-mode ones are reported. Connects are reported whatever the
/// outcome.
#[inline(always)]
pub fn reported(kind: EventKind, report: &Report) -> bool {
    let datagram = matches!(kind, EventKind::NetSend | EventKind::NetUnixSend);
    // A datagram the budget stopped is reported: its verdict is allow.
    !(datagram
        && report.verdict == Verdict::Allow.raw()
        && report.hold_id == 0
        && report.flags & guard_common::CALL_BUDGET == 0)
}

/// Submits `record`, or counts it as lost. `urgent` records (decisions a
/// human or a test waits for) wake the reader at once.
#[inline(always)]
pub fn submit<T: Copy + 'static>(record: &T, urgent: bool) {
    match EVENTS.reserve::<T>(0) {
        Some(mut slot) => {
            slot.write(*record);
            slot.submit(wakeup(urgent));
        }
        None => count_loss(LossReason::RingbufFull),
    }
}

/// Submit flags: `urgent` records (holds, denials: a human, the daemon or
/// a test waits for them) wake the reader at once; the rest only when the
/// ring is filling up.
#[inline(always)]
pub fn wakeup(urgent: bool) -> u64 {
    let flags = if urgent || EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flags as u64
}

#[inline(always)]
pub fn count_loss(reason: LossReason) {
    if let Some(counter) = LOSSES.get_ptr_mut(reason.raw()) {
        // SAFETY: per-CPU slot; programs on this CPU do not preempt each other
        // for the same slot in the contexts we run in.
        unsafe { *counter += 1 };
    }
}
