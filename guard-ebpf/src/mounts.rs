//! No second path to a protected object: the mount family is refused to
//! agents unless their policy says `allow_mounts = true`. A bind mount, a
//! moved mount, a new root or a chroot would let an agent reach a
//! protected object under a path no rule names.
//!
//! Hook prototypes (include/linux/lsm_hook_defs.h; plus the previous BPF
//! LSM programs' return value):
//! - `int sb_mount(const char *dev_name, const struct path *path, const
//!   char *type, unsigned long flags, void *data)`: every mount(2), bind,
//!   move and remount included;
//! - `int move_mount(const struct path *from_path, const struct path
//!   *to_path)` (5.2+): attaching a tree made by open_tree or fsmount;
//! - `int sb_pivotroot(const struct path *old_path, const struct path
//!   *new_path)`; `int path_chroot(const struct path *path)`;
//! - `int userns_create(const struct cred *cred)` (6.1+): a new user
//!   namespace, in which an unprivileged process may mount.
//!
//! No hook sees unshare(CLONE_NEWNS), setns, or open_tree/fsmount making a
//! detached tree. A new mount namespace gives no second path without a
//! mount, which is refused; a detached tree has no path from the task's
//! root, so every guarded call through it is refused (see path_walk.rs).
//!
//! These programs name no path (their events give the operation): every
//! path would cost each of them the dentry walk's verification at every
//! daemon start, and the refusal does not depend on where. Under freeze an
//! allowed mount is refused rather than held.
use aya_ebpf::programs::LsmContext;
use guard_common::{
    AGENT_ALLOW_MOUNTS, EventKind, LossReason, MountOp, MountRecord, RULE_DEFAULT, Verdict,
};

use crate::{
    decide::{self, Decision, HoldBy},
    emit,
    fs::{GuardError, agent_and_scratch},
    maps::{EVENTS, SLOT_A},
    paths::{self, UNKNOWN},
};

/// Judges a mount-family call.
#[inline(always)]
pub fn try_mount(previous: i32, op: MountOp) -> Result<Decision, GuardError> {
    if previous != 0 {
        return Ok(Decision::Deny);
    }
    let Some((agent, s)) = agent_and_scratch()? else {
        return Ok(Decision::Allow);
    };
    let verdict = if agent.entry.flags & AGENT_ALLOW_MOUNTS != 0 {
        Verdict::Allow
    } else {
        Verdict::Deny
    };
    let climbed = decide::climb(
        &agent,
        verdict.raw(),
        RULE_DEFAULT,
        0,
        || None,
        || 0,
        HoldBy::Never,
    );
    let Some(report) = climbed.report else {
        return Ok(climbed.decision);
    };
    match EVENTS.reserve::<MountRecord>(0) {
        Some(mut entry) => {
            let rec = entry.as_mut_ptr();
            let header = emit::judged_header(EventKind::FileMount, &agent, &report, RULE_DEFAULT);
            // SAFETY: `rec` points at a reserved, exclusively owned record.
            unsafe {
                (*rec).header = header;
                paths::copy_into(&raw mut (*rec).path, s, SLOT_A, UNKNOWN, report.flags);
                (*rec).op = op.raw();
                (*rec)._pad = [0; 7];
            }
            entry.submit(emit::wakeup(emit::urgent(&report)));
        }
        None => emit::count_loss(LossReason::RingbufFull),
    }
    Ok(climbed.decision)
}

#[inline(always)]
pub fn sb_mount(ctx: &LsmContext) -> Result<Decision, GuardError> {
    try_mount(ctx.arg(5), MountOp::Mount)
}

#[inline(always)]
pub fn move_mount(ctx: &LsmContext) -> Result<Decision, GuardError> {
    try_mount(ctx.arg(2), MountOp::MoveMount)
}

#[inline(always)]
pub fn pivot_root(ctx: &LsmContext) -> Result<Decision, GuardError> {
    try_mount(ctx.arg(2), MountOp::PivotRoot)
}

#[inline(always)]
pub fn chroot(ctx: &LsmContext) -> Result<Decision, GuardError> {
    try_mount(ctx.arg(1), MountOp::Chroot)
}

#[inline(always)]
pub fn userns_create(ctx: &LsmContext) -> Result<Decision, GuardError> {
    try_mount(ctx.arg(1), MountOp::UserNamespace)
}
