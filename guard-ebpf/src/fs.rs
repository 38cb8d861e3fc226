//! Destructive file operations under BPF LSM: unlink, rmdir, truncate;
//! and the delete observer (tp_btf/sys_enter) for kernels without it.
//!
//! Hook prototypes (include/linux/lsm_hook_defs.h; BPF LSM programs get one
//! more argument, the return value of the BPF LSM programs before them):
//! - `int path_unlink(const struct path *dir, struct dentry *dentry)` and
//!   `int path_rmdir(const struct path *dir, struct dentry *dentry)`,
//!   unchanged from 5.10 to 6.18; on the kernel's sleepable-hook list
//!   from 6.2 on, which is what allows bpf_d_path there;
//! - `int path_truncate(const struct path *path)` (truncate(2); on 6.1
//!   also ftruncate and O_TRUNC), unchanged since 2.6.29;
//! - `int file_truncate(struct file *file)` (6.2+: ftruncate, an open with
//!   O_TRUNC, io_uring's ftruncate), added for Landlock's truncate right.
use aya_ebpf::{
    bindings::pt_regs,
    cty::c_void,
    helpers::generated::{bpf_probe_read_kernel, bpf_probe_read_user_str},
    programs::{BtfTracePointContext, LsmContext},
};
use guard_common::{
    AT_FDCWD, EPERM, ERESTARTNOINTR, EventKind, FileRecord, LossReason, NR_RMDIR, NR_UNLINK,
    NR_UNLINKAT, ObservedDeleteRecord, Outcome, PATH_UNKNOWN, RULE_DEFAULT,
};

use crate::{
    decide::{self, Decision, HoldBy, Report, UNKNOWN_PATH},
    emit, grant,
    identity::{self, Agent},
    maps::{EVENTS, PATH_RULES, SLOT_A, Scratch},
    offsets::{self, off},
    paths::{self, Built},
};

pub enum GuardError {
    /// The per-CPU scratch buffer was unavailable (cannot happen for index 0).
    Scratch,
    /// KERNEL_OFFSETS were not set by the loader.
    NoOffsets,
}

/// The single conversion from a decision to the LSM return code. Only
/// constants: the 6.12 verifier requires LSM return values provably in
/// [-4095, 0] and loses the range of a passed-through value (measured: a
/// clamped copy of the previous program's errno was rejected). So a refusal
/// by an earlier BPF LSM program stays a refusal, reported as EPERM.
///
/// Errors fail closed: the calling task is an agent (or we could not even
/// tell), and a call we cannot judge must not happen.
#[inline(always)]
pub fn lsm_verdict(result: Result<Decision, GuardError>) -> i32 {
    match result {
        Ok(Decision::Allow) => 0,
        Ok(Decision::Hold) => -ERESTARTNOINTR,
        Ok(Decision::Deny) | Err(_) => -EPERM,
    }
}

/// The agent of the current task and the scratch area, or None when the
/// call is not an agent's (allow, no event). Fails closed without offsets.
#[inline(always)]
pub fn agent_and_scratch() -> Result<Option<(Agent, &'static mut Scratch)>, GuardError> {
    let Some(agent) = identity::current_agent() else {
        return Ok(None);
    };
    if !offsets::provided() {
        return Err(GuardError::NoOffsets);
    }
    let s = paths::scratch().ok_or(GuardError::Scratch)?;
    Ok(Some((agent, s)))
}

/// The delete rule for the path in key `slot`: (verdict, rule id), the
/// agent's default if none matches, a refusal if the path is unknown.
#[inline(always)]
pub fn path_rule(agent: &Agent, s: &Scratch, slot: usize, built: Built) -> (u8, u32) {
    if built.state == PATH_UNKNOWN {
        return UNKNOWN_PATH;
    }
    match PATH_RULES.get(paths::key(s, slot)) {
        Some(rule) => (rule.verdict, rule.rule_id),
        None => (agent.entry.delete_default, RULE_DEFAULT),
    }
}

/// The live grant covering the path in key `slot`, or 0 (also for an
/// unknown path, which no grant can name).
#[inline(always)]
pub fn path_grant(agent: &Agent, s: &Scratch, slot: usize, built: Built) -> u32 {
    if built.state == PATH_UNKNOWN {
        0
    } else {
        grant::for_path(agent.entry.agent_id, paths::key(s, slot)).unwrap_or(0)
    }
}

/// Judges a call on the one path in key A, reports it, and says what to
/// do.
#[inline(always)]
fn judge_one(kind: EventKind, agent: &Agent, s: &Scratch, built: Built) -> Decision {
    let (verdict, rule_id) = path_rule(agent, s, SLOT_A, built);
    let climbed = decide::climb(
        agent,
        verdict,
        rule_id,
        // Every call judged here destroys data: unlink, rmdir, truncate.
        guard_common::BudgetClass::Deletes.raw(),
        || paths::held_call(kind, s, SLOT_A, built),
        || path_grant(agent, s, SLOT_A, built),
        HoldBy::StopNow,
    );
    if let Some(report) = climbed.report {
        emit_file(kind, agent, &report, rule_id, s, built);
    }
    climbed.decision
}

