//! The classic BPF seccomp filter and its installation between fork and exec.
use std::{mem::offset_of, os::fd::RawFd};

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "the seccomp supervisor's filter knows the x86_64 and i386 syscall tables only; \
     add this architecture's AUDIT_ARCH and syscall numbers"
);

/// `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE` (linux/audit.h).
pub(super) const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `EM_386 | __AUDIT_ARCH_LE`: `int 0x80` and 32-bit binaries.
pub(super) const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// Set in the syscall number of every x32-ABI call.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// arch/x86/entry/syscalls/syscall_64.tbl and syscall_32.tbl. Hard-coded rather
// than libc::SYS_*, which only describe the native table.
const X64_UNLINK: u32 = 87;
const X64_RMDIR: u32 = 84;
const X64_UNLINKAT: u32 = 263;
const I386_UNLINK: u32 = 10;
const I386_RMDIR: u32 = 40;
const I386_UNLINKAT: u32 = 301;
// Refused outright (self-defense): bpf(2) could detach the guard's links or
// rewrite its maps; clone3 can place a child in any cgroup
// (CLONE_INTO_CGROUP) and its flags sit behind a pointer a filter cannot
// read, so it fails with ENOSYS and libc falls back to clone(2).
// process_madvise could page a guard process's memory out (MADV_COLD,
// MADV_PAGEOUT): Landlock does not refuse it on 6.18 (measured), so the
// filter does, whatever the target (a filter cannot see whose pidfd it is).
const X64_BPF: u32 = 321;
const X64_CLONE3: u32 = 435;
const X64_PROCESS_MADVISE: u32 = 440;
const I386_BPF: u32 = 357;
const I386_CLONE3: u32 = 435;
const I386_PROCESS_MADVISE: u32 = 440;

/// Calls the refusal observer (guard-ebpf refused.rs) watches that this
/// filter hands the supervisor, which judges and reports them itself: the
/// observer leaves them alone, with (for opens) the flags that make the
/// filter hand them over. A row the filter notifies belongs here, or its
/// refusals are reported twice (`notified_calls_are_left_to_the_supervisor`).
/// None yet: this filter notifies unlink, unlinkat and rmdir only.
pub const SUPERVISED_WATCHED: &[(guard_common::Call, Option<u32>)] = &[];

/// A guarded system call, whatever table it came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Guarded {
    Unlink,
    Rmdir,
    Unlinkat,
}

/// Maps a notification's `(arch, nr)` back to the call; `None` for anything
/// the filter should not have sent.
pub(super) fn classify(arch: u32, nr: i32) -> Option<Guarded> {
    match (arch, nr as u32) {
        (AUDIT_ARCH_X86_64, X64_UNLINK) | (AUDIT_ARCH_I386, I386_UNLINK) => Some(Guarded::Unlink),
        (AUDIT_ARCH_X86_64, X64_RMDIR) | (AUDIT_ARCH_I386, I386_RMDIR) => Some(Guarded::Rmdir),
        (AUDIT_ARCH_X86_64, X64_UNLINKAT) | (AUDIT_ARCH_I386, I386_UNLINKAT) => {
            Some(Guarded::Unlinkat)
        }
        _ => None,
    }
}

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const OFF_NR: u32 = offset_of!(libc::seccomp_data, nr) as u32;
const OFF_ARCH: u32 = offset_of!(libc::seccomp_data, arch) as u32;

