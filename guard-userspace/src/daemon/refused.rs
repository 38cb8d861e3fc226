//! Refused path calls seen at system call exit (guard-ebpf refused.rs):
//! which of them reached for the guard. The kernel sends every path call
//! of an agent that failed as refused; most are ordinary permission
//! failures, and only these become events:
//! - a path in or under a protected file or directory: `guard.tamper`,
//!   what `file` (found by the directory's inode where the kernel saw it,
//!   or by the resolved path);
//! - /proc/PID/... of a guard process or thread: `guard.tamper`, what
//!   `ptrace` (/proc checks ptrace's permission);
//! - a change to a cgroup filesystem outside the agent's own tree:
//!   `agent.escape`, how `cgroup_open`.
//!
//! Everything else is dropped: it is not the guard's refusal to report.
//! Attribution, not decoding: it needs the registry (the protected paths,
//! the guard's processes, the agents' cgroups).
use std::path::{Path, PathBuf};

use guard_common::{Call, RefusedPath, RefusedPathRecord};

use super::{
    attribute::{normalize, proc_base},
    registry::Registry,
};
use crate::events::model::{EscapeHow, EscapeTarget, GuardAction, Op, TamperTarget};

/// The call a refused path call was, or None when it did not reach for
/// the guard.
pub fn classify(rec: &RefusedPathRecord, registry: &Registry) -> Option<Op> {
    let call = Call::from_raw(rec.call);
    let write = writes(call, rec.flags);
    rec.paths.iter().filter(|p| p.path_len > 0).find_map(|p| {
        let found = reached(rec.header.pid, p, write, rec.header.agent_id, registry)?;
        let name = call.map(|c| c.name().to_owned());
        let path = Some(found.path.display().to_string());
        Some(match found.op {
            Found::Tamper(mut t) => {
                t.seen(name, path);
                Op::Tamper(t)
            }
            Found::Escape(mut t) => {
                t.call = name;
                t.path = path;
                Op::Escape(t)
            }
        })
    })
}

/// Whether the call would have changed what it names: every path call but
/// an open for reading only.
fn writes(call: Option<Call>, flags: u32) -> bool {
    let open = matches!(
        call,
        Some(Call::Open | Call::Openat | Call::Openat2 | Call::Creat)
    );
    let flags = flags as i32;
    !open
        || flags & libc::O_ACCMODE != libc::O_RDONLY
        || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
}

enum Found {
    Tamper(TamperTarget),
    Escape(EscapeTarget),
}

struct Reached {
    op: Found,
    /// The path as resolved.
    path: PathBuf,
}

