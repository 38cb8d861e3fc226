//! Self-defense programs (guard-ebpf's escape.rs and tamper.rs): loading,
//! attaching, and the maps the daemon fills: which processes are agents'
//! (AGENT_PROCS), which are the guard's (GUARD_PIDS), which files no
//! agent may open (PROTECTED) and where the daemon listens (GUARD_LISTEN).
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, LpmTrie, MapError, lpm_trie::Key},
    programs::{BtfTracePoint, Lsm},
};
use guard_common::{AgentProc, GuardOffsets, GuardProcess, InodeKey, ListenKey};

use super::{Attachment, Kernel, KernelError, describe_load_error, map_err, typed_program};
use crate::btf;

/// The escape tracepoints: (program, tracepoint). All four load wherever
/// tp_btf does (this 6.18 kernel included).
const ESCAPE_TRACEPOINTS: [(&str, &str); 4] = [
    ("guard_fork", "sched_process_fork"),
    ("guard_free", "sched_process_free"),
    ("guard_cgroup_attach", "cgroup_attach_task"),
    ("guard_sys_exit", "sys_exit"),
];

/// The tamper LSM hooks: (program, hook).
const TAMPER_HOOKS: [(&str, &str); 9] = [
    ("guard_task_kill", "task_kill"),
    ("guard_sigiotask", "file_send_sigiotask"),
    ("guard_ptrace", "ptrace_access_check"),
    ("guard_bpf", "bpf"),
    ("guard_file_open", "file_open"),
    ("guard_path_unlink", "path_unlink"),
    ("guard_path_rmdir", "path_rmdir"),
    ("guard_path_rename", "path_rename"),
    ("guard_path_truncate", "path_truncate"),
];

/// What of self-defense is in force in the kernel, and why not.
#[derive(Clone, Debug)]
pub struct GuardStatus {
    /// Escape detection (tp_btf): Ok, or why not.
    pub escape: Result<(), String>,
    /// The tamper LSM hooks: Ok, or why not.
    pub lsm: Result<(), String>,
    /// The refusal observer at system call exit (where the LSM hooks are
    /// not in force): Ok once the daemon put it in force, or why not.
    pub refusals: Result<(), String>,
}

impl GuardStatus {
    pub(super) fn unavailable(why: &str) -> Self {
        Self {
            escape: Err(why.to_owned()),
            lsm: Err(why.to_owned()),
            refusals: Err(why.to_owned()),
        }
    }
}

/// Member offsets the self-defense programs read, from the running
/// kernel's BTF.
pub(super) fn guard_offsets() -> Result<GuardOffsets, btf::BtfError> {
    let btf = btf::Btf::from_sys_fs()?;
    let m = |s: &str, f: &str| btf.member_offset(s, f);
    Ok(GuardOffsets {
        task_pid: m("task_struct", "pid")?,
        task_tgid: m("task_struct", "tgid")?,
        task_start_boottime: m("task_struct", "start_boottime")?,
        task_group_leader: m("task_struct", "group_leader")?,
        task_cgroups: m("task_struct", "cgroups")?,
        css_set_dfl_cgrp: m("css_set", "dfl_cgrp")?,
        cgroup_level: m("cgroup", "level")?,
        cgroup_ancestors: m("cgroup", "ancestors")?,
        cgroup_kn: m("cgroup", "kn")?,
        kernfs_node_id: m("kernfs_node", "id")?,
        file_f_path: m("file", "f_path")?,
        file_f_mode: m("file", "f_mode")?,
        path_dentry: m("path", "dentry")?,
        dentry_d_parent: m("dentry", "d_parent")?,
        dentry_d_inode: m("dentry", "d_inode")?,
        dentry_d_sb: m("dentry", "d_sb")?,
        inode_i_ino: m("inode", "i_ino")?,
        super_block_s_dev: m("super_block", "s_dev")?,
        super_block_s_magic: m("super_block", "s_magic")?,
        _pad: 0,
    })
}

/// Loads and attaches the tamper hooks; the caller has the delete hooks
/// attached, so BPF LSM is known to work here.
pub(super) fn load_tamper(ebpf: &mut Ebpf, links: &mut Vec<Attachment>) -> Result<(), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    for (name, hook) in TAMPER_HOOKS {
        let prog: &mut Lsm = typed_program(ebpf, name).map_err(|e| e.to_string())?;
        let attached = prog
            .load(hook, &btf)
            .and_then(|()| prog.attach())
            .and_then(|id| prog.take_link(id));
        match attached {
            Ok(link) => links.push(Attachment::Owned(name.to_owned(), link.into())),
            Err(err) => {
                return Err(format!(
                    "the kernel refused lsm/{hook} (BPF_PROG_TYPE_LSM): {}",
                    describe_load_error(&err)
                ));
            }
        }
    }
    Ok(())
}

/// The kernel's encoding of a device number (MAJOR << 20 | MINOR), as in
/// `super_block.s_dev`; stat(2) gives the user encoding.
fn kernel_dev(dev: u64) -> u64 {
    let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
    (major << 20) | minor
}

