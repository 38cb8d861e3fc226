//! Refusals seen at system call exit, where the BPF LSM self-defense hooks
//! are not in force (kernels without BPF LSM, this project's 6.18 CI kernel
//! among them). There, Landlock and the seccomp filter keep a run's
//! processes from the guard, and neither tells anyone: Landlock reports
//! denials only to the audit subsystem, if that is enabled, and a seccomp
//! errno reaches no one but the caller.
//!
//! So tp_btf/sys_exit looks at every call that failed with a refusal's
//! errno (EPERM, EACCES; EXDEV for renames and links; ENOSYS for clone3),
//! and if the caller is an agent process and the call is one that can
//! reach for the guard, reports it with its arguments, which are still in
//! the saved registers:
//! - signals, ptrace, process_vm_readv/writev, pidfd_getfd,
//!   process_madvise and kcmp aimed at a guard process or one of its
//!   threads: `guard.tamper`, decided here (pidfds are followed to their
//!   process);
//! - bpf(2), any command: `guard.tamper`;
//! - clone3(CLONE_INTO_CGROUP) into a cgroup outside the agent's tree:
//!   `agent.escape`, refused;
//! - path calls (open family, truncate, mkdir, mknod, rename, link,
//!   symlink): a [`RefusedPathRecord`] with each path and, for a relative
//!   one, the directory it starts from, which the daemon resolves: the
//!   guard's files and its processes' /proc entries give `guard.tamper`,
//!   cgroup files outside the agent's tree `agent.escape`, the rest
//!   nothing.
//!
//! Nothing here refuses anything, and nothing waits for the daemon: the
//! call has already failed when the record is written. Every record draws
//! on the agent's allowance (guard.rs `within_budget`).
use aya_ebpf::{
    bindings::pt_regs,
    cty::c_void,
    helpers::{
        bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_probe_read_kernel as probe_read_kernel, bpf_probe_read_user_str},
    },
    macros::map,
    maps::Array,
    programs::BtfTracePointContext,
};
use guard_common::{
    ACTION_REFUSED, CGROUP2_SUPER_MAGIC, CLONE_INTO_CGROUP, Call, ESCAPE_CLONE, EventKind,
    GuardOffsets, InodeKey, LossReason, Outcome, REFUSAL_SKIP_SLOTS, REFUSED_PATH_BYTES,
    RefusalSkip, RefusedOffsets, RefusedPath, RefusedPathRecord, SKIP_ALWAYS, SKIP_FLAGS,
    TAMPER_BPF, TAMPER_FILE, TAMPER_PTRACE, TAMPER_SIGNAL, Verdict,
};

use crate::{
    emit,
    guard::{
        cgroup_agent, cgroup_id, current_tgid, guard_target, offsets, protected, read,
        report_escape, report_tamper, within_budget,
    },
    identity::{self, Agent},
    maps::{EVENTS, SCRATCH, SLOT_A},
    offsets::{self, off},
    path_walk,
};

/// Written by the daemon at load time (see `RefusedOffsets`).
#[unsafe(no_mangle)]
static REFUSED_OFFSETS: RefusedOffsets = RefusedOffsets {
    task_files: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    fdtable_max_fds: 0,
    file_f_inode: 0,
    file_private_data: 0,
    inode_i_private: 0,
    inode_i_sb: 0,
    pid_numbers: 0,
    upid_nr: 0,
    proc_inode_pid: 0,
    proc_inode_vfs_inode: 0,
    kernfs_node_priv: 0,
    fs_pwd: 0,
    thread_status: 0,
    _pad: 0,
};

/// Slot 0 is non-zero while the observer is wanted: set by the daemon
/// where the BPF LSM hooks are not in force (where they are, they report
/// every refusal themselves, and one attempt must give one event).
#[map]
pub static REFUSAL_WATCH: Array<u32> = Array::with_max_entries(1, 0);

/// Indexed by guard_common::Call: path calls a run's seccomp supervisor
/// judges and reports itself, left to it (see guard_common::RefusalSkip).
#[map]
pub static REFUSAL_SKIP: Array<RefusalSkip> = Array::with_max_entries(REFUSAL_SKIP_SLOTS, 0);

/// thread_info.status bit of a task in an i386 system call
/// (arch/x86/include/asm/thread_info.h; 0x0002 since 2.6.x, not user ABI).
const TS_COMPAT: u32 = 0x0002;
/// "Relative to the working directory" in the *at() calls (user ABI).
const AT_FDCWD: i32 = -100;
/// open(2) flags creat(2) stands for: O_WRONLY | O_CREAT | O_TRUNC.
const CREAT_FLAGS: u32 = 0o1101;
/// struct clone_args (include/uapi/linux/sched.h): its size once it has
/// `cgroup` (CLONE_ARGS_SIZE_VER2, 5.7), and where `cgroup` is.
const CLONE_ARGS_SIZE_VER2: u64 = 88;
const CLONE_ARGS_CGROUP: u64 = 80;
/// Filesystems a pidfd can live on (include/uapi/linux/magic.h).
const PID_FS_MAGIC: u64 = 0x5049_4446;
const PROC_SUPER_MAGIC: u64 = 0x9fa0;
const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;

