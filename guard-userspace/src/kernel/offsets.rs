//! Struct member offsets of the running kernel, from its BTF, for the
//! programs (Rust eBPF objects get no CO-RE relocations).
use guard_common::KernelOffsets;

use crate::btf;

/// Offsets from the running kernel's BTF, or why they are unavailable.
/// The unix and sock_addr ones are optional: 0 where the kernel lacks them
/// (the programs that need them are then not used).
pub(super) fn kernel_offsets() -> Result<KernelOffsets, btf::BtfError> {
    let btf = btf::Btf::from_sys_fs()?;
    let optional = |s: &str, m: &str| btf.member_offset(s, m).unwrap_or(0);
    let unix = [
        btf.member_offset("unix_sock", "path"),
        btf.member_offset("unix_sock", "addr"),
        btf.member_offset("unix_address", "len"),
        btf.member_offset("unix_address", "name"),
        btf.member_offset("socket", "sk"),
    ];
    let unix = if unix.iter().all(Result::is_ok) {
        unix.map(|r| r.unwrap_or(0))
    } else {
        [0; 5]
    };
    Ok(KernelOffsets {
        dentry_d_name: btf.member_offset("dentry", "d_name")?,
        qstr_name: btf.member_offset("qstr", "name")?,
        dentry_d_parent: btf.member_offset("dentry", "d_parent")?,
        path_mnt: btf.member_offset("path", "mnt")?,
        path_dentry: btf.member_offset("path", "dentry")?,
        vfsmount_mnt_root: btf.member_offset("vfsmount", "mnt_root")?,
        mount_mnt: btf.member_offset("mount", "mnt")?,
        mount_mnt_parent: btf.member_offset("mount", "mnt_parent")?,
        mount_mnt_mountpoint: btf.member_offset("mount", "mnt_mountpoint")?,
        task_fs: btf.member_offset("task_struct", "fs")?,
        fs_root: btf.member_offset("fs_struct", "root")?,
        dentry_d_inode: btf.member_offset("dentry", "d_inode")?,
        inode_i_mode: btf.member_offset("inode", "i_mode")?,
        task_flags: btf.member_offset("task_struct", "flags")?,
        mount_mnt_ns: btf.member_offset("mount", "mnt_ns")?,
        task_nsproxy: btf.member_offset("task_struct", "nsproxy")?,
        nsproxy_mnt_ns: btf.member_offset("nsproxy", "mnt_ns")?,
        file_f_path: btf.member_offset("file", "f_path")?,
        unix_sock_path: unix[0],
        unix_sock_addr: unix[1],
        unix_address_len: unix[2],
        unix_address_name: unix[3],
        socket_sk: unix[4],
        sock_addr_kern_uaddr: optional("bpf_sock_addr_kern", "uaddr"),
        sock_addr_kern_uaddrlen: optional("bpf_sock_addr_kern", "uaddrlen"),
        task_self_exec_id: optional("task_struct", "self_exec_id"),
    })
}
