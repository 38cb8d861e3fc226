//! Confining a `run`'s command with Landlock where the kernel's BPF LSM
//! self-defense hooks are not in force (kernels without BPF LSM, such as
//! this project's 6.18 CI kernel, where Landlock is active).
//!
//! What the command gets, and its descendants with it:
//! - any Landlock domain keeps ptrace, process_vm_readv/writev,
//!   pidfd_getfd and /proc/PID/mem from reaching processes outside it
//!   (ABI 1), so the daemon and the launcher are out of reach;
//! - `scope_signals` (ABI 6): no signal to a process outside the run;
//! - `hidden`: the daemon's state, policy, chain key, event logs and
//!   secrets can be neither read, written, created, removed nor renamed;
//! - `read_only`: the cgroup filesystems can be read, not written, so the
//!   command cannot leave its cgroup (cgroup.procs, cgroup.threads) or
//!   kill or freeze other cgroups.
//!
//! Landlock rules only grant. "Everything except X" is written as grants
//! on every entry beside the path down to X, taken when the run starts:
//! entries created later directly inside one of those parent directories
//! (for example `/` or `/run` for a state dir under /run) are not
//! reachable by the command. Directories the launcher cannot list are left
//! ungranted (the command, running as the same user, could not list them
//! either).
use std::{
    collections::BTreeSet,
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use landlock::{
    AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr as _, RulesetCreatedAttr as _,
    Scope,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What the daemon asks `run` to apply to its command (part of the
/// session's reply); empty where the kernel hooks cover every agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Files and directories the command may neither read nor change.
    #[serde(default)]
    pub hidden: Vec<PathBuf>,
    /// Trees the command may read but not change (cgroup filesystems).
    #[serde(default)]
    pub read_only: Vec<PathBuf>,
    /// No signals to processes outside the run (Landlock ABI 6).
    #[serde(default)]
    pub scope_signals: bool,
}

#[derive(Debug, Error)]
pub enum ConfineError {
    #[error("Landlock is not available on this kernel (ABI {0}); the run cannot be confined")]
    Unavailable(i32),
    #[error(
        "this kernel's Landlock ABI is {0}; refusing signals to processes outside the run \
         needs ABI 6 (Linux 6.12)"
    )]
    NoSignalScope(i32),
    #[error("building the Landlock ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
}

/// The Landlock ABI this kernel offers (0: none, or disabled at boot).
pub fn abi_version() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes no attribute pointer.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 { 0 } else { v as i32 }
}

/// The rights this confinement takes over: reading and changing files and
/// directory entries. Listing directories and executing stay ungoverned,
/// so `ls /` and `/bin/sh` are unaffected.
fn handled() -> BitFlags<AccessFs> {
    AccessFs::ReadFile
        | AccessFs::WriteFile
        | AccessFs::Truncate
        | AccessFs::RemoveDir
        | AccessFs::RemoveFile
        | AccessFs::MakeChar
        | AccessFs::MakeDir
        | AccessFs::MakeReg
        | AccessFs::MakeSock
        | AccessFs::MakeFifo
        | AccessFs::MakeBlock
        | AccessFs::MakeSym
        | AccessFs::Refer
}

/// Rights that apply to a file (the rest only make sense on directories).
fn file_rights() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate
}

/// A ruleset built in the launcher, to be put in force in the child
/// between fork and exec.
pub struct Prepared {
    fd: Option<OwnedFd>,
    /// The Landlock ABI the ruleset was built for.
    pub abi: i32,
}

impl Confinement {
    pub fn is_empty(&self) -> bool {
        self.hidden.is_empty() && self.read_only.is_empty() && !self.scope_signals
    }

    /// Builds the ruleset (opening every path it names) before the fork.
    pub fn prepare(&self) -> Result<Prepared, ConfineError> {
        let abi = abi_version();
        if abi < 1 {
            return Err(ConfineError::Unavailable(abi));
        }
        if self.scope_signals && abi < 6 {
            return Err(ConfineError::NoSignalScope(abi));
        }
        let mut ruleset = Ruleset::default().handle_access(handled())?;
        if self.scope_signals {
            ruleset = ruleset.scope(Scope::Signal)?;
        }
        let mut created = ruleset.create()?;
        for (path, rights) in grants(&self.hidden, &self.read_only) {
            let Ok(fd) = PathFd::new(&path) else {
                continue; // gone, or not ours to open: stays ungranted
            };
            let rights = if path.is_dir() {
                rights
            } else {
                rights & file_rights()
            };
            if rights.is_empty() {
                continue;
            }
            created = created.add_rule(PathBeneath::new(fd, rights))?;
        }
        Ok(Prepared {
            fd: created.into(),
            abi,
        })
    }
}

