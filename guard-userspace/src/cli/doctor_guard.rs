//! `agent-guard doctor`, self-defense part: each protection of the guard
//! against its own agents, for runs (`agent-guard run`) and for adopted
//! cgroups, as in force or not on this kernel, and why.
use crate::{confine, kernel::GuardStatus};

/// One protection: what it keeps agents from, and how (or why not) for
/// each class of agent process.
struct Line {
    what: &'static str,
    run: Result<String, String>,
    adopted: Result<String, String>,
}

/// Prints the section; returns whether every protection is in force for
/// every agent process.
pub fn report(guard: Option<&GuardStatus>, seccomp: bool) -> bool {
    let lsm = guard.is_some_and(|g| g.lsm.is_ok());
    let escape = guard
        .map(|g| g.escape.clone())
        .unwrap_or(Err("programs not loaded".into()));
    let abi = confine::abi_version();
    let landlock = |need: i32, how: &str| -> Result<String, String> {
        if abi >= need {
            Ok(format!("{how} (Landlock ABI {abi})"))
        } else {
            Err(format!("needs Landlock ABI {need}, this kernel has {abi}"))
        }
    };
    let no_lsm =
        "no BPF LSM on this kernel and no other hook reaches a process not started by `run`";
    let lines = if lsm {
        let hook = |h: &str| Ok(format!("refused by {h}"));
        vec![
            Line {
                what: "leave the agent's cgroup tree",
                run: hook(
                    "lsm/file_open (cgroup files outside the tree); anything else killed by tp_btf/cgroup_attach_task",
                ),
                adopted: hook(
                    "lsm/file_open (cgroup files outside the tree); anything else killed by tp_btf/cgroup_attach_task",
                ),
            },
            Line {
                what: "signal the daemon or a run's launcher",
                run: hook("lsm/task_kill and lsm/file_send_sigiotask"),
                adopted: hook("lsm/task_kill and lsm/file_send_sigiotask"),
            },
            Line {
                what: "ptrace, process_vm_readv/writev, pidfd_getfd, /proc/PID/mem of guard processes",
                run: hook("lsm/ptrace_access_check"),
                adopted: hook("lsm/ptrace_access_check"),
            },
            Line {
                what: "bpf(2): detach the guard's links, rewrite its maps",
                run: hook("lsm/bpf"),
                adopted: hook("lsm/bpf"),
            },
            Line {
                what: "read or change the state dir, policy, chain key, event logs, secrets",
                run: hook(
                    "lsm/file_open and lsm/path_unlink, path_rmdir, path_rename, path_truncate",
                ),
                adopted: hook(
                    "lsm/file_open and lsm/path_unlink, path_rmdir, path_rename, path_truncate",
                ),
            },
        ]
    } else {
        let killed = escape
            .as_ref()
            .map(|()| {
                "killed before its write returns (tp_btf/cgroup_attach_task); a process moved out \
                 by another agent process, or a clone3(CLONE_INTO_CGROUP) child, is killed when it \
                 next leaves a system call"
                    .to_owned()
            })
            .map_err(|why| format!("escape detection unavailable: {why}"));
        let filter = if seccomp {
            Ok("refused by the run's seccomp filter (EPERM)".to_owned())
        } else {
            Err("no seccomp user notification, so runs get no filter".to_owned())
        };
        vec![
            Line {
                what: "leave the agent's cgroup tree",
                run: landlock(
                    1,
                    "refused: cgroup filesystems read-only, clone3 ENOSYS in the filter",
                ),
                adopted: killed,
            },
            Line {
                what: "signal the daemon or a run's launcher",
                run: landlock(
                    6,
                    "refused: no signal leaves the run (Landlock signal scope)",
                ),
                adopted: Err(no_lsm.into()),
            },
            Line {
                what: "ptrace, process_vm_readv/writev, pidfd_getfd, /proc/PID/mem of guard processes",
                run: landlock(1, "refused: nothing outside the run can be traced"),
                adopted: Err(no_lsm.into()),
            },
            Line {
                what: "bpf(2): detach the guard's links, rewrite its maps",
                run: filter,
                adopted: Err(no_lsm.into()),
            },
            Line {
                what: "read or change the state dir, policy, chain key, event logs, secrets",
                run: landlock(1, "refused"),
                adopted: Err(no_lsm.into()),
            },
        ]
    };
    println!("self-defense (what an agent process cannot do to the guard):");
    let mut all = true;
    for line in &lines {
        println!("  {}:", line.what);
        for (who, r) in [("run", &line.run), ("adopted", &line.adopted)] {
            all &= r.is_ok();
            match r {
                Ok(how) => println!("    [ ok ] {who}: {how}"),
                Err(why) => println!("    [FAIL] {who}: NOT stopped: {why}"),
            }
        }
    }
    println!(
        "  runs: no_new_privs and a non-dumpable launcher on every backend{}",
        if lsm {
            ""
        } else {
            "; a run that cannot be confined does not start"
        }
    );
    all
}