#[inline(always)]
fn refused_offsets() -> Option<RefusedOffsets> {
    // SAFETY: plain read of a read-only global.
    let o = unsafe { core::ptr::read_volatile(&REFUSED_OFFSETS) };
    (o.task_files != 0).then_some(o)
}

/// What the offsets and the call give every reporter.
struct Seen {
    agent: Agent,
    call: Call,
    args: [u64; 6],
    ret: i64,
    o: GuardOffsets,
    r: RefusedOffsets,
}

/// Called for each system call exit whose `ret` may be a refusal.
#[inline(always)]
pub fn observe(ctx: &BtfTracePointContext, ret: i64) -> Option<()> {
    if REFUSAL_WATCH.get(0).is_none_or(|w| *w == 0) {
        return None;
    }
    // First: it ends the look for every process outside the agents.
    // Measured on a refused call outside the agents: +110 ns with the
    // registers read first, +30 ns this way (xtask bench, `refused`).
    let agent = identity::current_agent()?;
    let o = offsets()?;
    let r = refused_offsets()?;
    let regs: *const pt_regs = ctx.arg(0);
    // SAFETY: the saved user registers of this system call, read whole
    // through the probe helper; pt_regs is the x86_64 user ABI layout.
    let regs = unsafe { bpf_probe_read_kernel(regs) }.ok()?;
    // SAFETY: helper without arguments; the pointer is only probe-read.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let compat = read::<u32>(task, r.thread_status).unwrap_or(0) & TS_COMPAT != 0;
    let (call, args) = if compat {
        // i386: ebx, ecx, edx, esi, edi, ebp, 32 bits each (signed ones
        // are cast back where used).
        let a = [regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp];
        (Call::from_i386(regs.orig_rax)?, a.map(|v| v as u32 as u64))
    } else {
        let a = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        (Call::from_x86_64(regs.orig_rax)?, a)
    };
    if !call.refused_with(ret) {
        return None;
    }
    let seen = Seen {
        agent,
        call,
        args,
        ret,
        o,
        r,
    };
    match call.class() {
        TAMPER_SIGNAL => signal(&seen),
        TAMPER_PTRACE => ptrace(&seen),
        TAMPER_BPF => {
            report_tamper(
                &seen.agent,
                call.raw() as u32,
                TAMPER_BPF,
                0,
                args[0] as u32,
                InodeKey::default(),
            );
            Some(())
        }
        TAMPER_FILE => path_call(&seen),
        _ => clone3(&seen),
    }
}

/// A signal to a guard process or thread.
#[inline(always)]
fn signal(s: &Seen) -> Option<()> {
    let a = &s.args;
    let (id, sig) = match s.call {
        Call::Kill => {
            // 0 and negative pids name process groups or everyone: the
            // kernel delivers to those it may and succeeds if any.
            if (a[0] as i32) <= 0 {
                return None;
            }
            (a[0] as u32, a[1])
        }
        Call::Tgkill | Call::RtTgsigqueueinfo => (a[0] as u32, a[2]),
        Call::PidfdSendSignal => (pidfd_pid(s, a[0])?, a[1]),
        _ => (a[0] as u32, a[1]), // tkill, rt_sigqueueinfo
    };
    let target = guard_target(id)?;
    report_tamper(
        &s.agent,
        s.call.raw() as u32,
        TAMPER_SIGNAL,
        target,
        sig as u32,
        InodeKey::default(),
    );
    Some(())
}

/// ptrace and the calls that need ptrace's permission, on a guard process.
#[inline(always)]
fn ptrace(s: &Seen) -> Option<()> {
    let a = &s.args;
    // `arg`: ptrace's request, pidfd_getfd's descriptor, kcmp's type.
    let (target, arg) = match s.call {
        Call::Ptrace => (guard_target(a[1] as u32)?, a[0]),
        Call::PidfdGetfd => (guard_target(pidfd_pid(s, a[0])?)?, a[1]),
        Call::ProcessMadvise => (guard_target(pidfd_pid(s, a[0])?)?, 0),
        Call::Kcmp => (
            guard_target(a[0] as u32).or_else(|| guard_target(a[1] as u32))?,
            a[2],
        ),
        _ => (guard_target(a[0] as u32)?, 0), // process_vm_readv/writev
    };
    report_tamper(
        &s.agent,
        s.call.raw() as u32,
        TAMPER_PTRACE,
        target,
        arg as u32,
        InodeKey::default(),
    );
    Some(())
}

