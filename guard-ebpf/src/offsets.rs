//! Kernel struct member offsets of the running kernel, from its BTF, and
//! reads of kernel memory at them.
use aya_ebpf::{cty::c_void, helpers::generated::bpf_probe_read_kernel};
use guard_common::KernelOffsets;

/// Written by the daemon at load time (a frozen read-only global, so the
/// verifier sees each field as a constant). Zero means "not provided": the
/// programs then fail closed for agents instead of reading a wrong field.
#[unsafe(no_mangle)]
pub(crate) static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    dentry_d_name: 0,
    qstr_name: 0,
    dentry_d_parent: 0,
    path_mnt: 0,
    path_dentry: 0,
    vfsmount_mnt_root: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    task_fs: 0,
    fs_root: 0,
    dentry_d_inode: 0,
    inode_i_mode: 0,
    task_flags: 0,
    mount_mnt_ns: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    file_f_path: 0,
    unix_sock_path: 0,
    unix_sock_addr: 0,
    unix_address_len: 0,
    unix_address_name: 0,
    socket_sk: 0,
    sock_addr_kern_uaddr: 0,
    sock_addr_kern_uaddrlen: 0,
    task_self_exec_id: 0,
};

/// One field of [`KERNEL_OFFSETS`], read so the compiler cannot fold the
/// zero it was compiled with.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: plain read of a read-only global.
        unsafe { core::ptr::read_volatile(&raw const crate::offsets::KERNEL_OFFSETS.$field) as u64 }
    };
}
pub(crate) use off;

/// Whether the loader provided the offsets at all.
#[inline(always)]
pub fn provided() -> bool {
    off!(dentry_d_name) != 0
}

/// A pointer-sized kernel value at `addr`, 0 if it cannot be read.
#[inline(always)]
pub fn read_u64(addr: u64) -> u64 {
    let mut value: u64 = 0;
    // SAFETY: the probe helper reads kernel memory safely (fails on a fault).
    let rc = unsafe {
        bpf_probe_read_kernel((&raw mut value).cast::<c_void>(), 8, addr as *const c_void)
    };
    if rc == 0 { value } else { 0 }
}

/// A 32-bit kernel value at `addr`, 0 if it cannot be read.
#[inline(always)]
pub fn read_u32(addr: u64) -> u32 {
    let mut value: u32 = 0;
    // SAFETY: as in read_u64.
    let rc = unsafe {
        bpf_probe_read_kernel((&raw mut value).cast::<c_void>(), 4, addr as *const c_void)
    };
    if rc == 0 { value } else { 0 }
}

/// A 16-bit kernel value at `addr`, 0 if it cannot be read.
#[inline(always)]
pub fn read_u16(addr: u64) -> u16 {
    let mut value: u16 = 0;
    // SAFETY: as in read_u64.
    let rc = unsafe {
        bpf_probe_read_kernel((&raw mut value).cast::<c_void>(), 2, addr as *const c_void)
    };
    if rc == 0 { value } else { 0 }
}

/// `dentry->d_inode->i_mode`, or None for a negative dentry (no object).
#[inline(always)]
pub fn dentry_mode(dentry: u64) -> Option<u16> {
    let inode = read_u64(dentry + off!(dentry_d_inode));
    if inode == 0 {
        return None;
    }
    Some(read_u16(inode + off!(inode_i_mode)))
}
