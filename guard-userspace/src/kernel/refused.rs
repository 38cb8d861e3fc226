//! The refusal observer (guard-ebpf refused.rs): its struct offsets, the
//! switch that puts it in force where the BPF LSM hooks are not, the calls
//! it leaves to a run's seccomp supervisor, and the counts of records the
//! per-agent allowance held back.
use std::collections::HashMap;

use aya::maps::{Array, MapData, PerCpuHashMap};
use guard_common::{
    Call, REFUSAL_CLASSES, RefusalCounts, RefusalSkip, RefusedOffsets, SKIP_ALWAYS, SKIP_FLAGS,
};

use super::{Kernel, KernelError, map_err};
use crate::btf;

/// Member offsets the observer reads, from the running kernel's BTF.
pub(super) fn refused_offsets() -> Result<RefusedOffsets, btf::BtfError> {
    let btf = btf::Btf::from_sys_fs()?;
    let m = |s: &str, f: &str| btf.member_offset(s, f);
    Ok(RefusedOffsets {
        task_files: m("task_struct", "files")?,
        files_fdt: m("files_struct", "fdt")?,
        fdtable_fd: m("fdtable", "fd")?,
        fdtable_max_fds: m("fdtable", "max_fds")?,
        file_f_inode: m("file", "f_inode")?,
        file_private_data: m("file", "private_data")?,
        inode_i_private: m("inode", "i_private")?,
        inode_i_sb: m("inode", "i_sb")?,
        pid_numbers: m("pid", "numbers")?,
        upid_nr: m("upid", "nr")?,
        proc_inode_pid: m("proc_inode", "pid")?,
        proc_inode_vfs_inode: m("proc_inode", "vfs_inode")?,
        kernfs_node_priv: m("kernfs_node", "priv")?,
        fs_pwd: m("fs_struct", "pwd")?,
        thread_status: m("task_struct", "thread_info")? + m("thread_info", "status")?,
        _pad: 0,
    })
}

/// Records the allowance held back, per agent cgroup and class, summed
/// over the CPUs: the daemon's handle on REFUSAL_SUPPRESSED.
pub struct RefusalCounters(PerCpuHashMap<MapData, u64, RefusalCounts>);

impl RefusalCounters {
    pub fn totals(&self) -> Result<HashMap<u64, [u64; REFUSAL_CLASSES]>, KernelError> {
        let mut out = HashMap::new();
        for item in self.0.iter() {
            let (cgroup_id, per_cpu) = item.map_err(map_err("REFUSAL_SUPPRESSED"))?;
            let mut sum = [0u64; REFUSAL_CLASSES];
            for counts in per_cpu.iter() {
                for (s, n) in sum.iter_mut().zip(counts.suppressed) {
                    *s += n;
                }
            }
            out.insert(cgroup_id, sum);
        }
        Ok(out)
    }
}

/// The observer's status until the daemon puts it in force.
pub(super) const NOT_WATCHED: &str = "not put in force (the daemon does where BPF LSM is not)";

impl super::GuardStatus {
    /// Whether the refusal observer can be put in force on this kernel
    /// (doctor asks before any daemon did): Ok, or why not.
    pub fn refusal_observer(&self) -> Result<(), String> {
        match (&self.escape, &self.refusals) {
            (Err(why), _) => Err(format!("tp_btf/sys_exit is not attached: {why}")),
            (_, Err(why)) if why != NOT_WATCHED => Err(why.clone()),
            _ => Ok(()),
        }
    }
}

impl Kernel {
    /// Puts the observer in force: every refusal of an agent's reach for
    /// the guard is reported from system call exit, except the calls in
    /// `supervised` (with, for opens, the flags that make them so), which
    /// a run's seccomp supervisor judges and reports itself. Only where
    /// the BPF LSM hooks are not in force: they report every refusal.
    /// `guard.refusals` says whether it is in force, and why not.
    pub fn watch_refusals(&mut self, supervised: &[(Call, Option<u32>)]) {
        self.guard.refusals = match self.guard.refusal_observer() {
            Ok(()) => self.enable_watch(supervised).map_err(|e| e.to_string()),
            Err(why) => Err(why),
        };
    }

    fn enable_watch(&mut self, supervised: &[(Call, Option<u32>)]) -> Result<(), KernelError> {
        {
            let map = self
                .ebpf
                .map_mut("REFUSAL_SKIP")
                .ok_or(KernelError::Missing("REFUSAL_SKIP"))?;
            let mut skip: Array<_, RefusalSkip> =
                Array::try_from(map).map_err(map_err("REFUSAL_SKIP"))?;
            for (call, flags) in supervised {
                let entry = match flags {
                    None => RefusalSkip {
                        when: SKIP_ALWAYS,
                        flags: 0,
                    },
                    Some(f) => RefusalSkip {
                        when: SKIP_FLAGS,
                        flags: *f,
                    },
                };
                skip.set(u32::from(call.raw()), entry, 0)
                    .map_err(map_err("REFUSAL_SKIP"))?;
            }
        }
        let map = self
            .ebpf
            .map_mut("REFUSAL_WATCH")
            .ok_or(KernelError::Missing("REFUSAL_WATCH"))?;
        let mut watch: Array<_, u32> = Array::try_from(map).map_err(map_err("REFUSAL_WATCH"))?;
        watch.set(0, 1, 0).map_err(map_err("REFUSAL_WATCH"))
    }

    /// Hands the suppressed-record counts to the daemon's reporting task.
    pub fn take_refusal_counters(&mut self) -> Result<RefusalCounters, KernelError> {
        let map = self
            .ebpf
            .take_map("REFUSAL_SUPPRESSED")
            .ok_or(KernelError::Missing("REFUSAL_SUPPRESSED"))?;
        Ok(RefusalCounters(
            PerCpuHashMap::try_from(map).map_err(map_err("REFUSAL_SUPPRESSED"))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    /// The running kernel's BTF names every member the observer reads.
    #[test]
    fn offsets_resolve_on_the_running_kernel() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            eprintln!("SKIPPED: no /sys/kernel/btf/vmlinux on this kernel");
            return;
        }
        let o = super::refused_offsets().expect("offsets");
        assert_ne!(o.task_files, 0);
        assert_ne!(o.fs_pwd, 0, "pwd follows root in fs_struct");
        assert_ne!(o.proc_inode_vfs_inode, 0);
    }
}
