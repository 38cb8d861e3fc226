//! unlink and rmdir: lsm/path_unlink and lsm/path_rmdir.
//!
//! Hook prototypes (include/linux/lsm_hook_defs.h, unchanged from 5.10 to
//! 6.12): `int security_path_unlink(const struct path *dir, struct dentry
//! *dentry)` and `int security_path_rmdir(const struct path *dir, struct
//! dentry *dentry)`. BPF LSM programs get a third argument: the return value
//! of the BPF LSM programs before them. Both hooks are on the kernel's
//! sleepable-hook list, which is what allows bpf_d_path there.
use aya_ebpf::{
    bindings::{path, pt_regs},
    cty::{c_char, c_void},
    helpers::generated::{
        bpf_d_path, bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user_str,
    },
    programs::{BtfTracePointContext, LsmContext},
};
use guard_common::{
    EventKind, FileRecord, KernelOffsets, LossReason, Mode, NET_KEY_AGENT_BITS, NR_RMDIR,
    NR_UNLINK, NR_UNLINKAT, ObservedDeleteRecord, Outcome, PATH_COMPLETE, PATH_KEY_BYTES,
    PATH_TRUNCATED, PATH_UNKNOWN, PathKey, RULE_DEFAULT, Verdict,
};

use crate::{
    emit, grant,
    hold::{self, Hold},
    identity::{self, Agent},
    maps::{EVENTS, PATH_RULES, SCRATCH, Scratch},
    path_walk,
};

/// Member offsets of the running kernel, from its BTF; written by the
/// daemon at load time. Zero means "not provided": the programs then fail
/// closed for agents instead of reading a wrong field.
#[unsafe(no_mangle)]
pub(crate) static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    dentry_d_name: 0,
    qstr_name: 0,
    dentry_d_parent: 0,
    path_mnt: 0,
    path_dentry: 0,
    vfsmount_mnt_root: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    task_fs: 0,
    fs_root: 0,
    _pad: 0,
};

const EPERM: i32 = 1;
/// Kernel-internal: "restart this system call after the signal". Never
/// reaches the process: a signal (our SIGSTOP) is always pending with it.
const ERESTARTNOINTR: i32 = 513;

pub enum Decision {
    Allow,
    Deny,
    /// Stop the thread and restart the call later (see hold.rs).
    Hold,
    /// A BPF LSM program before us already refused the call.
    Refused,
}

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
/// tell), and a delete we cannot judge must not happen.
#[inline(always)]
pub fn lsm_verdict(result: Result<Decision, GuardError>) -> i32 {
    match result {
        Ok(Decision::Allow) => 0,
        Ok(Decision::Hold) => -ERESTARTNOINTR,
        Ok(Decision::Deny | Decision::Refused) | Err(_) => -EPERM,
    }
}

/// `WALK` selects how the directory's path is built: bpf_d_path (kernels
/// that allow it in the path hooks, 6.x later than 6.1) or our own dentry
/// walk. Two programs per hook exist; the loader keeps the one the kernel
/// accepts, since a program that merely mentions bpf_d_path is refused
/// where it is not allowed.
#[inline(always)]
pub fn try_delete<const WALK: bool>(
    ctx: &LsmContext,
    kind: EventKind,
) -> Result<Decision, GuardError> {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return Ok(Decision::Refused);
    }
    let Some(agent) = identity::current_agent() else {
        return Ok(Decision::Allow);
    };
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(GuardError::Scratch)?;
    // SAFETY: per-CPU map value, not shared with another program run on
    // this CPU while we hold it (LSM programs do not nest on one CPU here).
    let s = unsafe { &mut *scratch };
    let (len, state) = build_path::<WALK>(s, ctx, &agent)?;

    let (verdict, rule_id) = if state == PATH_UNKNOWN {
        // No path, no rule can be judged: enforce mode denies.
        (Verdict::Deny.raw(), RULE_DEFAULT)
    } else {
        // SAFETY: Scratch starts with the exact layout of Key<PathKey>
        // (prefix_len, agent id, path bytes) and is larger than it.
        let key = unsafe { &*(scratch as *const aya_ebpf::maps::lpm_trie::Key<PathKey>) };
        match PATH_RULES.get(key) {
            Some(rule) => (rule.verdict, rule.rule_id),
            None => (agent.entry.delete_default, RULE_DEFAULT),
        }
    };
    let verdict = guard_common::applied_verdict(agent.entry.mode, verdict, rule_id);

    let mut grant_id = 0;
    let (decision, outcome, hold_id) = if agent.entry.mode == Mode::Audit.raw() {
        (Decision::Allow, Outcome::Audited, 0)
    } else if verdict == Verdict::Allow.raw() {
        (Decision::Allow, Outcome::Allowed, 0)
    } else if verdict == Verdict::Ask.raw() && state != PATH_UNKNOWN {
        match hold::Call::path(kind.raw(), s.path.as_ptr(), len) {
            // Not this thread's held call: an approval's scope may cover it.
            Some(call)
                if !call.held() && {
                    // SAFETY: as for the rule lookup above.
                    let key =
                        unsafe { &*(scratch as *const aya_ebpf::maps::lpm_trie::Key<PathKey>) };
                    grant_id = grant::for_path(agent.entry.agent_id, key).unwrap_or(0);
                    grant_id != 0
                } =>
            {
                (Decision::Allow, Outcome::Allowed, 0)
            }
            Some(call) => match hold::hold(true, &call) {
                Hold::Started { hold_id } => (Decision::Hold, Outcome::Held, hold_id),
                // Restarted early by someone else's SIGCONT: stopped again,
                // and the hold was already reported.
                Hold::StillPending => return Ok(Decision::Hold),
                // The held call itself, decided: its own event, with the
                // hold's id, says what actually ran.
                Hold::Decided {
                    allow: true,
                    hold_id,
                } => (Decision::Allow, Outcome::Allowed, hold_id),
                Hold::Decided {
                    allow: false,
                    hold_id,
                } => (Decision::Deny, Outcome::Denied, hold_id),
                Hold::Failed => (Decision::Deny, Outcome::Denied, 0),
            },
            // No scratch to describe the call: it cannot be held; fail
            // closed (cannot happen for index 0 of a per-CPU array).
            None => (Decision::Deny, Outcome::Denied, 0),
        }
    } else {
        (Decision::Deny, Outcome::Denied, 0)
    };
    emit_file(
        kind,
        &agent,
        outcome,
        verdict,
        rule_id,
        (hold_id, grant_id),
        s,
        len,
        state,
    );
    Ok(decision)
}