const fn ins(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

const LEN: usize = 23;

/// Jump offsets are relative to the next instruction; the targets are given
/// by index in the comments. Unit tests run this program on an interpreter.
const PROGRAM: [libc::sock_filter; LEN] = [
    /* 0 */ ins(LD_ABS, OFF_ARCH, 0, 0),
    /* 1 */ ins(JEQ, AUDIT_ARCH_X86_64, 0, 8), // → 2 : 10
    /* 2 */ ins(LD_ABS, OFF_NR, 0, 0),
    /* 3 */ ins(JGE, X32_SYSCALL_BIT, 17, 0), // → 21 : 4
    /* 4 */ ins(JEQ, X64_UNLINK, 14, 0), // → 19 : 5
    /* 5 */ ins(JEQ, X64_UNLINKAT, 13, 0), // → 19 : 6
    /* 6 */ ins(JEQ, X64_RMDIR, 12, 0), // → 19 : 7
    /* 7 */ ins(JEQ, X64_BPF, 14, 0), // → 22 : 8
    /* 8 */ ins(JEQ, X64_PROCESS_MADVISE, 13, 0), // → 22 : 9
    /* 9 */ ins(JEQ, X64_CLONE3, 11, 8), // → 21 : 18
    /* 10 */ ins(JEQ, AUDIT_ARCH_I386, 0, 9), // → 11 : 20
    /* 11 */ ins(LD_ABS, OFF_NR, 0, 0),
    /* 12 */ ins(JEQ, I386_UNLINK, 6, 0), // → 19 : 13
    /* 13 */ ins(JEQ, I386_UNLINKAT, 5, 0), // → 19 : 14
    /* 14 */ ins(JEQ, I386_RMDIR, 4, 0), // → 19 : 15
    /* 15 */ ins(JEQ, I386_BPF, 6, 0), // → 22 : 16
    /* 16 */ ins(JEQ, I386_PROCESS_MADVISE, 5, 0), // → 22 : 17
    /* 17 */ ins(JEQ, I386_CLONE3, 3, 0), // → 21 : 18
    /* 18 */ ins(RET, libc::SECCOMP_RET_ALLOW, 0, 0),
    /* 19 */ ins(RET, libc::SECCOMP_RET_USER_NOTIF, 0, 0),
    /* 20 */ ins(RET, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
    /* 21 */ ins(RET, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32, 0, 0),
    /* 22 */ ins(RET, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32, 0, 0),
];

/// The filter, built before the fork so the child only makes system calls.
pub struct FilterProgram {
    insns: [libc::sock_filter; LEN],
}

impl Default for FilterProgram {
    fn default() -> Self {
        Self::new()
    }
}

impl FilterProgram {
    pub fn new() -> Self {
        Self { insns: PROGRAM }
    }

    /// Sets `PR_SET_NO_NEW_PRIVS` and installs the filter on the calling
    /// thread; returns the listener fd (close-on-exec) or the errno.
    /// Async-signal-safe: two system calls on memory owned by `self`.
    ///
    /// # Safety
    ///
    /// Meant for the child between fork and exec (std `pre_exec`). From then
    /// on every unlink/unlinkat/rmdir of this thread and its descendants
    /// blocks until the returned fd is supervised (or fails with ENOSYS once
    /// the fd is closed), and no-new-privs disables setuid binaries; calling
    /// it in a process that is not about to exec would deadlock its own
    /// deletions. The caller must pass the fd on and close its copy before
    /// exec.
    pub unsafe fn install(&self) -> Result<RawFd, i32> {
        let prog = libc::sock_fprog {
            len: LEN as libc::c_ushort,
            // The kernel only reads the program (it copies it in).
            filter: self.insns.as_ptr().cast_mut(),
        };
        // SAFETY: prctl and seccomp with arguments that point at `prog` and
        // `self.insns`, both alive for the duration of the calls; reading
        // errno through its thread-local location allocates nothing.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(*libc::__errno_location());
            }
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
                    | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                &raw const prog,
            );
            if fd < 0 {
                return Err(*libc::__errno_location());
            }
            Ok(fd as RawFd)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the subset of classic BPF the filter uses, like the kernel would.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_ABS if i.k == OFF_ARCH => acc = arch,
                LD_ABS if i.k == OFF_NR => acc = nr,
                JEQ => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                JGE => pc += usize::from(if acc >= i.k { i.jt } else { i.jf }),
                RET => return i.k,
                other => panic!("unexpected instruction {other:#x} at {}", pc - 1),
            }
        }
    }

    #[test]
    fn filter_routes_each_table() {
        let p = FilterProgram::new();
        let notif = libc::SECCOMP_RET_USER_NOTIF;
        let allow = libc::SECCOMP_RET_ALLOW;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let cases = [
            (AUDIT_ARCH_X86_64, X64_UNLINK, notif),
            (AUDIT_ARCH_X86_64, X64_UNLINKAT, notif),
            (AUDIT_ARCH_X86_64, X64_RMDIR, notif),
            (AUDIT_ARCH_X86_64, 0, allow),
            (AUDIT_ARCH_X86_64, I386_UNLINK, allow), // x86_64 nr 10 is mprotect
            (AUDIT_ARCH_X86_64, 82, allow),          // rename: not guarded here
            (AUDIT_ARCH_X86_64, X64_BPF, eperm),
            (AUDIT_ARCH_X86_64, X64_PROCESS_MADVISE, eperm),
            (AUDIT_ARCH_X86_64, 439, allow), // faccessat2, its neighbour
            (AUDIT_ARCH_X86_64, X64_CLONE3, enosys),
            (AUDIT_ARCH_X86_64, 56, allow), // clone(2) stays
            (AUDIT_ARCH_I386, I386_BPF, eperm),
            (AUDIT_ARCH_I386, I386_PROCESS_MADVISE, eperm),
            (AUDIT_ARCH_I386, I386_CLONE3, enosys),
            (AUDIT_ARCH_I386, 120, allow), // i386 clone(2)
            (AUDIT_ARCH_X86_64, X32_SYSCALL_BIT + X64_UNLINK, enosys),
            (AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, enosys),
            (AUDIT_ARCH_X86_64, u32::MAX, enosys),
            (AUDIT_ARCH_I386, I386_UNLINK, notif),
            (AUDIT_ARCH_I386, I386_UNLINKAT, notif),
            (AUDIT_ARCH_I386, I386_RMDIR, notif),
            (AUDIT_ARCH_I386, X64_UNLINK, allow),
            (AUDIT_ARCH_I386, 1, allow),
            (0xC000_00B7, X64_UNLINK, libc::SECCOMP_RET_KILL_PROCESS), // aarch64
            (0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        ];
        for (arch, nr, want) in cases {
            assert_eq!(run(&p.insns, arch, nr), want, "arch {arch:#x} nr {nr:#x}");
        }
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        for (pc, i) in PROGRAM.iter().enumerate() {
            if i.code == JEQ || i.code == JGE {
                assert!(pc + 1 + usize::from(i.jt) < LEN && pc + 1 + usize::from(i.jf) < LEN);
            }
        }
        assert_eq!(PROGRAM[LEN - 1].code, RET);
    }

    #[test]
    fn notified_calls_are_left_to_the_supervisor() {
        let p = FilterProgram::new();
        for nr in 0..512u32 {
            let Some(call) = guard_common::Call::from_x86_64(u64::from(nr)) else {
                continue;
            };
            if run(&p.insns, AUDIT_ARCH_X86_64, nr) == libc::SECCOMP_RET_USER_NOTIF {
                assert!(
                    SUPERVISED_WATCHED.iter().any(|(c, _)| *c == call),
                    "{call:?} is notified but not in SUPERVISED_WATCHED"
                );
            }
        }
    }

    #[test]
    fn classify_matches_the_filter() {
        assert_eq!(classify(AUDIT_ARCH_X86_64, 87), Some(Guarded::Unlink));
        assert_eq!(classify(AUDIT_ARCH_X86_64, 263), Some(Guarded::Unlinkat));
        assert_eq!(classify(AUDIT_ARCH_I386, 40), Some(Guarded::Rmdir));
        assert_eq!(classify(AUDIT_ARCH_I386, 87), None);
        assert_eq!(classify(AUDIT_ARCH_X86_64, 10), None);
    }
}
