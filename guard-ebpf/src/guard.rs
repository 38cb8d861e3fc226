//! Self-defense: maps and kernel-struct readers shared by `escape.rs`
//! (identity cannot be left) and `tamper.rs` (the guard's processes, files
//! and kernel objects are off limits to agents).
//!
//! Struct members are read with bpf_probe_read_kernel at offsets userspace
//! took from the running kernel's BTF (`GUARD_OFFSETS`); a zero `task_tgid`
//! means the loader gave none, and every program then stands aside.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        generated::bpf_ktime_get_boot_ns,
    },
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap},
};
use guard_common::{
    ACTION_REFUSED, AgentProc, EscapeRecord, EventKind, GuardOffsets, GuardProcess, InodeKey,
    ListenKey, LossReason, MAX_CGROUP_LEVEL, MAX_PROTECTED_DEPTH, NS_PER_TICK, Outcome,
    REFUSAL_BURST, REFUSAL_CLASSES, REFUSAL_ESCAPE, REFUSAL_INTERVAL_NS, RefusalBudget,
    RefusalCounts, TamperRecord, Verdict,
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

/// tgid -> a process of the guard (the daemon, `run` launchers), and
/// thread id -> the same for each of their threads (kept by escape.rs's
/// fork and free hooks).
#[map]
pub static GUARD_PIDS: HashMap<u32, GuardProcess> = HashMap::with_max_entries(8192, 0);

/// Agent cgroup id -> how many self-defense records each class may still
/// send (see guard_common::RefusalBudget). LRU: an agent long gone makes
/// room, and its allowance starts afresh.
#[map]
pub static REFUSAL_BUDGET: LruHashMap<u64, RefusalBudget> = LruHashMap::with_max_entries(4096, 0);

/// Agent cgroup id -> records held back by the allowance, per CPU (no
/// atomics on this target; the daemon sums the CPUs).
#[map]
pub static REFUSAL_SUPPRESSED: LruPerCpuHashMap<u64, RefusalCounts> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// Directories and files (state dir, policy, chain key, event logs) that
/// no agent process may open, keyed by (device, inode).
#[map]
pub static PROTECTED: HashMap<InodeKey, u32> = HashMap::with_max_entries(256, 0);

/// (TCP port, address prefix) -> the daemon's surface listening there
/// (guard_common::SURFACE_*): where no agent may connect, whatever its
/// policy (net.rs). Filled by the daemon for each listen address: the
/// address itself, or every local address for a wildcard one (about 4
/// entries per listener plus one per host address; not preallocated).
#[map]
pub static GUARD_LISTEN: LpmTrie<ListenKey, u32> = LpmTrie::with_max_entries(4096, 0);

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
            if let Some(entry) = unsafe { AGENTS.get(id) } {
                return Some(Agent {
                    cgroup_id: id,
                    entry: *entry,
                    // Never skips a hold look-up (see hold::holds_maybe).
                    holds_settled: guard_common::HOLDS_UNSETTLED,
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
    let proc = unsafe { *AGENT_PROCS.get(tgid)? };
    if proc.start_ticks != start {
        return None;
    }
    let entry = unsafe { *AGENTS.get(proc.agent_cgroup_id)? };
    Some(Agent {
        cgroup_id: proc.agent_cgroup_id,
        entry,
        holds_settled: guard_common::HOLDS_UNSETTLED,
    })
}

/// Whether `task` is a process of the guard itself.
#[inline(always)]
pub fn is_guard_process(o: &GuardOffsets, task: *const u8) -> Option<u32> {
    let (tgid, _) = task_ids(o, task)?;
    // SAFETY: plain Copy value read whole.
    let guard = unsafe { *GUARD_PIDS.get(tgid)? };
    (guard.start_ticks == start_ticks(o, task)?).then_some(tgid)
}

/// The guard process that pid or thread id `id` (as a system call names
/// it, in the host's pid namespace) belongs to. Without the task at hand
/// its start cannot be compared; entries go when their task is freed
/// (escape.rs), and a thread's only while its process's entry is there.
#[inline(always)]
pub fn guard_target(id: u32) -> Option<u32> {
    // SAFETY: plain Copy values read whole.
    let entry = unsafe { *GUARD_PIDS.get(id)? };
    if entry.tgid != id {
        let process = unsafe { *GUARD_PIDS.get(entry.tgid)? };
        if process.start_ticks != entry.start_ticks {
            return None;
        }
    }
    Some(entry.tgid)
}

/// The protected directory or file covering `dentry`, if any: the dentry
/// itself or a parent in its filesystem (bind mounts share dentries, so
/// every view of a protected directory is covered).
#[inline(always)]
pub fn protected(o: &GuardOffsets, dentry: *const u8) -> Option<InodeKey> {
    let mut d = dentry;
    let mut depth = 0u32;
    while depth < MAX_PROTECTED_DEPTH {
        let inode: *const u8 = read(d, o.dentry_d_inode)?;
        // A negative dentry (a name about to be created) has no inode.
        if !inode.is_null() {
            let sb: *const u8 = read(d, o.dentry_d_sb)?;
            let dev: u32 = read(sb, o.super_block_s_dev)?;
            let ino: u64 = read(inode, o.inode_i_ino)?;
            let key = InodeKey {
                dev: dev as u64,
                ino,
            };
            if PROTECTED.get_ptr(key).is_some() {
                return Some(key);
            }
        }
        let parent: *const u8 = read(d, o.dentry_d_parent)?;
        if parent == d {
            return None;
        }
        d = parent;
        depth += 1;
    }
    None
}

/// Whether the agent may send one more self-defense record of `class`
/// now: GCRA, [`REFUSAL_BURST`] at once, then one per
/// [`REFUSAL_INTERVAL_NS`]. A record over the allowance is counted in the
/// agent's REFUSAL_SUPPRESSED, which the daemon reports in one event.
/// Racing CPUs may let one extra through; none is both sent and counted.
#[inline(always)]
pub fn within_budget(agent_cgroup_id: u64, class: u32) -> bool {
    let c = class as usize & (REFUSAL_CLASSES - 1);
    let mut budget = REFUSAL_BUDGET.get_ptr_mut(agent_cgroup_id);
    if budget.is_none() {
        let fresh = RefusalBudget::default();
        let _ = REFUSAL_BUDGET.insert(agent_cgroup_id, fresh, BPF_NOEXIST as u64);
        budget = REFUSAL_BUDGET.get_ptr_mut(agent_cgroup_id);
    }
    // Without an allowance to draw on, report: a refusal said is better
    // than one lost.
    let Some(b) = budget else { return true };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: a value of our map; `c` is masked into the arrays' bounds.
    unsafe {
        let next = (*b).next_ns[c];
        let tat = if next > now { next } else { now };
        if tat - now > (REFUSAL_BURST - 1) * REFUSAL_INTERVAL_NS {
            count_suppressed(agent_cgroup_id, c);
            return false;
        }
        (*b).next_ns[c] = tat + REFUSAL_INTERVAL_NS;
    }
    true
}

/// The current thread group id.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
fn count_suppressed(agent_cgroup_id: u64, c: usize) {
    let mut counts = REFUSAL_SUPPRESSED.get_ptr_mut(agent_cgroup_id);
    if counts.is_none() {
        let fresh = RefusalCounts::default();
        let _ = REFUSAL_SUPPRESSED.insert(agent_cgroup_id, fresh, BPF_NOEXIST as u64);
        counts = REFUSAL_SUPPRESSED.get_ptr_mut(agent_cgroup_id);
    }
    match counts {
        // SAFETY: this CPU's value; `c` is within bounds (masked by the caller).
        Some(n) => unsafe { (*n).suppressed[c] += 1 },
        // Neither sent nor counted would be a silent loss: say so.
        None => emit::count_loss(LossReason::RingbufFull),
    }
}

/// Reports a `guard.tamper` record within the agent's allowance; always
/// urgent (a refusal on-call wants to see at once). `call` is a
/// guard_common::Call number, 0 where the hook does not know it.
#[inline(always)]
pub fn report_tamper(
    agent: &Agent,
    call: u32,
    what: u32,
    target_pid: u32,
    arg: u32,
    protected: InodeKey,
) {
    if !within_budget(agent.cgroup_id, what) {
        return;
    }
    let Some(mut slot) = EVENTS.reserve::<TamperRecord>(0) else {
        emit::count_loss(LossReason::RingbufFull);
        return;
    };
    let mut header = emit::header(EventKind::GuardTamper.raw(), agent);
    header.outcome = Outcome::Denied.raw();
    header.verdict = Verdict::Deny.raw();
    slot.write(TamperRecord {
        header,
        what,
        action: ACTION_REFUSED,
        target_pid,
        arg,
        protected,
        call,
        _pad: 0,
    });
    slot.submit(emit::wakeup(true));
}

/// Reports an `agent.escape` record within the agent's allowance, refused
/// and killed alike: a killed process cannot loop, but its parent can fork
/// one escaper after another, each a record. Nothing but the record waits
/// on the allowance: the kill is sent either way.
#[inline(always)]
pub fn report_escape(from: &Agent, moved: u32, how: u32, action: u32, dst: u64, path: *const u8) {
    if !within_budget(from.cgroup_id, REFUSAL_ESCAPE) {
        return;
    }
    let Some(mut slot) = EVENTS.reserve::<EscapeRecord>(0) else {
        emit::count_loss(LossReason::RingbufFull);
        return;
    };
    let rec = slot.as_mut_ptr();
    let mut header = emit::header(EventKind::AgentEscape.raw(), from);
    header.outcome = Outcome::Denied.raw();
    header.verdict = Verdict::Deny.raw();
    // SAFETY: `rec` is a reserved record we own; the path is read through
    // the bounded probe helper.
    unsafe {
        (*rec).header = header;
        (*rec).moved_pid = moved;
        (*rec).how = how;
        (*rec).action = action;
        (*rec).dst_cgroup_id = dst;
        (*rec).path_len = 0;
        if !path.is_null() {
            if let Ok(s) = bpf_probe_read_kernel_str_bytes(path, &mut (*rec).path) {
                (*rec).path_len = s.len() as u32;
            }
        }
    }
    slot.submit(emit::wakeup(true));
}
