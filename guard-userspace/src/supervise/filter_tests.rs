//! The filter run on an interpreter of the classic BPF it uses.
use super::*;

/// Runs the subset of classic BPF the filter uses, like the kernel would.
fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            LD_ABS if i.k == OFF_ARCH => acc = arch,
            LD_ABS if i.k == OFF_NR => acc = nr,
            LD_ABS if i.k >= OFF_ARGS => acc = args[((i.k - OFF_ARGS) / 8) as usize] as u32,
            JEQ => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
            JGE => pc += usize::from(if acc >= i.k { i.jt } else { i.jf }),
            JSET => pc += usize::from(if acc & i.k != 0 { i.jt } else { i.jf }),
            JA => pc += i.k as usize,
            RET => return i.k,
            other => panic!("unexpected instruction {other:#x} at {}", pc - 1),
        }
    }
}

const NOTIF: u32 = libc::SECCOMP_RET_USER_NOTIF;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
const X64: u32 = AUDIT_ARCH_X86_64;
const I386: u32 = AUDIT_ARCH_I386;

#[test]
fn filter_routes_each_table() {
    let p = FilterProgram::default();
    let no = [0; 6];
    let cases = [
        (X64, 87, no, NOTIF),  // unlink
        (X64, 263, no, NOTIF), // unlinkat
        (X64, 84, no, NOTIF),  // rmdir
        (X64, 82, no, NOTIF),  // rename
        (X64, 316, no, NOTIF), // renameat2
        (X64, 77, no, NOTIF),  // ftruncate
        (X64, 0, no, ALLOW),
        (X64, 10, no, ALLOW), // x86_64 nr 10 is mprotect
        (X64, X32_SYSCALL_BIT + 87, no, ENOSYS),
        (X64, X32_SYSCALL_BIT, no, ENOSYS),
        (X64, u32::MAX, no, ENOSYS),
        (I386, 10, no, NOTIF),
        (I386, 301, no, NOTIF),
        (I386, 40, no, NOTIF),
        (I386, 193, no, NOTIF), // truncate64
        (I386, 87, no, ALLOW),
        (I386, 1, no, ALLOW),
        (X64, 321, no, EPERM), // bpf
        (I386, 357, no, EPERM),
        (X64, 440, no, EPERM), // process_madvise
        (I386, 440, no, EPERM),
        (X64, 435, no, ENOSYS), // clone3
        (I386, 435, no, ENOSYS),
        (X64, 56, no, ALLOW), // clone(2) without namespace flags stays
        (0xC000_00B7, 87, no, libc::SECCOMP_RET_KILL_PROCESS), // aarch64
        (0, 0, no, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    for (arch, nr, args, want) in cases {
        assert_eq!(
            run(&p.insns, arch, nr, args),
            want,
            "arch {arch:#x} nr {nr}"
        );
    }
}

#[test]
fn only_truncating_opens_reach_the_supervisor() {
    let p = FilterProgram::default();
    let (trunc, plain) = (u64::from(O_TRUNC), 0o1101u64 & !u64::from(O_TRUNC));
    // open(path, flags): flags are argument 1; openat: argument 2.
    assert_eq!(run(&p.insns, X64, 2, [0, trunc | 0o101, 0, 0, 0, 0]), NOTIF);
    assert_eq!(run(&p.insns, X64, 2, [0, plain, 0, 0, 0, 0]), ALLOW);
    assert_eq!(run(&p.insns, X64, 257, [0, 0, trunc, 0, 0, 0]), NOTIF);
    assert_eq!(run(&p.insns, X64, 257, [0, 0, 0o2, 0, 0, 0]), ALLOW);
    // Only the low 32 bits count, as the kernel reads an int.
    assert_eq!(run(&p.insns, X64, 257, [0, 0, trunc << 32, 0, 0, 0]), ALLOW);
    assert_eq!(run(&p.insns, I386, 295, [0, 0, trunc, 0, 0, 0]), NOTIF);
    assert_eq!(
        run(&p.insns, X64, 85, [0; 6]),
        NOTIF,
        "creat always truncates"
    );
    assert_eq!(
        run(&p.insns, X64, 437, [0; 6]),
        NOTIF,
        "openat2: flags in memory"
    );
}

#[test]
fn namespaces_and_mounts_by_policy() {
    let ns = u64::from(CLONE_NEWNS);
    let user = u64::from(CLONE_NEWUSER);
    let refuse = FilterProgram::default();
    let allow = FilterProgram::new(FilterOptions {
        allow_mounts: true,
        allow_io_uring: true,
    });
    let cases = [
        (165, [0; 6], NOTIF, ALLOW),                   // mount
        (272, [ns, 0, 0, 0, 0, 0], NOTIF, ALLOW),      // unshare -m
        (272, [user, 0, 0, 0, 0, 0], NOTIF, ALLOW),    // unshare -U
        (272, [0x400, 0, 0, 0, 0, 0], ALLOW, ALLOW),   // unshare(CLONE_FS)
        (56, [0x3d0f00, 0, 0, 0, 0, 0], ALLOW, ALLOW), // pthread_create's clone
        (56, [ns | 0x11, 0, 0, 0, 0, 0], NOTIF, ALLOW),
        (435, [0; 6], ENOSYS, ENOSYS), // clone3: also CLONE_INTO_CGROUP
        (321, [0; 6], EPERM, EPERM),   // bpf
        (440, [0; 6], EPERM, EPERM),   // process_madvise
        (308, [3, 0, 0, 0, 0, 0], NOTIF, ALLOW), // setns(fd, 0): any type
        (308, [3, 0x4000_0000, 0, 0, 0, 0], ALLOW, ALLOW), // setns(fd, CLONE_NEWNET)
        (308, [3, ns, 0, 0, 0, 0], NOTIF, ALLOW),
        (428, [0, 0, 1, 0, 0, 0], NOTIF, ALLOW), // open_tree(OPEN_TREE_CLONE)
        (428, [0, 0, 0, 0, 0, 0], ALLOW, ALLOW),
        (161, [0; 6], NOTIF, ALLOW), // chroot
        (425, [0; 6], NOTIF, ALLOW), // io_uring_setup
        (87, [0; 6], NOTIF, NOTIF),  // unlink: always
    ];
    for (nr, args, refused, allowed) in cases {
        assert_eq!(
            run(&refuse.insns, X64, nr, args),
            refused,
            "nr {nr} {args:?}"
        );
        assert_eq!(run(&allow.insns, X64, nr, args), allowed, "nr {nr} allowed");
    }
}

#[test]
fn every_jump_lands_inside_the_program() {
    for options in [
        FilterOptions::default(),
        FilterOptions {
            allow_mounts: true,
            allow_io_uring: true,
        },
    ] {
        let p = FilterProgram::new(options);
        let len = p.insns.len();
        assert!(len <= usize::from(u16::MAX) && len < 4096, "BPF_MAXINSNS");
        for (pc, i) in p.insns.iter().enumerate() {
            if matches!(i.code, JEQ | JGE | JSET) {
                assert!(pc + 1 + usize::from(i.jt) < len && pc + 1 + usize::from(i.jf) < len);
            }
            if i.code == JA {
                assert!(pc + 1 + (i.k as usize) < len);
            }
        }
        assert_eq!(p.insns[len - 1].code, RET);
    }
}

#[test]
fn classify_matches_the_table() {
    assert_eq!(classify(X64, 87), Some(Guarded::Unlink));
    assert_eq!(classify(X64, 263), Some(Guarded::Unlinkat));
    assert_eq!(classify(I386, 40), Some(Guarded::Rmdir));
    assert_eq!(classify(I386, 194), Some(Guarded::Ftruncate));
    assert_eq!(classify(X64, 194), None);
    assert_eq!(classify(I386, 87), None);
    assert_eq!(classify(X64, 10), None);
    assert_eq!(classify(X64, -1), None);
    // Every row's numbers classify back to its call.
    for r in SYSCALLS {
        for (arch, nr) in [(X64, r.x64), (I386, r.i386)] {
            if let Some(nr) = nr {
                assert_eq!(classify(arch, nr as i32), Some(r.call), "{arch:#x} {nr}");
            }
        }
    }
}

/// The refusal observer (guard-ebpf refused.rs) leaves to the supervisor
/// exactly the calls this filter hands it, or their refusals would be
/// reported twice (or not at all).
#[test]
fn notified_calls_are_left_to_the_supervisor() {
    let p = FilterProgram::default();
    let t = u64::from(O_TRUNC);
    let mut seen = Vec::new();
    for nr in 0..512u32 {
        let Some(call) = guard_common::Call::from_x86_64(u64::from(nr)) else {
            continue;
        };
        let skip = SUPERVISED_WATCHED
            .iter()
            .find(|(c, _)| *c == call)
            .map(|(_, f)| *f);
        if run(&p.insns, X64, nr, [0; 6]) == NOTIF {
            assert_eq!(skip, Some(None), "{call:?} is always notified");
            seen.push(call);
        } else if run(&p.insns, X64, nr, [0, t, t, 0, 0, 0]) == NOTIF {
            assert_eq!(skip, Some(Some(O_TRUNC)), "{call:?} is notified on O_TRUNC");
            seen.push(call);
        } else {
            assert_eq!(skip, None, "{call:?} is never notified");
        }
    }
    assert_eq!(seen.len(), SUPERVISED_WATCHED.len(), "{seen:?}");
}