/// Writes "<dir>/<name>/" and a NUL into the scratch path and returns
/// (bytes of the path proper, PATH_* state).
#[inline(always)]
fn build_path<const WALK: bool>(
    s: &mut Scratch,
    ctx: &LsmContext,
    agent: &Agent,
) -> Result<(usize, u8), GuardError> {
    // SAFETY: plain read of a read-only global.
    let offsets = unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) };
    if offsets.dentry_d_name == 0 {
        return Err(GuardError::NoOffsets);
    }
    s.prefix_len = NET_KEY_AGENT_BITS + (PATH_KEY_BYTES as u32) * 8;
    s.agent_id = agent.entry.agent_id.to_be_bytes();

    let dir: *mut path = ctx.arg(0);
    let dentry: *const u8 = ctx.arg(1);
    let n = if WALK {
        path_walk::dir_path(s, dir as *const u8, &offsets)
    } else {
        // SAFETY: `dir` is the hook's trusted argument; the buffer is ours.
        unsafe { bpf_d_path(dir, s.path.as_mut_ptr() as *mut c_char, s.path.len() as u32) }
    };
    if n <= 0 {
        s.path[0] = 0;
        return Ok((0, PATH_UNKNOWN));
    }
    // Index of the NUL bpf_d_path wrote.
    let mut pos = (n as usize - 1) & 0x1ff;
    if pos >= 256 {
        // The directory alone fills the key: match on it, report truncated.
        return Ok((PATH_KEY_BYTES, PATH_TRUNCATED));
    }
    if pos != 1 {
        // Not the root directory "/": add the separator.
        s.path[pos & 0xff] = b'/';
        pos += 1;
    }
    let pos = pos & 0xff;
    // dentry->d_name.name
    let mut name: *const u8 = core::ptr::null();
    // SAFETY: reading a pointer-sized field of the kernel's dentry through
    // the probe helper, at offsets the loader took from this kernel's BTF.
    let rc = unsafe {
        bpf_probe_read_kernel(
            (&raw mut name).cast::<c_void>(),
            size_of::<*const u8>() as u32,
            dentry
                .add((offsets.dentry_d_name + offsets.qstr_name) as usize)
                .cast::<c_void>(),
        )
    };
    if rc != 0 {
        return Ok((0, PATH_UNKNOWN));
    }
    // SAFETY: destination stays inside the 512-byte buffer (pos < 256,
    // size 256); the helper bounds the read and NUL-terminates.
    let m = unsafe {
        bpf_probe_read_kernel_str(
            s.path.as_mut_ptr().add(pos).cast::<c_void>(),
            256,
            name.cast::<c_void>(),
        )
    };
    if m <= 0 {
        return Ok((0, PATH_UNKNOWN));
    }
    let end = pos + ((m as usize - 1) & 0xff);
    // Trailing '/' and NUL: whole-component matching (see PathKey).
    if let Some(b) = s.path.get_mut(end) {
        *b = b'/';
    }
    if let Some(b) = s.path.get_mut(end + 1) {
        *b = 0;
    }
    if end > PATH_KEY_BYTES - 2 {
        return Ok((PATH_KEY_BYTES, PATH_TRUNCATED));
    }
    Ok((end, PATH_COMPLETE))
}

/// Writes the record in place in the ring buffer: it is too large for the
/// BPF stack.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
fn emit_file(
    kind: EventKind,
    agent: &Agent,
    outcome: Outcome,
    verdict: u8,
    rule_id: u32,
    (hold_id, grant_id): (u64, u32),
    s: &Scratch,
    len: usize,
    state: u8,
) {
    let Some(mut entry) = EVENTS.reserve::<FileRecord>(0) else {
        emit::count_loss(LossReason::RingbufFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    let mut header = emit::header(kind.raw(), agent);
    header.outcome = outcome.raw();
    header.verdict = verdict;
    header.rule_id = rule_id;
    header.hold_id = hold_id;
    header.grant_id = grant_id;
    // SAFETY: `rec` points at a reserved, exclusively owned record.
    unsafe {
        (*rec).header = header;
        (*rec).path_len = len as u16;
        (*rec).path_state = state;
        (*rec)._pad = 0;
        bpf_probe_read_kernel(
            (*rec).path.as_mut_ptr().cast::<c_void>(),
            PATH_KEY_BYTES as u32,
            s.path.as_ptr().cast::<c_void>(),
        );
    }
    // Holds, denials and decided holds wake the reader now (on-call waits
    // for them); allowed and audited deletes ride the batch, like connects.
    entry.submit(emit::wakeup(
        hold_id != 0 || !matches!(outcome, Outcome::Allowed | Outcome::Audited),
    ));
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
        (-100, r.rdi, 0)
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
