//! Self-defense: maps and kernel-struct readers shared by `escape.rs`
//! (identity cannot be left) and `tamper.rs` (the guard's processes, files
//! and kernel objects are off limits to agents).
//!
//! Struct members are read with bpf_probe_read_kernel at offsets userspace
//! took from the running kernel's BTF (`GUARD_OFFSETS`); a zero `task_tgid`
//! means the loader gave none, and every program then stands aside.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, HashMap},
};
use guard_common::{
    AgentProc, GuardOffsets, GuardProcess, InodeKey, MAX_CGROUP_LEVEL, NS_PER_TICK, TamperRecord,
};

use crate::{
    emit,
    identity::Agent,
    maps::{AGENTS, CONFIG, EVENTS},
};

/// Written by the daemon at load time (see `GuardOffsets`).
#[unsafe(no_mangle)]
static GUARD_OFFSETS: GuardOffsets = GuardOffsets {
    task_pid: 0,
    task_tgid: 0,
    task_start_boottime: 0,
    task_group_leader: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_level: 0,
    cgroup_ancestors: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    file_f_path: 0,
    file_f_mode: 0,
    path_dentry: 0,
    dentry_d_parent: 0,
    dentry_d_inode: 0,
    dentry_d_sb: 0,
    inode_i_ino: 0,
    super_block_s_dev: 0,
    super_block_s_magic: 0,
    _pad: 0,
};

/// tgid -> the agent it belongs to, kept apart from the cgroup so that the
/// kernel still knows it after the process has moved (see escape.rs).
#[map]
pub static AGENT_PROCS: HashMap<u32, AgentProc> = HashMap::with_max_entries(65536, 0);

/// tgid -> start ticks: processes that left their agent and are to be
/// killed when they next leave a system call.
#[map]
pub static ESCAPED: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// Slot 0 is non-zero once anything was put in ESCAPED: until then the
/// sys_exit check costs one array read.
#[map]
pub static ESCAPES: Array<u64> = Array::with_max_entries(1, 0);

/// tgid -> a process of the guard (the daemon, `run` launchers).
#[map]
pub static GUARD_PIDS: HashMap<u32, GuardProcess> = HashMap::with_max_entries(4096, 0);

/// Directories and files (state dir, policy, chain key, event logs) that
/// no agent process may open, keyed by (device, inode).
#[map]
pub static PROTECTED: HashMap<InodeKey, u32> = HashMap::with_max_entries(256, 0);

#[inline(always)]
pub fn offsets() -> Option<GuardOffsets> {
    // SAFETY: plain read of a read-only global.
    let o = unsafe { core::ptr::read_volatile(&GUARD_OFFSETS) };
    (o.task_tgid != 0).then_some(o)
}

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub fn read<T>(base: *const u8, off: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: the probe helper checks the address; a bad one fails.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()).ok() }
}

/// (tgid, pid) of a task.
#[inline(always)]
pub fn task_ids(o: &GuardOffsets, task: *const u8) -> Option<(u32, u32)> {
    Some((read(task, o.task_tgid)?, read(task, o.task_pid)?))
}

/// When the task's process started, in /proc's USER_HZ ticks.
#[inline(always)]
pub fn start_ticks(o: &GuardOffsets, task: *const u8) -> Option<u64> {
    let leader: *const u8 = read(task, o.task_group_leader)?;
    let ns: u64 = read(leader, o.task_start_boottime)?;
    Some(ns / NS_PER_TICK)
}

/// The task's cgroup in the v2 hierarchy.
#[inline(always)]
pub fn task_cgroup(o: &GuardOffsets, task: *const u8) -> Option<*const u8> {
    let cset: *const u8 = read(task, o.task_cgroups)?;
    read(cset, o.css_set_dfl_cgrp)
}

/// A cgroup's id (its kernfs node id, the inode number of its directory).
#[inline(always)]
pub fn cgroup_id(o: &GuardOffsets, cgrp: *const u8) -> Option<u64> {
    let kn: *const u8 = read(cgrp, o.cgroup_kn)?;
    read(kn, o.kernfs_node_id)
}

/// The agent whose cgroup is `cgrp` or one of its ancestors: the same
/// lookup as identity::current_agent, for a cgroup that is not the
/// current task's.
#[inline(always)]
pub fn cgroup_agent(o: &GuardOffsets, cgrp: *const u8) -> Option<Agent> {
    let levels = CONFIG.get(0)?.agent_levels;
    let depth: i32 = read(cgrp, o.cgroup_level)?;
    let mut level = 0u32;
    while level <= MAX_CGROUP_LEVEL {
        if level as i32 > depth {
            return None;
        }
        if levels & (1u64 << level) != 0 {
            let slot = o.cgroup_ancestors + level * 8;
            let ancestor: *const u8 = read(cgrp, slot)?;
            let id = cgroup_id(o, ancestor)?;
            // SAFETY: AgentEntry is Copy and read whole.
            if let Some(entry) = unsafe { AGENTS.get(&id) } {
                return Some(Agent {
                    cgroup_id: id,
                    entry: *entry,
                });
            }
        }
        level += 1;
    }
    None
}

/// The agent `tgid` was last known to belong to, if that entry is its own
/// (not a reused pid's) and the agent is still guarded.
#[inline(always)]
pub fn tracked(tgid: u32, start: u64) -> Option<Agent> {
    // SAFETY: plain Copy values read whole.
    let proc = unsafe { *AGENT_PROCS.get(&tgid)? };
    if proc.start_ticks != start {
        return None;
    }
    let entry = unsafe { *AGENTS.get(&proc.agent_cgroup_id)? };
    Some(Agent {
        cgroup_id: proc.agent_cgroup_id,
        entry,
    })
}

/// Whether `task` is a process of the guard itself.
#[inline(always)]
pub fn is_guard_process(o: &GuardOffsets, task: *const u8) -> Option<u32> {
    let (tgid, _) = task_ids(o, task)?;
    // SAFETY: plain Copy value read whole.
    let guard = unsafe { *GUARD_PIDS.get(&tgid)? };
    (guard.start_ticks == start_ticks(o, task)?).then_some(tgid)
}

/// The current thread group id.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Reports a `guard.tamper` record; always urgent (a refusal on-call
/// wants to see at once).
#[inline(always)]
pub fn report_tamper(
    agent: &Agent,
    what: u32,
    action: u32,
    target_pid: u32,
    arg: u32,
    protected: InodeKey,
) {
    let Some(mut slot) = EVENTS.reserve::<TamperRecord>(0) else {
        emit::count_loss(guard_common::LossReason::RingbufFull);
        return;
    };
    let mut header = emit::header(guard_common::EventKind::GuardTamper.raw(), agent);
    header.outcome = guard_common::Outcome::Denied.raw();
    header.verdict = guard_common::Verdict::Deny.raw();
    slot.write(TamperRecord {
        header,
        what,
        action,
        target_pid,
        arg,
        protected,
    });
    slot.submit(emit::wakeup(true));
}
