//! From a verdict to what the hook does: the ladder of guard_common
//! (audit → allow (→ budget) → grant → hold → deny), plus the kernel's
//! part of a hold.
use aya_ebpf::helpers::generated::bpf_get_current_task;
use guard_common::{CALL_IO_URING, Charge, Mode, Outcome, PF_IO_WORKER, Rung, Verdict};

use crate::{
    budget,
    hold::{self, Call, Hold},
    identity::Agent,
    offsets::{off, read_u32},
};

/// What the hook does with the call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Rewind the call (-ERESTARTNOINTR) with the thread stopped; it runs
    /// again when resumed (see hold.rs).
    Hold,
}

/// What to report about a call; None when it was already reported (a held
/// call restarted early by a SIGCONT, still undecided).
#[derive(Clone, Copy)]
pub struct Report {
    pub outcome: Outcome,
    /// The verdict as applied (what the event says).
    pub verdict: u8,
    pub hold_id: u64,
    pub grant_id: u32,
    /// CALL_* bits for the record.
    pub flags: u8,
}

pub struct Climbed {
    pub decision: Decision,
    pub report: Option<Report>,
}

/// How the hook can hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HoldBy {
    /// Send the stop now (LSM hooks may signal).
    StopNow,
    /// Leave the stop to tp_btf/sys_exit (cgroup socket hooks cannot).
    StopAtExit,
    /// Never hold: an `ask` is refused (calls that are only ever refused or
    /// allowed, such as mounts under freeze). Keeps the hold code, and its
    /// verification, out of those programs.
    Never,
}

/// Whether the current thread is an io_uring worker: its calls complete
/// into a ring, not back into a system call a signal could restart, so a
/// hold's -ERESTARTNOINTR would leak to the application. Holds there fail
/// closed (deny) instead.
#[inline(always)]
pub fn in_io_worker() -> bool {
    // SAFETY: helper without arguments; the pointer is only probe-read.
    let task = unsafe { bpf_get_current_task() };
    read_u32(task + off!(task_flags)) & PF_IO_WORKER != 0
}

/// Climbs the ladder for `agent`'s call with the policy's `verdict` from
/// `rule_id`. `class` is the budget the call draws on if it is allowed
/// (a guard_common::BudgetClass number; 0: none). Only for a call that can
/// be held (an `ask`, or an allowed call over an asking budget): `call`
/// describes the call as a hold binds it (hold.rs; None if it cannot be
/// described, which refuses it). `grant` looks up a covering grant: for
/// an `ask` (unless this is the thread's held call coming back for its
/// decision), and for an allowed call, whose budget a grant lifts.
#[inline(always)]
pub fn climb<C: FnOnce() -> Option<Call>, G: Fn() -> u32>(
    agent: &Agent,
    verdict: u8,
    rule_id: u32,
    class: u32,
    call: C,
    grant: G,
    by: HoldBy,
) -> Climbed {
    // Every io_uring call says so in its event, whatever the verdict.
    let io_uring = in_io_worker();
    let mut flags = if io_uring { CALL_IO_URING } else { 0 };
    let mode = agent.entry.mode;
    let agent_id = agent.entry.agent_id;
    let applied = guard_common::applied_verdict(mode, verdict, rule_id);
    let can_hold = !io_uring && by != HoldBy::Never && mode != Mode::Audit.raw();
    let ask = can_hold && applied == Verdict::Ask.raw();
    // Judged before the call is described, unless it is an ask (whose
    // held check comes first): an allowed call only needs describing when
    // its budget holds it.
    let mut early = None;
    if !ask {
        // An allowed call is charged to its budget, which may hold it; a
        // hold that cannot be made here is refused (io_uring, a hook that
        // never holds), with the io_uring flag saying why where it applies
        // (daemon/attribute.rs words it, `IO_URING_REASON`).
        let judged = guard_common::ladder(mode, verdict, rule_id, &grant, || {
            budget::charge(agent_id, class, &grant)
        });
        flags |= guard_common::budget::record_flags(judged.budget);
        if !can_hold {
            return judged_now(judged, flags);
        }
        if judged.rung != Rung::Hold {
            // A counted call of a thread with a hold may be its held call
            // coming back with the window refilled while a human decided:
            // the decision still applies (a denial must not become a run).
            // Looked for only while some thread may have a hold at all
            // (hold::holds_maybe): most counted calls skip the look-up.
            if judged.budget == Charge::Within && hold::holds_maybe(agent.holds_settled) {
                if let Some(held) = hold::settle(by == HoldBy::StopNow) {
                    return hold_now(held, judged, flags);
                }
            }
            return judged_now(judged, flags);
        }
        early = Some(judged);
    }
    // Straight-line on purpose: the call's scratch pointer must stay a
    // pointer for the verifier (6.12 loses it through a branchless select
    // of an Option kept across the ladder; measured).
    let Some(call) = call() else {
        // No scratch to describe the call: it cannot be held; fail closed
        // (cannot happen for index 0 of a per-CPU array).
        return deny_now(applied, flags);
    };
    let judged = match early {
        // Over an asking budget: held like an ask.
        Some(judged) => judged,
        None => {
            let held = call.held();
            guard_common::ladder(
                mode,
                verdict,
                rule_id,
                || if held { 0 } else { grant() },
                || Charge::Free,
            )
        }
    };
    if judged.rung != Rung::Hold {
        return judged_now(judged, flags);
    }
    hold_now(hold::hold(by == HoldBy::StopNow, &call), judged, flags)
}

