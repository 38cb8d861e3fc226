//! Renames and hard links under BPF LSM. A rename removes its source from
//! where it was (with everything below it, for a directory) and, when it
//! replaces an object, that object too: it is judged by the stricter of
//! those. A hard link gives an existing file a second name, through which
//! it could then be truncated or replaced: it is judged as its file.
//!
//! Hook prototypes (include/linux/lsm_hook_defs.h; plus the previous BPF
//! LSM programs' return value):
//! - `int path_rename(const struct path *old_dir, struct dentry *old_dentry,
//!   const struct path *new_dir, struct dentry *new_dentry, unsigned int
//!   flags)`: flags since 5.19 (RENAME_EXCHANGE reaches the hook once, with
//!   both sides);
//! - `int path_link(struct dentry *old_dentry, const struct path *new_dir,
//!   struct dentry *new_dentry)`: a link never crosses mounts, so the
//!   existing file is in `new_dir`'s mount.
//!
//! Both run for io_uring's IORING_OP_RENAMEAT and IORING_OP_LINKAT too.
use aya_ebpf::programs::LsmContext;
use guard_common::{
    EventKind, LossReason, PATH_UNKNOWN, RENAME_DEST_DECIDED, RENAME_DIR, RENAME_EXCHANGE,
    RENAME_EXCHANGES, RENAME_REPLACES, RenameRecord,
};

use crate::{
    decide::{self, Decision, HoldBy, Report},
    emit,
    fs::{GuardError, agent_and_scratch, path_grant, path_rule},
    hold::Call,
    identity::Agent,
    maps::{EVENTS, SLOT_A, SLOT_B, SUBTREE_RULES, Scratch},
    offsets::{off, read_u64},
    paths::{self, Built},
};

/// The rule for moving (or replacing) the object in key `slot`: its own,
/// or for a directory the strictest rule below it if that is stricter.
#[inline(always)]
fn moved_rule(agent: &Agent, s: &Scratch, slot: usize, built: Built, dir: bool) -> (u8, u32) {
    let own = path_rule(agent, s, slot, built);
    if !dir || built.state == PATH_UNKNOWN {
        return own;
    }
    match SUBTREE_RULES.get(paths::key(s, slot)) {
        Some(below) if below.verdict > own.0 => (below.verdict, below.rule_id),
        _ => own,
    }
}

/// `WALK` selects how paths are built, as for unlink: bpf_d_path where the
/// kernel allows it in the hook (6.2+), else the dentry walk.
#[inline(always)]
pub fn try_rename<const WALK: bool>(ctx: &LsmContext) -> Result<Decision, GuardError> {
    let previous: i32 = ctx.arg(5);
    if previous != 0 {
        return Ok(Decision::Deny);
    }
    let Some((agent, s)) = agent_and_scratch()? else {
        return Ok(Decision::Allow);
    };
    let (old_dir, old_dentry, new_dir, new_dentry): (u64, u64, u64, u64) =
        (ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3));
    let flags: u32 = ctx.arg(4);
    let id = agent.entry.agent_id;
    let exchange = flags & RENAME_EXCHANGE != 0;
    let src = paths::dir_entry::<WALK>(s, SLOT_A, id, old_dir, old_dentry);
    let dst = paths::dir_entry::<WALK>(s, SLOT_B, id, new_dir, new_dentry);
    let src_dir = paths::is_dir(old_dentry).unwrap_or(false);
    let dst_kind = paths::is_dir(new_dentry);
    let mut rename_flags = 0;
    if exchange {
        rename_flags |= RENAME_EXCHANGES;
    }
    if src_dir {
        rename_flags |= RENAME_DIR;
    }
    let src_rule = moved_rule(&agent, s, SLOT_A, src, src_dir);
    // A replaced destination is removed; an exchanged one moves, with
    // what is below it.
    let dst_rule = dst_kind.map(|dir| {
        rename_flags |= RENAME_REPLACES;
        moved_rule(&agent, s, SLOT_B, dst, exchange && dir)
    });
    let ((verdict, rule_id), second) = guard_common::stricter(agent.entry.mode, src_rule, dst_rule);
    let (slot, decided) = if second {
        rename_flags |= RENAME_DEST_DECIDED;
        (SLOT_B, dst)
    } else {
        (SLOT_A, src)
    };
    let climbed = decide::climb(
        &agent,
        verdict,
        rule_id,
        // A rename can remove its destination, or move data where a
        // later delete is allowed: it counts as a delete.
        guard_common::BudgetClass::Deletes.raw(),
        || pair_call(EventKind::FileRename, s, (src, dst)),
        || path_grant(&agent, s, slot, decided),
        HoldBy::StopNow,
    );
    if let Some(report) = climbed.report {
        emit_pair(
            EventKind::FileRename,
            &agent,
            &report,
            rule_id,
            s,
            (src, dst),
            rename_flags,
        );
    }
    Ok(climbed.decision)
}

/// The existing file is a dentry, not a path bpf_d_path could take: it is
/// named by the walk; `WALK` only selects how the new name is built.
#[inline(always)]
pub fn try_link<const WALK: bool>(ctx: &LsmContext) -> Result<Decision, GuardError> {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return Ok(Decision::Deny);
    }
    let Some((agent, s)) = agent_and_scratch()? else {
        return Ok(Decision::Allow);
    };
    let (old_dentry, new_dir, new_dentry): (u64, u64, u64) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    let id = agent.entry.agent_id;
    let mnt = read_u64(new_dir + off!(path_mnt));
    let src = paths::dentry_in(s, SLOT_A, id, old_dentry, mnt);
    let dst = paths::dir_entry::<WALK>(s, SLOT_B, id, new_dir, new_dentry);
    let (verdict, rule_id) = path_rule(&agent, s, SLOT_A, src);
    let climbed = decide::climb(
        &agent,
        verdict,
        rule_id,
        // A link destroys nothing.
        0,
        || pair_call(EventKind::FileLink, s, (src, dst)),
        || path_grant(&agent, s, SLOT_A, src),
        HoldBy::StopNow,
    );
    if let Some(report) = climbed.report {
        emit_pair(
            EventKind::FileLink,
            &agent,
            &report,
            rule_id,
            s,
            (src, dst),
            0,
        );
    }
    Ok(climbed.decision)
}

/// A two-path call as a hold binds it: both paths, so an approval of
/// `mv a b` does not let the restarted thread do `mv a c`.
#[inline(always)]
fn pair_call(kind: EventKind, s: &Scratch, (src, dst): (Built, Built)) -> Option<Call> {
    let call = paths::held_call(kind, s, SLOT_A, src)?;
    call.second_path(s.keys[SLOT_B].path.as_ptr(), dst.len);
    Some(call)
}

#[inline(always)]
fn emit_pair(
    kind: EventKind,
    agent: &Agent,
    report: &Report,
    rule_id: u32,
    s: &Scratch,
    (src, dst): (Built, Built),
    rename_flags: u8,
) {
    let Some(mut entry) = EVENTS.reserve::<RenameRecord>(0) else {
        emit::count_loss(LossReason::RingbufFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    let header = emit::judged_header(kind, agent, report, rule_id);
    // SAFETY: `rec` points at a reserved, exclusively owned record.
    unsafe {
        (*rec).header = header;
        paths::copy_into(&raw mut (*rec).path, s, SLOT_A, src, report.flags);
        paths::copy_into(&raw mut (*rec).new_path, s, SLOT_B, dst, 0);
        (*rec).rename_flags = rename_flags;
        (*rec)._pad = [0; 7];
    }
    entry.submit(emit::wakeup(emit::urgent(report)));
}
