//! `agent-guard doctor`: what this kernel lets agent-guard do, probed by
//! loading the real programs (never guessed from version numbers), which
//! backend each operation gets, and what to change for full enforcement.
use std::{fs, path::Path, process::ExitCode};

use anyhow::Result;

use crate::{
    btf,
    cgroup::Hierarchy,
    daemon,
    kernel::{Kernel, LsmStatus, UnixBackend},
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

    /// Something this kernel lacks that another part covers.
    fn note(&self, what: &str, detail: &str) {
        println!("  [ -- ] {what}: {detail}");
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
        true,
        "web page callers",
        "no agent process can connect to the page or the metrics endpoint (cgroup \
         connect programs, every backend); a token holder outside the agents is an \
         approver, so keep the tokens file from agents (self-defense below)",
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
                "cgroup sock_addr programs (cgroup/connect4, connect6, sendmsg4, sendmsg6)",
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
    let unix = kernel.as_ref().map(|k| k.unix.clone());
    let guard = kernel.as_ref().map(|k| k.guard.clone());
    match &lsm {
        Some(status @ LsmStatus::Attached { paths, missing, .. }) => {
            report.line(
                true,
                "LSM programs (BPF trampolines)",
                &format!(
                    "{} load and attach (unlink/rmdir paths by {paths})",
                    status.hook_list()
                ),
            );
            for (hook, why) in missing {
                report.note(&format!("lsm/{hook} not used"), why);
            }
        }
        Some(LsmStatus::Unavailable(why)) => {
            report.line(false, "LSM programs (BPF trampolines)", why)
        }
        None => {}
    }
    if let Some(UnixBackend::Cgroup) = &unix {
        report.line(
            true,
            "cgroup/connect_unix, cgroup/sendmsg_unix (6.7+)",
            "loaded",
        );
    }
    drop(kernel);
    let io_uring = fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|_| "absent".into());
    report.line(
        true,
        "io_uring",
        &match io_uring.as_str() {
            "0" => "enabled (kernel.io_uring_disabled = 0)".to_owned(),
            "absent" => {
                "kernel.io_uring_disabled not present (io_uring enabled, or not built)".to_owned()
            }
            v => format!("kernel.io_uring_disabled = {v}"),
        },
    );

    let lsm_ok = matches!(lsm, Some(LsmStatus::Attached { .. }));
    let has = |hook: &str| lsm.as_ref().is_some_and(|l| l.has(hook));
    println!("backends:");
    println!(
        "  connect and datagrams: cgroup/connect4, connect6, sendmsg4, sendmsg6 on each agent \
         cgroup (every process of the agent; UDP sent without connect included)"
    );
    let mut open_doors: Vec<String> = Vec::new();
    match &unix {
        Some(UnixBackend::Lsm) => println!(
            "  unix sockets: lsm/unix_stream_connect and lsm/unix_may_send, host-wide: the peer \
             socket's real path (or @abstract name) is judged"
        ),
        Some(UnixBackend::Cgroup) => {
            println!(
                "  unix sockets: cgroup/connect_unix and cgroup/sendmsg_unix on each agent cgroup: \
                 the address as the agent wrote it is judged"
            );
            open_doors.push(
                "unix sockets reached through a symlink the agent made: without BPF LSM the \
                 kernel judges the address as written, before it resolves it (relative and \
                 non-canonical addresses are refused to agents a unix rule guards)"
                    .into(),
            );
        }
        Some(UnixBackend::None(why)) => {
            report.degraded = true;
            println!("  unix sockets: none ({why})");
            open_doors.push(format!("unix: rules cannot be enforced: {why}"));
        }
        None => {}
    }
    if unix.is_some() {
        // A policy fact, the same on both backends: named here so that an
        // operator sizing a connects budget sees what it leaves out.
        println!(
            "  unix sockets and budgets: no budget counts them (a missing socket's connect is \
             seen only without BPF LSM); a connects budget caps IPv4/IPv6 only, so deny or ask \
             for a local proxy's or daemon's socket to bound what goes through it"
        );
    }
    if lsm_ok {
        println!(
            "  unlink, rmdir, rename, link, truncate: BPF LSM, host-wide (every process of the \
             agent, however started; io_uring operations included)"
        );
        if !has("file_truncate") {
            println!(
                "    (no lsm/file_truncate before 6.2: lsm/path_truncate sees every truncation there)"
            );
        }
        println!(
            "  mounts: lsm/sb_mount, move_mount, sb_pivotroot, path_chroot{} refuse them to agents \
             without allow_mounts = true",
            if has("userns_create") {
                ", userns_create"
            } else {
                ""
            }
        );
        open_doors.push(
            "new mount namespaces (unshare -m, setns): no LSM hook sees them; every mount, \
             pivot_root and chroot inside one is refused, so they give no second path"
                .into(),
        );
        open_doors.push(
            "detached trees (open_tree, fsmount): no LSM hook refuses making one; a guarded \
             call through one has no path from the agent's root and is refused"
                .into(),
        );
        if !has("userns_create") {
            open_doors.push(
                "new user namespaces: this kernel has no lsm/userns_create (6.1+); mounts \
                 inside them are still refused"
                    .into(),
            );
        }
        println!(
            "  io_uring: allowed; BPF LSM sees its operations. A held (ask) call that comes \
             through io_uring cannot be rewound: it is refused"
        );
    } else if seccomp {
        println!(
            "  unlink, rmdir, rename, link, truncate (and O_TRUNC opens): seccomp supervision, \
             only for processes started with `agent-guard run`;\n    other processes in an \
             agent cgroup: their unlink/rmdir are observed, the rest unseen"
        );
        println!(
            "  mounts: mount, move_mount, open_tree, fsopen/fsmount/fspick, mount_setattr, \
             pivot_root, chroot, and unshare/clone/setns of mount or user namespaces are \
             refused to runs without allow_mounts = true"
        );
        println!(
            "  io_uring: io_uring_setup fails with EPERM in runs unless the agent sets \
             allow_io_uring = true: seccomp cannot see io_uring operations, so a run allowed \
             io_uring can rename, unlink and truncate through it unguarded"
        );
        open_doors.push(
            "processes placed in an agent cgroup by other means than `agent-guard run`: \
             without BPF LSM their file operations, mounts and io_uring are not governed"
                .into(),
        );
    } else {
        println!("  file operations, mounts, io_uring: none available");
        open_doors.push("file operations, mounts and io_uring are not governed at all".into());
    }
    // No cgroup hook sees what a raw or packet socket sends (sendmsg4/6
    // run for UDP only), on any kernel.
    open_doors.push(
        "raw and packet sockets (SOCK_RAW, AF_PACKET): no hook of agent-guard judges what they \
         send, so an agent with CAP_NET_RAW can reach a denied address; run agents without \
         CAP_NET_RAW"
            .into(),
    );
    println!("doors this kernel cannot close:");
    if open_doors.is_empty() {
        println!("  none");
    }
    for door in &open_doors {
        println!("  - {door}");
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
                "file operations enforced only under `agent-guard run`"
            } else {
                report.missing = true;
                "delete rules cannot be enforced"
            };
            println!("  agent {}: {status}", agent.name);
            if agent.allow_io_uring && !lsm_ok {
                report.degraded = true;
                println!(
                    "    allow_io_uring = true: its runs can reach files through io_uring, \
                     which this kernel's backend cannot see"
                );
            }
        }
        for warning in crate::policy::path_warnings(&policy) {
            report.degraded = true;
            println!("  warning: {warning}");
        }
    } else if !lsm_ok {
        report.degraded = true;
    }

    protections(lsm_ok, seccomp);

    if !lsm_ok {
        println!(
            "to govern file operations host-wide: boot a kernel with CONFIG_BPF_LSM=y, BPF trampolines \
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