/// What a hold of a call judged `judged` means for it, and what to report.
#[inline(always)]
fn hold_now(held: Hold, judged: guard_common::Judged, flags: u8) -> Climbed {
    let report = |outcome, hold_id| {
        Some(Report {
            outcome,
            verdict: judged.verdict,
            hold_id,
            grant_id: 0,
            flags,
        })
    };
    let (decision, report) = match held {
        Hold::Started { hold_id } => (Decision::Hold, report(Outcome::Held, hold_id)),
        // Restarted early by someone else's SIGCONT: stopped again, and the
        // hold was already reported.
        Hold::StillPending => (Decision::Hold, None),
        // The held call itself, decided: its own event, with the hold's id,
        // says what actually ran.
        Hold::Decided {
            allow: true,
            hold_id,
        } => (Decision::Allow, report(Outcome::Allowed, hold_id)),
        Hold::Decided {
            allow: false,
            hold_id,
        } => (Decision::Deny, report(Outcome::Denied, hold_id)),
        // Could not hold: fail closed, reported as denied.
        Hold::Failed => (Decision::Deny, report(Outcome::Denied, 0)),
    };
    Climbed { decision, report }
}

/// A rung that needs no hold, as the decision and its report. A `Hold`
/// rung here cannot be held: refused.
#[inline(always)]
fn judged_now(judged: guard_common::Judged, flags: u8) -> Climbed {
    let (decision, outcome, grant_id) = match judged.rung {
        Rung::Audit => (Decision::Allow, Outcome::Audited, 0),
        Rung::Allow => (Decision::Allow, Outcome::Allowed, 0),
        Rung::Grant(id) => (Decision::Allow, Outcome::Allowed, id),
        Rung::Hold | Rung::Deny => (Decision::Deny, Outcome::Denied, 0),
    };
    Climbed {
        decision,
        report: Some(Report {
            outcome,
            verdict: judged.verdict,
            hold_id: 0,
            grant_id,
            flags,
        }),
    }
}

#[inline(always)]
fn deny_now(verdict: u8, flags: u8) -> Climbed {
    Climbed {
        decision: Decision::Deny,
        report: Some(Report {
            outcome: Outcome::Denied,
            verdict,
            hold_id: 0,
            grant_id: 0,
            flags,
        }),
    }
}

/// The verdict a call gets when its object has no path the policy can
/// name: refused, whatever the rules (they cannot be matched).
pub const UNKNOWN_PATH: (u8, u32) = (Verdict::Deny as u8, guard_common::RULE_DEFAULT);
