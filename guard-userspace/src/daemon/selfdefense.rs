//! Self-defense, the daemon's part: which files agents may not touch,
//! which processes are the guard's, which processes already belong to an
//! agent, and what `run` confines its command with where the kernel's BPF
//! LSM hooks are not in force.
use std::path::{Path, PathBuf};

use guard_common::{InodeKey, ROLE_DAEMON, ROLE_LAUNCHER};

use crate::{
    cgroup::Hierarchy,
    confine::Confinement,
    kernel::{GuardStatus, Kernel},
    policy::{Policy, sink::SinkKind},
};

/// What self-defense is in force, for the daemon's tasks and for `run`.
pub struct Guard {
    /// What the kernel programs do (escape detection, tamper hooks).
    pub status: GuardStatus,
    /// Files and directories agents may neither read nor change.
    pub protected: Vec<PathBuf>,
    /// What each `run` applies to its command: empty where the tamper
    /// hooks already cover every agent process.
    pub confine: Confinement,
    /// The per-agent allowance of the refusals the daemon reports itself.
    pub allowance: super::suppressed::Allowance,
}

impl Guard {
    /// The protected path that `path` (absolute, resolved) is or lies
    /// under, if any: whole components only.
    pub fn covering(&self, path: &str) -> Option<&Path> {
        let path = Path::new(path);
        self.protected
            .iter()
            .find(|p| path.starts_with(p))
            .map(PathBuf::as_path)
    }

    /// The `self_defense` object of `daemon.start`.
    pub fn summary(&self) -> crate::events::model::SelfDefense {
        let state = |r: &Result<(), String>| match r {
            Ok(()) => "in force".to_owned(),
            Err(why) => format!("unavailable: {why}"),
        };
        crate::events::model::SelfDefense {
            escape: state(&self.status.escape),
            lsm: state(&self.status.lsm),
            refusals: if self.status.lsm.is_ok() {
                "reported by the BPF LSM hooks".to_owned()
            } else {
                state(&self.status.refusals)
            },
            run_confinement: if self.confine.is_empty() {
                "none (BPF LSM hooks)"
            } else {
                "landlock"
            }
            .into(),
            protected: self
                .protected
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        }
    }
}

/// Everything agents must not read or change: the state directory, the
/// policy file, the chain key, the event logs (each file sink's directory,
/// which holds its rotations) and the surfaces' secrets.
pub fn protected_paths(
    policy: &Policy,
    state_dir: &Path,
    policy_path: Option<&Path>,
    chain_key: Option<&Path>,
) -> Vec<PathBuf> {
    // The bpffs with the pinned links is a filesystem of its own: its root
    // is protected by itself (the kernel looks for protection within one
    // filesystem).
    let mut paths = vec![state_dir.to_path_buf(), state_dir.join("bpf")];
    paths.extend(policy_path.map(Path::to_path_buf));
    paths.extend(chain_key.map(Path::to_path_buf));
    for sink in &policy.sinks {
        if let SinkKind::File { path, .. } = &sink.kind {
            if let Some(dir) = path.parent() {
                // The sink makes it a moment later anyway; it has to exist
                // now to be protected.
                if let Err(err) = std::fs::create_dir_all(dir) {
                    tracing::warn!(%err, dir = %dir.display(), "creating a file sink's directory");
                }
                paths.push(dir.to_path_buf());
            }
        }
    }
    paths.extend(policy.web.as_ref().map(|w| w.tokens_file.clone()));
    paths.extend(policy.notify.iter().map(|n| n.secret_file.clone()));
    // As the kernel resolves them (symlinks, relative paths).
    for p in &mut paths {
        if let Ok(real) = std::fs::canonicalize(&*p) {
            *p = real;
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// Arms self-defense in the kernel: the daemon's own process, the
/// protected files, and the processes already in each agent (whose later
/// forks the kernel follows itself). Returns what is in force and the
/// protected files' kernel keys (events name them).
pub fn arm<'a>(
    kernel: &mut Kernel,
    hierarchy: &Hierarchy,
    agents: impl Iterator<Item = (u64, &'a Path)>,
    protected: Vec<PathBuf>,
) -> (Guard, Vec<(InodeKey, PathBuf)>) {
    if let Err(err) = kernel.protect_process(std::process::id(), ROLE_DAEMON) {
        tracing::error!(%err, "the daemon could not mark itself as a guard process");
    }
    for (cgroup_id, dir) in agents {
        track(kernel, cgroup_id, dir);
    }
    let mut keys = Vec::new();
    for path in &protected {
        match kernel.protect_path(path) {
            Ok(key) => keys.push((key, path.clone())),
            // A file that does not exist yet (a sink's first file) is
            // covered through its directory; anything else is said.
            Err(err) => tracing::warn!(%err, "not protected from agents"),
        }
    }
    let lsm = kernel.guard.lsm.is_ok();
    if !lsm {
        // Landlock and the seccomp filter refuse silently: report their
        // refusals from system call exit, but leave the calls a run's
        // supervisor judges to it (one attempt, one event).
        kernel.watch_refusals(crate::supervise::SUPERVISED_WATCHED);
        if let Err(why) = &kernel.guard.refusals {
            tracing::warn!(%why, "refusals of agents' reach for the guard are not reported");
        }
    }
    // Landlock as far as this kernel has it; what it lacks, doctor names.
    let abi = crate::confine::abi_version();
    let confine = if lsm || abi < 1 {
        if !lsm {
            tracing::warn!(
                "no BPF LSM and no Landlock: runs cannot be confined (see `agent-guard doctor`)"
            );
        }
        Confinement::default()
    } else {
        Confinement {
            hidden: protected.clone(),
            read_only: Hierarchy::all_mounts().unwrap_or_else(|err| {
                tracing::warn!(%err, "listing cgroup mounts; confining runs from the cgroup2 root only");
                vec![hierarchy.root().to_path_buf()]
            }),
            scope_signals: abi >= 6,
        }
    };
    let guard = Guard {
        status: kernel.guard.clone(),
        protected,
        confine,
        allowance: Default::default(),
    };
    (guard, keys)
}

/// Records the processes already in an agent's cgroup tree as the agent's.
pub fn track(kernel: &mut Kernel, cgroup_id: u64, dir: &Path) {
    match kernel.track_agent_processes(cgroup_id, dir) {
        Ok(n) if n > 0 => {
            tracing::info!(cgroup = %dir.display(), processes = n, "agent processes tracked")
        }
        Ok(_) => {}
        Err(err) => tracing::error!(%err, cgroup = %dir.display(), "tracking agent processes"),
    }
}

/// A run's launcher is a guard process while its run lasts.
pub fn protect_launcher(kernel: &mut Kernel, pid: u32) {
    if let Err(err) = kernel.protect_process(pid, ROLE_LAUNCHER) {
        tracing::error!(%err, pid, "marking a run's launcher as a guard process");
    }
}