/// clone3(CLONE_INTO_CGROUP) aimed outside the agent's tree, which the
/// seccomp filter fails with ENOSYS (it cannot read clone3's flags).
#[inline(always)]
fn clone3(s: &Seen) -> Option<()> {
    let (uargs, size) = (s.args[0], s.args[1]);
    if size < CLONE_ARGS_SIZE_VER2 {
        return None;
    }
    // SAFETY: user memory read through the probe helper (fails on a fault).
    let flags = unsafe { bpf_probe_read_user(uargs as *const u64) }.ok()?;
    if flags & CLONE_INTO_CGROUP == 0 {
        return None;
    }
    // SAFETY: as above.
    let fd = unsafe { bpf_probe_read_user((uargs + CLONE_ARGS_CGROUP) as *const u64) }.ok()?;
    let file = fd_file(&s.r, fd)?;
    let inode: *const u8 = read(file, s.r.file_f_inode)?;
    let sb: *const u8 = read(inode, s.r.inode_i_sb)?;
    if read::<u64>(sb, s.o.super_block_s_magic)? != CGROUP2_SUPER_MAGIC {
        return None;
    }
    // A cgroup directory's inode leads to its kernfs node, and that to the
    // cgroup.
    let kn: *const u8 = read(inode, s.r.inode_i_private)?;
    let cgrp: *const u8 = read(kn, s.r.kernfs_node_priv)?;
    if cgroup_agent(&s.o, cgrp).is_some_and(|a| a.cgroup_id == s.agent.cgroup_id) {
        return None; // into its own tree: not a way out
    }
    let dst = cgroup_id(&s.o, cgrp).unwrap_or(0);
    report_escape(
        &s.agent,
        current_tgid(),
        ESCAPE_CLONE,
        ACTION_REFUSED,
        dst,
        core::ptr::null(),
    );
    Some(())
}

/// A refused path call: its paths, for the daemon to resolve.
#[inline(always)]
fn path_call(s: &Seen) -> Option<()> {
    let a = &s.args;
    let cwd = AT_FDCWD as i64 as u64;
    // (dirfd, path) of each path argument, and the open flags.
    let (first, second, flags) = match s.call {
        Call::Open => ((cwd, a[0]), None, a[1] as u32),
        Call::Creat => ((cwd, a[0]), None, CREAT_FLAGS),
        Call::Openat => ((a[0], a[1]), None, a[2] as u32),
        // struct open_how begins with the u64 flags (include/uapi/linux/openat2.h).
        // SAFETY: user memory read through the probe helper.
        Call::Openat2 => (
            (a[0], a[1]),
            None,
            unsafe { bpf_probe_read_user(a[2] as *const u64) }.unwrap_or(0) as u32,
        ),
        Call::Truncate | Call::Mkdir | Call::Mknod => ((cwd, a[0]), None, 0),
        Call::Mkdirat | Call::Mknodat => ((a[0], a[1]), None, 0),
        Call::Rename | Call::Link => ((cwd, a[0]), Some((cwd, a[1])), 0),
        Call::Symlink => ((cwd, a[1]), None, 0), // the target is only text
        Call::Symlinkat => ((a[1], a[2]), None, 0),
        _ => ((a[0], a[1]), Some((a[2], a[3])), 0), // renameat(2), linkat
    };
    if skipped(s.call, flags) {
        return None;
    }
    if !within_budget(s.agent.cgroup_id, TAMPER_FILE) {
        return None;
    }
    let Some(mut slot) = EVENTS.reserve::<RefusedPathRecord>(0) else {
        emit::count_loss(LossReason::RingbufFull);
        return None;
    };
    let rec = slot.as_mut_ptr();
    let mut header = emit::header(EventKind::GuardRefusedPath.raw(), &s.agent);
    header.outcome = Outcome::Denied.raw();
    header.verdict = Verdict::Deny.raw();
    // SAFETY: `rec` is a reserved record we own; every field is written.
    unsafe {
        (*rec).header = header;
        (*rec).call = s.call.raw();
        (*rec)._pad = 0;
        (*rec).errno = (-s.ret) as u32;
        (*rec).flags = flags;
        (*rec)._pad2 = 0;
        fill(s, &raw mut (*rec).paths[0], first.0 as i32, first.1);
        match second {
            Some((dirfd, path)) => fill(s, &raw mut (*rec).paths[1], dirfd as i32, path),
            None => clear(&raw mut (*rec).paths[1]),
        }
    }
    slot.submit(emit::wakeup(true));
    Some(())
}

/// Whether a run's seccomp supervisor judges (and reports) this call.
#[inline(always)]
fn skipped(call: Call, flags: u32) -> bool {
    let Some(skip) = REFUSAL_SKIP.get(call.raw() as u32) else {
        return false;
    };
    skip.when == SKIP_ALWAYS || (skip.when == SKIP_FLAGS && flags & skip.flags != 0)
}