fn text(bytes: &[u8], len: u16) -> String {
    let len = usize::from(len).min(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

/// What path argument `p` of process `pid` reached for, if it was the
/// guard's.
fn reached(
    pid: u32,
    p: &RefusedPath,
    write: bool,
    agent_id: u32,
    registry: &Registry,
) -> Option<Reached> {
    let raw = text(&p.path, p.path_len);
    let joined = if raw.starts_with('/') {
        raw
    } else if p.base_len > 0 {
        format!("{}/{raw}", text(&p.base, p.base_len))
    } else {
        // The kernel could not name the directory: /proc, while the
        // process lives.
        format!("{}/{raw}", proc_base(pid, p.dirfd).unwrap_or_default())
    };
    // The directory it starts from lies in a protected one: no name the
    // agent chose can hide that.
    if p.protected.ino != 0 {
        if let Some((_, prot)) = registry.protected.iter().find(|(k, _)| *k == p.protected) {
            return Some(file(prot, write, real(&joined)));
        }
    }
    let lexical = PathBuf::from(normalize(&joined));
    // /proc/PID/... is judged by its name: resolving it would follow the
    // guard process's own links (cwd, root).
    if let Some(target) = proc_target(&lexical, registry) {
        return Some(Reached {
            op: Found::Tamper(TamperTarget::Ptrace {
                action: GuardAction::Refused,
                pid: target,
                mode: None,
                request: None,
                fd: None,
                call: None,
                path: None,
            }),
            path: lexical,
        });
    }
    let path = real(&joined);
    if let Some((_, prot)) = registry
        .protected
        .iter()
        .find(|(_, prot)| path.starts_with(prot))
    {
        return Some(file(prot, write, path));
    }
    if write {
        return cgroup_escape(path, pid, agent_id, registry);
    }
    None
}

fn file(protected: &Path, write: bool, path: PathBuf) -> Reached {
    Reached {
        op: Found::Tamper(TamperTarget::File {
            action: GuardAction::Refused,
            protected: Some(protected.display().to_string()),
            write,
            call: None,
            path: None,
        }),
        path,
    }
}

/// The guard process whose /proc directory `path` is in, if any.
fn proc_target(path: &Path, registry: &Registry) -> Option<u32> {
    let mut parts = path.strip_prefix("/proc").ok()?.components();
    let id: u32 = parts.next()?.as_os_str().to_str()?.parse().ok()?;
    let guard = |pid: u32| {
        pid == std::process::id() || registry.sessions.values().any(|s| s.opener_pid == pid)
    };
    if guard(id) {
        return Some(id);
    }
    // A thread's id names it under /proc too.
    guard_host::proc::tgid(id).filter(|t| guard(*t))
}

/// The target of a run's change to a cgroup filesystem that the seccomp
/// supervisor refused (`Decide::cgroup_refused`), at real path `path`; None
/// inside the agent's own tree. A cgroup filesystem the daemon does not
/// know of (one the agent mounted itself) is reported all the same, with
/// no cgroup (0).
pub fn supervised_escape(
    path: &str,
    pid: u32,
    agent_id: u32,
    registry: &Registry,
) -> Option<EscapeTarget> {
    let path = PathBuf::from(path);
    let known = registry.cgroup_mounts.iter().any(|m| path.starts_with(m));
    let mut target = if known {
        match cgroup_escape(path.clone(), pid, agent_id, registry)?.op {
            Found::Escape(t) => t,
            Found::Tamper(_) => return None,
        }
    } else {
        EscapeTarget {
            how: EscapeHow::CgroupOpen,
            action: GuardAction::Refused,
            pid,
            cgroup_id: 0,
            cgroup: None,
            call: None,
            path: None,
        }
    };
    target.path = Some(path.display().to_string());
    Some(target)
}

/// A refused change to a cgroup filesystem outside the agent's own tree.
fn cgroup_escape(path: PathBuf, pid: u32, agent_id: u32, registry: &Registry) -> Option<Reached> {
    let mount = registry
        .cgroup_mounts
        .iter()
        .find(|m| path.starts_with(m) && path != **m)?;
    // The cgroup a file belongs to, or a new cgroup's parent.
    let dir = path.parent()?.to_path_buf();
    if let Some(agent) = registry.agent(agent_id) {
        if dir.starts_with(&agent.cgroup_dir) {
            return None; // its own tree: the confinement's price, not a way out
        }
    }
    let cgroup = Path::new("/").join(dir.strip_prefix(mount).ok()?);
    Some(Reached {
        op: Found::Escape(EscapeTarget {
            how: EscapeHow::CgroupOpen,
            action: GuardAction::Refused,
            pid,
            cgroup_id: guard_host::cgroup::id(&dir).unwrap_or(0),
            cgroup: Some(cgroup.display().to_string()),
            call: None,
            path: None,
        }),
        path,
    })
}

/// The path as the kernel resolved it: symlinks and ".." followed where
/// the path exists, and for a name about to be made, its directory's.
fn real(joined: &str) -> PathBuf {
    let path = Path::new(joined);
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        if let Ok(dir) = std::fs::canonicalize(dir) {
            return dir.join(name);
        }
    }
    PathBuf::from(normalize(joined))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reading_opens_do_not_write() {
        let rdonly = libc::O_RDONLY as u32;
        assert!(!writes(Some(Call::Openat), rdonly));
        assert!(writes(Some(Call::Openat), libc::O_WRONLY as u32));
        assert!(writes(
            Some(Call::Open),
            (libc::O_RDONLY | libc::O_CREAT) as u32
        ));
        assert!(writes(Some(Call::Mkdirat), 0));
        assert!(writes(None, 0));
    }

    #[test]
    fn real_paths_follow_what_exists() {
        let dir = std::env::temp_dir().join(format!("refused-real-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).expect("mkdir");
        let dir = std::fs::canonicalize(&dir).expect("canon");
        std::os::unix::fs::symlink(dir.join("a"), dir.join("link")).expect("symlink");
        let j = |s: &str| format!("{}/{s}", dir.display());
        assert_eq!(real(&j("link/new")), dir.join("a/new"));
        assert_eq!(real(&j("a/../a/./x")), dir.join("a/x"));
        assert_eq!(real(&j("missing/deeper/x")), dir.join("missing/deeper/x"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A record of one refused path call by this process.
    fn record(call: Call, flags: u32, path: &str, base: &str) -> RefusedPathRecord {
        // SAFETY: a plain repr(C) record: all zeros is a valid one.
        let mut rec: RefusedPathRecord = unsafe { std::mem::zeroed() };
        rec.header.pid = std::process::id();
        rec.call = call.raw();
        rec.flags = flags;
        let p = &mut rec.paths[0];
        p.dirfd = -100;
        p.path[..path.len()].copy_from_slice(path.as_bytes());
        p.path_len = path.len() as u16;
        p.base[..base.len()].copy_from_slice(base.as_bytes());
        p.base_len = base.len() as u16;
        rec
    }

    /// The target, as JSON, of what `rec` reached for.
    fn target(op: Op) -> (&'static str, serde_json::Value) {
        (op.kind().name(), op.target_json())
    }

    #[test]
    fn refused_paths_are_the_guards_or_nothing() {
        let dir = std::env::temp_dir().join(format!("refused-classify-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("secret")).expect("mkdir");
        std::fs::create_dir_all(dir.join("cg/other")).expect("mkdir");
        std::fs::create_dir_all(dir.join("open")).expect("mkdir");
        let dir = std::fs::canonicalize(&dir).expect("canon");
        let d = |rel: &str| format!("{}/{rel}", dir.display());
        let policy = crate::policy::parse("test.toml", "").expect("an empty policy");
        let mut registry = Registry::new(policy);
        let key = guard_common::InodeKey { dev: 1, ino: 2 };
        registry.protected = vec![(key, dir.join("secret"))];
        registry.cgroup_mounts = vec![dir.join("cg")];
        let classify = |rec: RefusedPathRecord| classify(&rec, &registry).map(target);
        let rdonly = libc::O_RDONLY as u32;

        let (kind, t) =
            classify(record(Call::Openat, rdonly, &d("secret/key"), "")).expect("the guard's");
        assert_eq!(kind, "guard.tamper");
        assert_eq!(t["what"], "file");
        assert_eq!(t["protected"], d("secret"));
        assert_eq!(t["write"], false);
        assert_eq!(t["call"], "openat");
        assert_eq!(t["path"], d("secret/key"));

        // Relative, with ".." and the kernel's base directory.
        let (_, t) =
            classify(record(Call::Mkdirat, 0, "open/../secret/new", &d(""))).expect("the guard's");
        assert_eq!(t["protected"], d("secret"));
        assert_eq!(t["write"], true);

        let (_, t) = classify(record(
            Call::Openat,
            rdonly,
            &format!("/proc/{}/mem", std::process::id()),
            "",
        ))
        .expect("a guard process's /proc entry");
        assert_eq!(t["what"], "ptrace");
        assert_eq!(t["pid"], std::process::id());

        // A write to a cgroup file outside the agent; reading one is not.
        let procs = d("cg/other/cgroup.procs");
        let (kind, t) =
            classify(record(Call::Openat, libc::O_WRONLY as u32, &procs, "")).expect("an escape");
        assert_eq!(kind, "agent.escape");
        assert_eq!(t["cgroup"], "/other");
        assert_eq!(t["action"], "refused");
        assert!(classify(record(Call::Openat, rdonly, &procs, "")).is_none());

        // An ordinary refusal is not the guard's to report.
        assert!(classify(record(Call::Openat, rdonly, &d("open/x"), "")).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_base_directory_inside_a_protected_one_is_found_by_inode() {
        let policy = crate::policy::parse("test.toml", "").expect("an empty policy");
        let mut registry = Registry::new(policy);
        let key = guard_common::InodeKey { dev: 7, ino: 9 };
        registry.protected = vec![(key, PathBuf::from("/var/lib/agent-guard"))];
        let mut rec = record(Call::Openat, libc::O_RDONLY as u32, "chain.json", "");
        rec.paths[0].protected = key;
        let (_, t) = classify(&rec, &registry).map(target).expect("the guard's");
        assert_eq!(t["protected"], "/var/lib/agent-guard");
    }

    #[test]
    fn proc_entries_of_the_daemon_are_its() {
        let policy = crate::policy::parse("test.toml", "").expect("an empty policy");
        let registry = Registry::new(policy);
        let me = std::process::id();
        let p = PathBuf::from(format!("/proc/{me}/mem"));
        assert_eq!(proc_target(&p, &registry), Some(me));
        assert_eq!(proc_target(Path::new("/proc/self/mem"), &registry), None);
        assert_eq!(proc_target(Path::new("/etc/passwd"), &registry), None);
    }
}