/// Every (path, rights) rule the confinement needs: full rights on each
/// entry beside the way down to a target, read rights on read-only
/// targets, nothing on hidden ones.
fn grants(hidden: &[PathBuf], read_only: &[PathBuf]) -> Vec<(PathBuf, BitFlags<AccessFs>)> {
    let canon = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    let hidden: Vec<PathBuf> = hidden.iter().map(canon).collect();
    let read_only: Vec<PathBuf> = read_only.iter().map(canon).collect();
    let targets: BTreeSet<&Path> = hidden
        .iter()
        .chain(read_only.iter())
        .map(PathBuf::as_path)
        .collect();
    // Directories on the way down to a target, the targets excluded.
    let mut parents = BTreeSet::new();
    for t in &targets {
        for a in t.ancestors().skip(1) {
            parents.insert(a.to_path_buf());
        }
    }
    let on_the_way = |p: &Path| targets.contains(p) || parents.contains(p);
    let mut out = Vec::new();
    for dir in parents.iter().filter(|d| !targets.contains(d.as_path())) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // A symlink is granted through whatever it points at, which
            // has its own place in the tree (and may be a target).
            if on_the_way(&path) || entry.file_type().is_ok_and(|t| t.is_symlink()) {
                continue;
            }
            out.push((path, handled()));
        }
    }
    for t in &read_only {
        out.push((t.clone(), AccessFs::ReadFile.into()));
    }
    out
}

impl Prepared {
    /// Puts the ruleset in force for the calling thread and everything it
    /// execs and forks, after setting no_new_privs (which Landlock needs).
    ///
    /// # Safety
    ///
    /// For the child between fork and exec (std `pre_exec`): two system
    /// calls on a file descriptor owned by `self`, nothing allocated.
    pub unsafe fn restrict_self(&self) -> Result<(), i32> {
        let fd: RawFd = self.fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        // SAFETY: plain system calls; errno read through its thread-local.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(*libc::__errno_location());
            }
            if fd < 0 {
                return Ok(()); // nothing to restrict with: no_new_privs only
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
                return Err(*libc::__errno_location());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_go_beside_the_path_to_each_target() {
        let root = tempfile_dir("grants");
        for d in ["a/secret", "a/open", "b"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::write(root.join("a/file"), b"x").expect("write");
        let rules = grants(&[root.join("a/secret")], &[]);
        let granted: BTreeSet<PathBuf> = rules.iter().map(|(p, _)| p.clone()).collect();
        assert!(granted.contains(&root.join("a/open")));
        assert!(granted.contains(&root.join("a/file")));
        assert!(granted.contains(&root.join("b")));
        assert!(
            !granted.contains(&root.join("a/secret")),
            "the target itself"
        );
        assert!(!granted.contains(&root.join("a")), "a directory on the way");
        assert!(!granted.iter().any(|p| root.join("a/secret").starts_with(p)));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn read_only_targets_get_read_rights() {
        let root = tempfile_dir("ro");
        std::fs::create_dir_all(root.join("cg")).expect("mkdir");
        let rules = grants(&[], &[root.join("cg")]);
        let cg = rules
            .iter()
            .find(|(p, _)| *p == root.join("cg"))
            .expect("rule on the read-only tree");
        assert_eq!(cg.1, BitFlags::from(AccessFs::ReadFile));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The real kernel, unprivileged: a command confined the way `run`
    /// confines it cannot read a hidden file or signal its parent, and
    /// still reads what is beside it.
    #[test]
    fn a_confined_command_cannot_read_hidden_files_or_signal_out() {
        use std::os::unix::process::CommandExt as _;
        if abi_version() < 6 {
            eprintln!("SKIPPED: Landlock ABI {} here, 6 needed", abi_version());
            return;
        }
        let root = tempfile_dir("real");
        std::fs::create_dir_all(root.join("secret")).expect("mkdir");
        std::fs::write(root.join("secret/key"), b"k").expect("write");
        std::fs::write(root.join("open"), b"o").expect("write");
        let prepared = Confinement {
            hidden: vec![root.join("secret")],
            read_only: vec![],
            scope_signals: true,
        }
        .prepare()
        .expect("ruleset");
        let script = format!(
            "cat {0}/secret/key && echo READ_SECRET; cat {0}/open; kill -0 $PPID && echo SIGNALLED; \
             grep NoNewPrivs /proc/self/status",
            root.display()
        );
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &script]);
        // SAFETY: restrict_self only makes system calls.
        unsafe {
            cmd.pre_exec(move || {
                prepared
                    .restrict_self()
                    .map_err(std::io::Error::from_raw_os_error)
            });
        }
        let out = cmd.output().expect("sh");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("READ_SECRET"), "{text}");
        assert!(!text.contains("SIGNALLED"), "{text}");
        assert!(
            text.starts_with('o'),
            "the file beside it stays readable: {text}"
        );
        assert!(text.contains("NoNewPrivs:\t1"), "{text}");
        let _ = std::fs::remove_dir_all(&root);
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("confine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::canonicalize(&dir).expect("canon")
    }
}
