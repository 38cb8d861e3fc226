//! The guard's processes, files and kernel objects are off limits to agent
//! processes: BPF LSM hooks, loaded where the kernel allows them (the
//! loader attaches them only together with the delete hooks). Each refusal
//! is a `guard.tamper` record, or `agent.escape` for a cgroup file.
//!
//! Every hook returns a constant (0 or -EPERM): the 6.12 verifier needs LSM
//! return values provably in [-4095, 0]. A hook runs only while every BPF
//! LSM program before it returned 0 (the trampoline stops at the first
//! refusal), so none of them needs to look at an earlier verdict.
//!
//! Hook prototypes (include/linux/lsm_hook_defs.h; 6.1 and 6.12 tested):
//! - `int task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred *cred)`
//! - `int file_send_sigiotask(struct task_struct *tsk, struct fown_struct *fown, int sig)`
//! - `int ptrace_access_check(struct task_struct *child, unsigned int mode)`
//! - `int bpf(int cmd, union bpf_attr *attr, unsigned int size)` (6.16 adds `bool kernel`)
//! - `int file_open(struct file *file)`
//! - `int path_unlink(const struct path *dir, struct dentry *dentry)`, `path_rmdir` alike
//! - `int path_rename(const struct path *old_dir, struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry, unsigned int flags)`
//! - `int path_truncate(const struct path *path)`
use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::{
    ACTION_REFUSED, CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, ESCAPE_OPEN, GuardOffsets, InodeKey,
    TAMPER_BPF, TAMPER_FILE, TAMPER_PTRACE, TAMPER_SIGNAL,
};

use crate::{
    guard::{
        current_tgid, is_guard_process, offsets, protected, read, report_escape, report_tamper,
    },
    identity::{self, Agent},
};

/// The hooks see the operation, not the system call behind it.
const CALL_UNKNOWN: u32 = 0;

/// ptrace_may_access mode bit of a silent check (include/linux/ptrace.h,
/// 0x04 since 4.5).
const PTRACE_MODE_NOAUDIT: u32 = 0x04;
/// fmode_t bits (include/linux/fs.h).
const FMODE_WRITE: u32 = 0x2;
/// How far up a cgroup file's directory its agent's cgroup is looked for.
const MAX_CGROUP_DEPTH: u32 = 64;

/// The single conversion to an LSM return code: constants only.
#[inline(always)]
fn verdict(deny: bool) -> i32 {
    if deny { -1 } else { 0 }
}

#[lsm(hook = "task_kill")]
pub fn guard_task_kill(ctx: LsmContext) -> i32 {
    verdict(try_signal(ctx.arg(0), ctx.arg(2), true))
}

#[lsm(hook = "file_send_sigiotask")]
pub fn guard_sigiotask(ctx: LsmContext) -> i32 {
    // SIGIO/SIGURG aimed at the guard through an fd's owner (F_SETOWN):
    // the guard never asks for them, so they are dropped whoever sends.
    verdict(try_signal(ctx.arg(0), ctx.arg(2), false))
}

#[lsm(hook = "ptrace_access_check")]
pub fn guard_ptrace(ctx: LsmContext) -> i32 {
    let deny = (|| {
        let agent = identity::current_agent()?;
        let o = offsets()?;
        let target = is_guard_process(&o, ctx.arg(0))?;
        let mode: u32 = ctx.arg(1);
        // Refused either way; but a NOAUDIT check is the kernel probing
        // (/proc/PID/stat deciding what to show `ps`), not the process
        // reaching: not an attempt to report.
        if mode & PTRACE_MODE_NOAUDIT == 0 {
            report_tamper(
                &agent,
                CALL_UNKNOWN,
                TAMPER_PTRACE,
                target,
                mode,
                InodeKey::default(),
            );
        }
        Some(())
    })();
    verdict(deny.is_some())
}

#[lsm(hook = "bpf")]
pub fn guard_bpf(ctx: LsmContext) -> i32 {
    // Any bpf(2) command from an agent: its programs could detach ours,
    // rewrite policy maps or read every agent's events.
    let Some(agent) = identity::current_agent() else {
        return 0;
    };
    let cmd: i32 = ctx.arg(0);
    report_tamper(
        &agent,
        CALL_UNKNOWN,
        TAMPER_BPF,
        0,
        cmd as u32,
        InodeKey::default(),
    );
    verdict(true)
}

#[lsm(hook = "file_open")]
pub fn guard_file_open(ctx: LsmContext) -> i32 {
    verdict(try_file_open(&ctx).is_some())
}

#[lsm(hook = "path_unlink")]
pub fn guard_path_unlink(ctx: LsmContext) -> i32 {
    verdict(try_protected(ctx.arg(1), 0).is_some())
}