impl Kernel {
    /// Loads and attaches the escape tracepoints. Not an error for the
    /// daemon if it fails: `guard.escape` says why, and doctor shows it.
    pub(super) fn attach_escape_guard(&mut self) -> Result<(), String> {
        let btf = aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
        for (name, tracepoint) in ESCAPE_TRACEPOINTS {
            let prog: &mut BtfTracePoint =
                typed_program(&mut self.ebpf, name).map_err(|e| e.to_string())?;
            let attached = prog
                .load(tracepoint, &btf)
                .and_then(|()| prog.attach())
                .and_then(|id| prog.take_link(id));
            let link = attached.map_err(|err| {
                format!(
                    "the kernel refused tp_btf/{tracepoint} (BPF_PROG_TYPE_TRACING): {}",
                    describe_load_error(&err)
                )
            })?;
            self.keep(name.to_owned(), link.into())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn guard_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut aya::maps::MapData, K, V>, KernelError> {
        let map = self.ebpf.map_mut(name).ok_or(KernelError::Missing(name))?;
        BpfHashMap::try_from(map).map_err(map_err(name))
    }

    /// Records every process now in `dir` (an agent's cgroup) and below
    /// as the agent's, so that one leaving later is recognised. Processes
    /// forked or placed from now on are recorded by the kernel itself.
    /// Returns how many were recorded.
    pub fn track_agent_processes(
        &mut self,
        agent_cgroup_id: u64,
        dir: &Path,
    ) -> Result<usize, KernelError> {
        let mut pids = Vec::new();
        collect_pids(dir, &mut pids, 0);
        let mut map = self.guard_map::<u32, AgentProc>("AGENT_PROCS")?;
        let mut n = 0;
        for pid in pids {
            let Some(stat) = guard_host::proc::stat(pid) else {
                continue; // gone meanwhile
            };
            let entry = AgentProc {
                agent_cgroup_id,
                start_ticks: stat.start_time,
            };
            map.insert(pid, entry, 0).map_err(map_err("AGENT_PROCS"))?;
            n += 1;
        }
        Ok(n)
    }

    /// Marks `pid` as a process of the guard (the daemon itself, a `run`
    /// launcher): agent processes may not signal, trace or read it.
    pub fn protect_process(&mut self, pid: u32, role: u32) -> Result<(), KernelError> {
        let Some(stat) = guard_host::proc::stat(pid) else {
            return Ok(()); // already gone: nothing to protect
        };
        let entry = GuardProcess {
            start_ticks: stat.start_time,
            role,
            tgid: pid,
        };
        let mut map = self.guard_map::<u32, GuardProcess>("GUARD_PIDS")?;
        map.insert(pid, entry, 0).map_err(map_err("GUARD_PIDS"))?;
        // Its threads so far; the kernel adds the ones it starts later.
        for tid in guard_host::proc::threads(pid) {
            if tid != pid {
                map.insert(tid, entry, 0).map_err(map_err("GUARD_PIDS"))?;
            }
        }
        Ok(())
    }

    pub fn unprotect_process(&mut self, pid: u32) {
        if let Ok(mut map) = self.guard_map::<u32, GuardProcess>("GUARD_PIDS") {
            let _ = map.remove(&pid);
            for tid in guard_host::proc::threads(pid) {
                if map.get(&tid, 0).is_ok_and(|g| g.tgid == pid) {
                    let _ = map.remove(&tid);
                }
            }
        }
    }

    /// Puts the file or directory at `path` (and, for a directory,
    /// everything below it) out of agents' reach where the tamper hooks
    /// are in force. A path that does not exist yet is created by the
    /// caller first, or skipped with an error.
    pub fn protect_path(&mut self, path: &Path) -> Result<InodeKey, KernelError> {
        let meta = std::fs::metadata(path).map_err(|source| KernelError::Protect {
            path: path.display().to_string(),
            source,
        })?;
        let key = InodeKey {
            dev: kernel_dev(meta.dev()),
            ino: meta.ino(),
        };
        self.guard_map::<InodeKey, u32>("PROTECTED")?
            .insert(key, 1, 0)
            .map_err(map_err("PROTECTED"))?;
        Ok(key)
    }
}

impl Kernel {
    /// Makes `entries` ((prefix length, key, surface)) the whole of
    /// GUARD_LISTEN: where agents may not connect to the daemon. Entries
    /// of an earlier start (a pinned map reused) or an earlier address
    /// set are removed once the new ones are in.
    pub fn set_guard_listeners(
        &mut self,
        entries: &[(u32, ListenKey, u32)],
    ) -> Result<(), KernelError> {
        const NAME: &str = "GUARD_LISTEN";
        let map = self.ebpf.map_mut(NAME).ok_or(KernelError::Missing(NAME))?;
        let mut trie: LpmTrie<_, ListenKey, u32> = LpmTrie::try_from(map).map_err(map_err(NAME))?;
        for (prefix_len, key, surface) in entries {
            trie.insert(&Key::new(*prefix_len, *key), surface, 0)
                .map_err(map_err(NAME))?;
        }
        let stale: Vec<_> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                !entries
                    .iter()
                    .any(|(len, key, _)| *len == k.prefix_len() && *key == k.data())
            })
            .collect();
        for key in stale {
            match trie.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(NAME)(e)),
            }
        }
        Ok(())
    }
}

/// Pids in `dir`'s cgroup.procs and below (bounded depth: cgroups nest at
/// most 64 levels).
fn collect_pids(dir: &Path, out: &mut Vec<u32>, depth: u32) {
    if depth > 64 {
        return;
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let subdirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    for sub in subdirs {
        collect_pids(&sub, out, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_dev_matches_the_kernel_encoding() {
        // stat's 0xfe00 is device 254:0; the kernel keeps it as 254 << 20.
        assert_eq!(super::kernel_dev(0xfe00), 254 << 20);
        // tmpfs and other anonymous devices: major 0, minor N.
        assert_eq!(super::kernel_dev(libc::makedev(0, 45)), 45);
    }
}
