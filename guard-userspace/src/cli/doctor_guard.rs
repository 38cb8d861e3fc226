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
    let mut lines = if lsm {
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
                what: "ptrace, process_vm_readv/writev, pidfd_getfd, process_madvise, /proc/PID/mem of guard processes",
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
                what: "ptrace, process_vm_readv/writev, pidfd_getfd, process_madvise, /proc/PID/mem of guard processes",
                run: landlock(1, "refused: nothing outside the run can be traced").and_then(
                    |how| {
                        if seccomp {
                            Ok(format!(
                                "{how}; process_madvise fails in the seccomp filter"
                            ))
                        } else {
                            Err("no seccomp user notification, so runs get no filter and \
                                 process_madvise is not refused"
                                .to_owned())
                        }
                    },
                ),
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
    // Every refusal above is an event: the hooks report their own; where
    // Landlock and the seccomp filter refuse, the observer at system call
    // exit reports for them.
    let observer = guard
        .map(GuardStatus::refusal_observer)
        .unwrap_or(Err("programs not loaded".into()));
    lines.push(if lsm {
        Line {
            what: "each refusal above is a guard.tamper or agent.escape event",
            run: Ok("reported by the BPF LSM hooks that refuse".into()),
            adopted: Ok("reported by the BPF LSM hooks that refuse".into()),
        }
    } else {
        Line {
            what: "each refusal above is a guard.tamper or agent.escape event",
            run: observer
                .map(|()| {
                    "reported from tp_btf/sys_exit (the call failed; its arguments name the \
                     target), at most 10 at once per agent and kind, the rest counted"
                        .to_owned()
                })
                .map_err(|why| format!("refusals go unreported: {why}")),
            // Nothing above is refused to an adopted process here (those
            // lines fail); the escapes it is killed for are reported.
            adopted: Ok("nothing above is refused to report but its escapes, \
                         which are agent.escape events"
                .into()),
        }
    });
    // The cgroup connect programs run for every agent process on every
    // backend: the page and metrics endpoint are closed to all of them.
    let connect = guard
        .map(|_| {
            "refused by cgroup/connect4 and connect6 whatever the policy, reported as a \
             net.connect event with rule `self-defense: ...`"
                .to_owned()
        })
        .ok_or_else(|| "programs not loaded".to_owned());
    lines.push(Line {
        what: "connect to the approval page or the metrics endpoint (a web token makes an approver)",
        run: connect.clone(),
        adopted: connect,
    });
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
    // What no hook on this backend sees: named, not left silent.
    for note in unobserved(lsm) {
        println!("  [note] {note}");
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

/// What an agent can do near the guard that this backend neither refuses
/// nor reports, or refuses without a word.
fn unobserved(lsm: bool) -> Vec<&'static str> {
    let mut notes = if lsm {
        vec![
            "not reported: SIGIO/SIGURG aimed at the guard through F_SETOWN when another \
             process's I/O raises it (refused all the same), and the kernel's own silent \
             permission probes (ps reading /proc/PID/stat)",
        ]
    } else {
        vec![
            "not reported for runs: kill(-1) and process-group signals, and SIGIO/SIGURG \
             through F_SETOWN (Landlock refuses them for the guard, but no call fails: the \
             kernel delivers what it may)",
            "not reported for runs: a refused path reached through a symlink the agent swaps \
             before the daemon reads the record (the daemon judges the new target)",
            "not refused for runs: reading /proc/PID/environ and cmdline of guard processes \
             (Landlock allows it)",
            "not named one by one: an agent's refused path calls beyond its allowance (10 at \
             once, then one a second) are counted together before the daemon can tell the \
             guard's files from ordinary permission failures, so a burst of ordinary failures \
             first leaves a reach for the guard's files counted, not named",
        ]
    };
    // The host's addresses are read again every 2 s (daemon/selfdefense.rs),
    // and a root agent may add one itself.
    notes.push(
        "not refused for up to 2 s: a connect to the page or the metrics endpoint, where \
         either listens on 0.0.0.0 or ::, at a host address added since the last read (an \
         agent with CAP_NET_ADMIN can add one, e.g. `ip addr add`, and connect at once); \
         listen on 127.0.0.1 to close it",
    );
    notes
}