#[lsm(hook = "path_rmdir")]
pub fn guard_path_rmdir(ctx: LsmContext) -> i32 {
    verdict(try_protected(ctx.arg(1), 0).is_some())
}

#[lsm(hook = "path_rename")]
pub fn guard_path_rename(ctx: LsmContext) -> i32 {
    // Neither take an entry out of a protected directory nor put one in.
    let deny = try_protected(ctx.arg(1), 0).is_some() || try_protected(ctx.arg(3), 0).is_some();
    verdict(deny)
}

#[lsm(hook = "path_truncate")]
pub fn guard_path_truncate(ctx: LsmContext) -> i32 {
    let deny = (|| {
        let o = offsets()?;
        let path: *const u8 = ctx.arg(0);
        try_protected(read(path, o.path_dentry)?, FMODE_WRITE)
    })();
    verdict(deny.is_some())
}

/// A signal from an agent process to a guard process: refused. With
/// `from_agent_only` false the target alone decides.
#[inline(always)]
fn try_signal(target: *const u8, sig: i32, from_agent_only: bool) -> bool {
    let agent = identity::current_agent();
    if from_agent_only && agent.is_none() {
        return false;
    }
    let Some(o) = offsets() else { return false };
    let Some(pid) = is_guard_process(&o, target) else {
        return false;
    };
    if let Some(agent) = agent {
        report_tamper(
            &agent,
            CALL_UNKNOWN,
            TAMPER_SIGNAL,
            pid,
            sig as u32,
            InodeKey::default(),
        );
    }
    true
}

/// Some(()) when the open is refused.
#[inline(always)]
fn try_file_open(ctx: &LsmContext) -> Option<()> {
    let agent = identity::current_agent()?;
    let o = offsets()?;
    let file: *const u8 = ctx.arg(0);
    let dentry: *const u8 = read(file, o.file_f_path + o.path_dentry)?;
    let mode: u32 = read(file, o.file_f_mode)?;
    let sb: *const u8 = read(dentry, o.dentry_d_sb)?;
    let magic: u64 = read(sb, o.super_block_s_magic)?;
    if magic == CGROUP2_SUPER_MAGIC || magic == CGROUP_SUPER_MAGIC {
        if mode & FMODE_WRITE == 0 {
            return None;
        }
        // cgroup.procs, cgroup.threads, cgroup.kill, cgroup.freeze, limits:
        // inside its own agent's tree only. cgroup v1 carries no agent.
        let dir: *const u8 = read(dentry, o.dentry_d_parent)?;
        if magic == CGROUP2_SUPER_MAGIC && within(&o, dir, agent.cgroup_id) {
            return None;
        }
        report_escape_open(&agent, &o, dir);
        return Some(());
    }
    let key = protected(&o, dentry)?;
    report_tamper(&agent, CALL_UNKNOWN, TAMPER_FILE, 0, mode, key);
    Some(())
}

/// A change to a protected directory entry by an agent process: refused.
#[inline(always)]
fn try_protected(dentry: *const u8, mode: u32) -> Option<()> {
    let agent = identity::current_agent()?;
    let o = offsets()?;
    let key = protected(&o, dentry)?;
    report_tamper(
        &agent,
        CALL_UNKNOWN,
        TAMPER_FILE,
        0,
        mode | FMODE_WRITE,
        key,
    );
    Some(())
}

/// Whether the cgroup directory `dir` is the cgroup `agent_cgroup_id` or
/// below it (a kernfs directory's inode number is its cgroup's id).
#[inline(always)]
fn within(o: &GuardOffsets, dir: *const u8, agent_cgroup_id: u64) -> bool {
    let mut d = dir;
    let mut depth = 0u32;
    while depth < MAX_CGROUP_DEPTH {
        let Some(inode) = read::<*const u8>(d, o.dentry_d_inode) else {
            return false;
        };
        if read::<u64>(inode, o.inode_i_ino) == Some(agent_cgroup_id) {
            return true;
        }
        let Some(parent) = read::<*const u8>(d, o.dentry_d_parent) else {
            return false;
        };
        if parent == d {
            return false;
        }
        d = parent;
        depth += 1;
    }
    false
}

#[inline(always)]
fn report_escape_open(agent: &Agent, o: &GuardOffsets, dir: *const u8) {
    let dst = read::<*const u8>(dir, o.dentry_d_inode)
        .and_then(|inode| read::<u64>(inode, o.inode_i_ino))
        .unwrap_or(0);
    report_escape(
        agent,
        current_tgid(),
        ESCAPE_OPEN,
        ACTION_REFUSED,
        dst,
        core::ptr::null(),
    );
}
