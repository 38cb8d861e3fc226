//! Identity cannot be left: an agent process that moves itself (or is
//! moved by another agent process) out of its agent's cgroup tree, or
//! makes a child outside it with clone3(CLONE_INTO_CGROUP), is killed
//! before it acts outside, and an `agent.escape` record names it.
//!
//! Tracepoints observe and cannot refuse, and by the time
//! cgroup_attach_task fires the process is already in its new cgroup, so
//! the agent it came from is kept apart from the cgroup: AGENT_PROCS
//! (tgid -> agent) is filled when an agent forks and when anyone places a
//! process into an agent, seeded by the daemon with the processes already
//! there, and emptied when a process is freed.
//!
//! The writer of the move is `current`: when it moved itself, SIGKILL from
//! here is pending before its write returns, so it never runs outside.
//! Another process moved (or a CLONE_INTO_CGROUP child) cannot be
//! signalled from here; it is marked in ESCAPED and killed at its next
//! system call exit (a child: on its way out of clone3, before it runs).
//! Only a move by an agent process counts: an operator or the daemon may
//! move agent processes wherever they like.
use aya_ebpf::{
    helpers::{bpf_get_current_task, generated::bpf_send_signal},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use guard_common::{
    ACTION_KILL_PENDING, ACTION_KILLED, AgentProc, ESCAPE_ATTACH, ESCAPE_CLONE, LossReason,
    maybe_refused,
};

use crate::{
    emit,
    guard::{
        AGENT_PROCS, ESCAPED, ESCAPES, GUARD_PIDS, cgroup_agent, cgroup_id, current_tgid, offsets,
        report_escape, start_ticks, task_cgroup, task_ids, tracked,
    },
    identity, refused,
};

const SIGKILL: u32 = 9;

/// tp_btf/cgroup_attach_task (include/trace/events/cgroup.h, unchanged
/// 5.x-6.18): `void (struct cgroup *dst_cgrp, const char *path, struct
/// task_struct *task, bool threadgroup)`. Fires after a successful write to
/// cgroup.procs or cgroup.threads, in the writer's context; `task` is the
/// moved thread (its group leader for cgroup.procs).
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn guard_cgroup_attach(ctx: BtfTracePointContext) -> i32 {
    let _ = try_attach(&ctx);
    0
}

/// tp_btf/sched_process_fork (include/trace/events/sched.h, unchanged
/// 5.x-6.18): `void (struct task_struct *parent, struct task_struct
/// *child)`, in the parent's context, before the child first runs.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn guard_fork(ctx: BtfTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

/// tp_btf/sched_process_free: `void (struct task_struct *p)`, when a task
/// is finally released. The group leader goes last, so its release ends
/// the process's entries.
#[btf_tracepoint(function = "sched_process_free")]
pub fn guard_free(ctx: BtfTracePointContext) -> i32 {
    let _ = try_free(&ctx);
    0
}

/// tp_btf/sys_exit (`void sys_exit(struct pt_regs *regs, long ret)`):
/// reports refusals of an agent's reach for the guard (refused.rs), and
/// kills a process marked in ESCAPED before it is back in user space.
/// Every other exit costs one comparison and one array read, the latter
/// until the first escape.
#[btf_tracepoint(function = "sys_exit")]
pub fn guard_sys_exit(ctx: BtfTracePointContext) -> i32 {
    let ret: i64 = ctx.arg(1);
    if maybe_refused(ret) {
        let _ = refused::observe(&ctx, ret);
    }
    if ESCAPES.get(0).is_none_or(|n| *n == 0) {
        return 0;
    }
    let tgid = current_tgid();
    // SAFETY: plain Copy value read whole.
    let Some(start) = (unsafe { ESCAPED.get(tgid) }).copied() else {
        return 0;
    };
    let Some(o) = offsets() else { return 0 };
    // SAFETY: helper without arguments; the pointer is only probe-read.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if start_ticks(&o, task) == Some(start) {
        kill_current();
    }
    0
}