/// # Safety
/// `p` points into a reserved ring-buffer record.
#[inline(always)]
unsafe fn clear(p: *mut RefusedPath) {
    // SAFETY: as the caller promises.
    unsafe {
        (*p).dirfd = 0;
        (*p).path_len = 0;
        (*p).base_len = 0;
        (*p).protected = InodeKey::default();
        (*p).path[0] = 0;
        (*p).base[0] = 0;
    }
}

/// Copies the user path at `ptr` into `p`, and for a relative one the
/// directory it starts from: its path as the process sees it, and the
/// protected directory it lies in, if any.
///
/// # Safety
/// `p` points into a reserved ring-buffer record.
#[inline(always)]
unsafe fn fill(s: &Seen, p: *mut RefusedPath, dirfd: i32, ptr: u64) {
    // SAFETY: as the caller promises; the user string is read through the
    // bounded probe helper into the record's own buffer.
    unsafe {
        clear(p);
        (*p).dirfd = dirfd;
        let n = bpf_probe_read_user_str(
            (*p).path.as_mut_ptr().cast::<c_void>(),
            REFUSED_PATH_BYTES as u32,
            ptr as *const c_void,
        );
        if n <= 1 {
            return;
        }
        (*p).path_len = (n - 1) as u16;
        if (*p).path[0] == b'/' {
            return;
        }
        let Some(base) = base_dir(s, dirfd) else {
            return;
        };
        if let Some(dentry) = read::<*const u8>(base, s.o.path_dentry) {
            (*p).protected = protected(&s.o, dentry).unwrap_or_default();
        }
        if !offsets::provided() {
            return;
        }
        let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
            return;
        };
        let len = path_walk::path(SLOT_A, base as u64);
        // The NUL included; a path longer than the record holds (or deeper
        // than the walk names: WALK_DEEP is far above it) is left for the
        // daemon to find from /proc.
        if len > 1 && len <= REFUSED_PATH_BYTES as i64 {
            probe_read_kernel(
                (*p).base.as_mut_ptr().cast::<c_void>(),
                REFUSED_PATH_BYTES as u32,
                (*scratch).keys[SLOT_A].path.as_ptr().cast::<c_void>(),
            );
            (*p).base_len = (len - 1) as u16;
        }
    }
}

/// The `struct path` a relative path starts from: the working directory,
/// or the directory descriptor's.
#[inline(always)]
fn base_dir(s: &Seen, dirfd: i32) -> Option<*const u8> {
    if dirfd == AT_FDCWD {
        // SAFETY: helper without arguments; the pointer is only probe-read.
        let task = unsafe { bpf_get_current_task() } as *const u8;
        let fs: *const u8 = read(task, off!(task_fs) as u32)?;
        return Some(fs.wrapping_add(s.r.fs_pwd as usize));
    }
    let file = fd_file(&s.r, dirfd as u32 as u64)?;
    Some(file.wrapping_add(s.o.file_f_path as usize))
}

/// The current task's open file `fd`.
#[inline(always)]
fn fd_file(r: &RefusedOffsets, fd: u64) -> Option<*const u8> {
    // SAFETY: helper without arguments; the pointer is only probe-read.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let files: *const u8 = read(task, r.task_files)?;
    let fdt: *const u8 = read(files, r.files_fdt)?;
    let max: u32 = read(fdt, r.fdtable_max_fds)?;
    if fd >= max as u64 {
        return None;
    }
    let fds: *const u8 = read(fdt, r.fdtable_fd)?;
    let file: *const u8 = read(fds, (fd * 8) as u32)?;
    (!file.is_null()).then_some(file)
}

/// The host pid a pidfd refers to: a pidfs file (6.9+), an anonymous-inode
/// pidfd (5.3-6.8), or a /proc/PID directory (pidfd_send_signal takes one).
#[inline(always)]
fn pidfd_pid(s: &Seen, fd: u64) -> Option<u32> {
    let r = &s.r;
    let file = fd_file(r, fd)?;
    let inode: *const u8 = read(file, r.file_f_inode)?;
    let sb: *const u8 = read(inode, r.inode_i_sb)?;
    let pid: *const u8 = match read::<u64>(sb, s.o.super_block_s_magic)? {
        PID_FS_MAGIC => read(inode, r.inode_i_private)?,
        PROC_SUPER_MAGIC => read(
            inode.wrapping_sub(r.proc_inode_vfs_inode as usize),
            r.proc_inode_pid,
        )?,
        ANON_INODE_FS_MAGIC => read(file, r.file_private_data)?,
        _ => return None,
    };
    let nr: i32 = read(pid, r.pid_numbers + r.upid_nr)?;
    (nr > 0).then_some(nr as u32)
}
