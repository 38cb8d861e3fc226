//! `agent-guard doctor`: what this kernel lets agent-guard do, probed by
//! loading the real programs (never guessed from version numbers), which
//! backend each operation gets, and what to change for full enforcement.
use std::{fs, path::Path, process::ExitCode};

use anyhow::Result;

use crate::{
    btf,
    cgroup::Hierarchy,
    daemon,
    kernel::{Kernel, LsmStatus},
};

/// Exit statuses: every rule of the policy enforceable / some only partly
/// (degraded) / a feature agent-guard needs is missing.
const EXIT_DEGRADED: u8 = 2;
const EXIT_MISSING: u8 = 1;

struct Report {
    missing: bool,
    degraded: bool,
}

impl Report {
    fn line(&self, ok: bool, what: &str, detail: &str) {
        println!("  [{}] {what}: {detail}", if ok { " ok " } else { "FAIL" });
    }
}

/// The guard's own defences this kernel gives (control plane, holds,
/// staying up), per backend, and what it cannot close.
fn protections(lsm: bool, seccomp: bool) {
    println!("protections:");
    let line = |ok: bool, what: &str, detail: &str| {
        println!("  [{}] {what}: {detail}", if ok { " ok " } else { "note" });
    };
    let pidfd = guard_host::peer::peer_pidfd_supported();
    line(
        true,
        "agents have no say in the control plane",
        "a caller inside any agent cgroup is refused every decision, change, read (but \
         its own pending holds) and run, whatever its uid; stop and reload signals from \
         inside an agent are refused",
    );
    line(
        pidfd,
        "control-plane callers pinned against pid reuse",
        if pidfd {
            "SO_PEERPIDFD: the connecting process itself, checked at each request"
        } else {
            "no SO_PEERPIDFD (Linux < 6.5): a pidfd opened at accept and the start time; a \
             pid reused between connect and accept cannot be told apart"
        },
    );
    line(
        false,
        "web page callers",
        "a token holder is an approver; the page cannot tell whether a request comes from \
         inside an agent, so keep the tokens file out of agents' reach",
    );
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((0, 0));
    line(
        hard >= 65536,
        "open files",
        &format!(
            "soft {soft}, hard {hard}: the daemon raises its soft limit to the hard one and \
             caps connections per caller and overall from it{}",
            if hard >= 65536 {
                ""
            } else {
                " (set LimitNOFILE, as deploy/agent-guard.service does)"
            }
        ),
    );
    line(
        true,
        "failures do not release enforcement",
        "a failed task is restarted and reported (daemon.task); only a stop from outside \
         every agent releases enforcement",
    );
    line(
        true,
        "connect holds bound to the held call",
        "a decision applies to the same thread, process, address and port only",
    );
    if lsm {
        line(
            true,
            "LSM delete holds bound to the held call",
            "a decision applies to the same thread, process, operation and path only \
             (paths longer than 250 bytes by their first 250)",
        );
    } else if seccomp {
        line(
            true,
            "supervised delete holds bound to the held call",
            "the daemon performs exactly the call it held, in the directory it held open",
        );
    }
}

pub fn run(policy_path: Option<&Path>) -> Result<ExitCode> {
    daemon::require_root("doctor (it probes by loading eBPF programs)")?;
    let mut report = Report {
        missing: false,
        degraded: false,
    };
    println!(
        "kernel {}",
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!("features:");

    match Hierarchy::discover() {
        Ok(h) => report.line(
            true,
            "cgroup v2",
            &format!("mounted at {}", h.root().display()),
        ),
        Err(err) => {
            report.missing = true;
            report.line(false, "cgroup v2", &err.to_string());
        }
    }
    match btf::Btf::from_sys_fs().and_then(|b| b.member_offset("dentry", "d_name")) {
        Ok(off) => report.line(
            true,
            "BTF",
            &format!("{} (dentry.d_name at {off})", btf::VMLINUX),
        ),
        Err(err) => {
            report.degraded = true;
            report.line(false, "BTF", &err.to_string());
        }
    }
    let lsm_list = fs::read_to_string("/sys/kernel/security/lsm");
    match &lsm_list {
        Ok(list) => {
            let active = list.split(',').any(|l| l.trim() == "bpf");
            report.line(active, "BPF LSM in the active LSM list", list.trim());
        }
        Err(err) => report.line(
            false,
            "BPF LSM in the active LSM list",
            &format!("cannot read /sys/kernel/security/lsm ({err}); is securityfs mounted?"),
        ),
    }
    let seccomp = crate::kernel::seccomp_user_notif_available();
    report.line(
        seccomp,
        "seccomp user notification",
        if seccomp {
            "available"
        } else {
            "not available"
        },
    );

    let kernel = match Kernel::load(None) {
        Ok(k) => {
            report.line(
                true,
                "cgroup sock_addr programs (cgroup/connect4, connect6)",
                "loaded",
            );
            Some(k)
        }
        Err(err) => {
            report.missing = true;
            report.line(false, "cgroup sock_addr programs", &err.to_string());
            None
        }
    };
    let lsm = kernel.as_ref().map(|k| k.lsm.clone());
    let guard = kernel.as_ref().map(|k| k.guard.clone());
    match &lsm {
        Some(LsmStatus::Attached { paths }) => report.line(
            true,
            "LSM programs (BPF trampolines)",
            &format!("lsm/path_unlink and lsm/path_rmdir load and attach (paths by {paths})"),
        ),
        Some(LsmStatus::Unavailable(why)) => {
            report.line(false, "LSM programs (BPF trampolines)", why)
        }
        None => {}
    }
    drop(kernel);

    println!("backends:");
    println!(
        "  connect: cgroup/connect4 + cgroup/connect6 on each agent cgroup (every process of the agent)"
    );
    let lsm_ok = matches!(lsm, Some(LsmStatus::Attached { .. }));
    if lsm_ok {
        println!(
            "  unlink/rmdir: BPF LSM, host-wide (every process of the agent, however started)"
        );
    } else if seccomp {
        println!(
            "  unlink/rmdir: seccomp supervision, only for processes started with `agent-guard run`;\n    \
             other processes in an agent cgroup are observed, not blocked"
        );
    } else {
        println!("  unlink/rmdir: none available");
    }

    if !super::doctor_guard::report(guard.as_ref(), seccomp) {
        report.degraded = true;
    }

    if let Some(path) = policy_path {
        let policy = daemon::load_policy(Some(path))?;
        println!("policy {}:", path.display());
        for agent in &policy.agents {
            let guards_deletes = agent.delete.guards_anything();
            let status = if !guards_deletes || lsm_ok {
                "fully enforceable"
            } else if seccomp {
                report.degraded = true;
                "deletes enforced only under `agent-guard run`"
            } else {
                report.missing = true;
                "delete rules cannot be enforced"
            };
            println!("  agent {}: {status}", agent.name);
        }
    } else if !lsm_ok {
        report.degraded = true;
    }

    protections(lsm_ok, seccomp);

    if !lsm_ok {
        println!(
            "to enforce deletes host-wide: boot a kernel with CONFIG_BPF_LSM=y, BPF trampolines \
             allowed, and \"bpf\" in the LSM list\n  (kernel command line: lsm=lockdown,capability,landlock,yama,apparmor,bpf)"
        );
    }
    Ok(if report.missing {
        ExitCode::from(EXIT_MISSING)
    } else if report.degraded {
        ExitCode::from(EXIT_DEGRADED)
    } else {
        ExitCode::SUCCESS
    })
}