#[inline(always)]
fn try_attach(ctx: &BtfTracePointContext) -> Option<()> {
    let o = offsets()?;
    let dst: *const u8 = ctx.arg(0);
    let path: *const u8 = ctx.arg(1);
    let task: *const u8 = ctx.arg(2);
    let (moved, _) = task_ids(&o, task)?;
    let start = start_ticks(&o, task)?;
    let dst_agent = cgroup_agent(&o, dst);
    let Some(from) = tracked(moved, start) else {
        // Not an agent process (or not known as one): placed into an
        // agent, it is one from now on.
        if let Some(to) = dst_agent {
            track(moved, to.cgroup_id, start);
        }
        return Some(());
    };
    if dst_agent
        .as_ref()
        .is_some_and(|to| to.cgroup_id == from.cgroup_id)
    {
        return Some(()); // moved within its own agent
    }
    let writer = current_tgid();
    let self_move = writer == moved;
    if !self_move && identity::current_agent().is_none() {
        // Moved by someone outside every agent (an operator, the daemon):
        // its identity follows the move.
        match dst_agent {
            Some(to) => track(moved, to.cgroup_id, start),
            None => {
                let _ = AGENT_PROCS.remove(moved);
            }
        }
        return Some(());
    }
    let action = if self_move && kill_current() {
        ACTION_KILLED
    } else {
        // The writer is an agent process helping another one out: it is
        // stopped too.
        if !self_move {
            kill_current();
        }
        ACTION_KILL_PENDING
    };
    mark_escaped(moved, start);
    let dst_id = cgroup_id(&o, dst).unwrap_or(0);
    report_escape(&from, moved, ESCAPE_ATTACH, action, dst_id, path);
    Some(())
}

#[inline(always)]
fn try_fork(ctx: &BtfTracePointContext) -> Option<()> {
    let o = offsets()?;
    let child: *const u8 = ctx.arg(1);
    let (tgid, pid) = task_ids(&o, child)?;
    if tgid != pid {
        // A thread: its process is already known. A new thread of a guard
        // process is the guard's too (signals and ptrace can name it).
        // SAFETY: plain Copy value read whole.
        if let Some(g) = unsafe { GUARD_PIDS.get(tgid) }.copied() {
            if g.tgid == tgid && GUARD_PIDS.insert(pid, g, 0).is_err() {
                emit::count_loss(LossReason::GuardFailed);
            }
        }
        return Some(());
    }
    let parent = identity::current_agent()?;
    let start = start_ticks(&o, child)?;
    track(tgid, parent.cgroup_id, start);
    let cgrp = task_cgroup(&o, child)?;
    if cgroup_agent(&o, cgrp).is_some_and(|a| a.cgroup_id == parent.cgroup_id) {
        return Some(());
    }
    // clone3(CLONE_INTO_CGROUP) aimed outside the agent: the parent dies
    // before clone3 returns, the child on its way out of it.
    kill_current();
    mark_escaped(tgid, start);
    let dst_id = cgroup_id(&o, cgrp).unwrap_or(0);
    report_escape(
        &parent,
        tgid,
        ESCAPE_CLONE,
        ACTION_KILL_PENDING,
        dst_id,
        core::ptr::null(),
    );
    Some(())
}

#[inline(always)]
fn try_free(ctx: &BtfTracePointContext) -> Option<()> {
    let o = offsets()?;
    let task: *const u8 = ctx.arg(0);
    let (tgid, pid) = task_ids(&o, task)?;
    // SAFETY: plain Copy values read whole. A newer process may already
    // hold the pid: only this task's own entries go.
    if let Some(g) = unsafe { GUARD_PIDS.get(pid) }.copied() {
        if g.tgid == tgid && start_ticks(&o, task) == Some(g.start_ticks) {
            let _ = GUARD_PIDS.remove(pid);
        }
    }
    if tgid != pid {
        return Some(());
    }
    let start = start_ticks(&o, task)?;
    if unsafe { AGENT_PROCS.get(tgid) }.is_some_and(|p| p.start_ticks == start) {
        let _ = AGENT_PROCS.remove(tgid);
    }
    if unsafe { ESCAPED.get(tgid) }.is_some_and(|s| *s == start) {
        let _ = ESCAPED.remove(tgid);
    }
    Some(())
}

#[inline(always)]
fn track(tgid: u32, agent_cgroup_id: u64, start_ticks: u64) {
    let entry = AgentProc {
        agent_cgroup_id,
        start_ticks,
    };
    if AGENT_PROCS.insert(tgid, entry, 0).is_err() {
        emit::count_loss(LossReason::GuardFailed);
    }
}

#[inline(always)]
fn mark_escaped(tgid: u32, start: u64) {
    if ESCAPED.insert(tgid, start, 0).is_err() {
        emit::count_loss(LossReason::GuardFailed);
        return;
    }
    if let Some(n) = ESCAPES.get_ptr_mut(0) {
        // SAFETY: a flag; racing writers all write 1.
        unsafe { *n = 1 };
    }
}

/// SIGKILL to the current process (every thread). False if the kernel
/// refused (init, a kernel thread, an exiting task).
#[inline(always)]
fn kill_current() -> bool {
    // SAFETY: helper with a plain integer argument.
    let ok = unsafe { bpf_send_signal(SIGKILL) } == 0;
    if !ok {
        emit::count_loss(LossReason::GuardFailed);
    }
    ok
}