/// path_unlink / path_rmdir. `WALK` selects how the directory's path is
/// built: bpf_d_path (kernels that allow it in these hooks) or our own
/// dentry walk. Two programs per hook exist; the loader keeps the one the
/// kernel accepts, since a program that merely mentions bpf_d_path is
/// refused where it is not allowed.
#[inline(always)]
pub fn try_delete<const WALK: bool>(
    ctx: &LsmContext,
    kind: EventKind,
) -> Result<Decision, GuardError> {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        // A BPF LSM program before us already refused the call.
        return Ok(Decision::Deny);
    }
    let Some((agent, s)) = agent_and_scratch()? else {
        return Ok(Decision::Allow);
    };
    let built = paths::dir_entry::<WALK>(s, SLOT_A, agent.entry.agent_id, ctx.arg(0), ctx.arg(1));
    Ok(judge_one(kind, &agent, s, built))
}

/// path_truncate (`ctx.arg(0)` is the `struct path *`) and file_truncate
/// (`struct file *`; FILE selects). WALK: the dentry walk, where the hook
/// may not call bpf_d_path.
#[inline(always)]
pub fn try_truncate<const FILE: bool, const WALK: bool>(
    ctx: &LsmContext,
) -> Result<Decision, GuardError> {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return Ok(Decision::Deny);
    }
    let Some((agent, s)) = agent_and_scratch()? else {
        return Ok(Decision::Allow);
    };
    let arg: u64 = ctx.arg(0);
    let path = if FILE { arg + off!(file_f_path) } else { arg };
    let built = paths::object::<WALK>(s, SLOT_A, agent.entry.agent_id, path);
    Ok(judge_one(EventKind::FileTruncate, &agent, s, built))
}

/// Writes a one-path record in place in the ring buffer: it is too large
/// for the BPF stack.
#[inline(always)]
pub fn emit_file(
    kind: EventKind,
    agent: &Agent,
    report: &Report,
    rule_id: u32,
    s: &Scratch,
    built: Built,
) {
    let Some(mut entry) = EVENTS.reserve::<FileRecord>(0) else {
        emit::count_loss(LossReason::RingbufFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    let header = emit::judged_header(kind, agent, report, rule_id);
    // SAFETY: `rec` points at a reserved, exclusively owned record.
    unsafe {
        (*rec).header = header;
        paths::copy_into(&raw mut (*rec).path, s, SLOT_A, built, report.flags);
    }
    entry.submit(emit::wakeup(emit::urgent(report)));
}

/// tp_btf/sys_enter (`void sys_enter(struct pt_regs *regs, long id)`), only
/// attached on kernels without BPF LSM: records agents' unlink, unlinkat and
/// rmdir so that processes no backend can block are still seen. Never
/// blocks; returns nothing the kernel acts on.
#[inline(always)]
pub fn try_observe_delete(ctx: &BtfTracePointContext) -> Result<(), GuardError> {
    let nr: i64 = ctx.arg(1);
    if nr != NR_UNLINK && nr != NR_UNLINKAT && nr != NR_RMDIR {
        return Ok(());
    }
    let Some(agent) = identity::current_agent() else {
        return Ok(());
    };
    let regs: *const pt_regs = ctx.arg(0);
    let mut r = PtRegsArgs::default();
    // SAFETY: reading the syscall's saved registers through the probe
    // helper; pt_regs is the x86_64 user ABI layout.
    unsafe {
        bpf_probe_read_kernel(
            (&raw mut r).cast::<c_void>(),
            size_of::<PtRegsArgs>() as u32,
            (&raw const (*regs).rdx).cast::<c_void>(),
        );
    }
    // unlink(path), rmdir(path), unlinkat(dirfd, path, flags)
    let (dirfd, path_ptr, flags) = if nr == NR_UNLINKAT {
        (r.rdi as i32, r.rsi, r.rdx as u32)
    } else {
        (AT_FDCWD, r.rdi, 0)
    };
    let Some(mut entry) = EVENTS.reserve::<ObservedDeleteRecord>(0) else {
        emit::count_loss(LossReason::RingbufFull);
        return Ok(());
    };
    let rec = entry.as_mut_ptr();
    let mut header = emit::header(EventKind::FileObserved.raw(), &agent);
    header.outcome = Outcome::Observed.raw();
    // SAFETY: `rec` is a reserved record we own; the user pointer is read
    // through the bounded probe helper.
    unsafe {
        (*rec).header = header;
        (*rec).nr = nr as u32;
        (*rec).dirfd = dirfd;
        (*rec).flags = flags;
        let n = bpf_probe_read_user_str(
            (*rec).path.as_mut_ptr().cast::<c_void>(),
            256,
            path_ptr as *const c_void,
        );
        (*rec).path_len = if n > 0 { (n - 1) as u32 } else { 0 };
    }
    // Nobody waits on an observation: batched (a wakeup per delete made
    // an observed unlink 4.5 times as slow; docs/performance.md).
    entry.submit(emit::wakeup(false));
    Ok(())
}

/// The tail of x86_64 `struct pt_regs` from rdx to rdi (rdx, rsi, rdi):
/// the first three syscall arguments are rdi, rsi, rdx.
#[repr(C)]
#[derive(Default)]
struct PtRegsArgs {
    rdx: u64,
    rsi: u64,
    rdi: u64,
}
