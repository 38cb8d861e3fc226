//! A directory's absolute path without bpf_d_path, for kernels that do not
//! allow that helper in the path hooks (6.1 among them).
//!
//! Like the kernel's own prepend_path(): climb d_parent to the mount's root,
//! cross to the mountpoint in the parent mount, repeat until the root mount.
//! Names are collected leaf-first, then written root-first. Like bpf_d_path
//! it stops at the calling task's root (current->fs->root), so a chrooted or
//! containerised agent's paths are its own view. Difference: a path deeper
//! than MAX_COMPONENTS is truncated to its first components, which still
//! hold every rule prefix that fits the map key.
//!
//! Both loops run under bpf_loop (5.17+): the verifier checks each body once.
//! Written as plain bounded loops they took the 6.1 verifier over a minute
//! under emulation (measured in the QEMU tier).
use aya_ebpf::{
    cty::c_void,
    helpers::generated::{
        bpf_get_current_task, bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str,
    },
};
use guard_common::KernelOffsets;

use crate::maps::{SCRATCH, Scratch};

/// Deepest directory the walk names in full.
pub const MAX_COMPONENTS: usize = 32;
/// Steps up the tree, counting mount crossings.
const MAX_STEPS: u32 = MAX_COMPONENTS as u32 + 16;

#[inline(always)]
fn read_ptr(addr: u64) -> u64 {
    let mut value: u64 = 0;
    // SAFETY: the probe helper reads kernel memory safely (0 on fault).
    let rc = unsafe {
        bpf_probe_read_kernel((&raw mut value).cast::<c_void>(), 8, addr as *const c_void)
    };
    if rc == 0 { value } else { 0 }
}

/// State shared by the loop callbacks (lives on the caller's stack).
#[repr(C)]
struct Walk {
    dentry: u64,
    mnt: u64,
    /// The task's root: (struct mount *, struct dentry *).
    root_mnt: u64,
    root_dentry: u64,
    /// Components collected so far, then written so far.
    n: u64,
    /// Write position in the scratch path.
    pos: u64,
    failed: u64,
    o: KernelOffsets,
}

/// One step up: from `dentry` to its parent, or across a mount.
#[inline(never)]
extern "C" fn climb(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer to our stack `Walk`.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    let o = &w.o;
    if w.dentry == w.root_dentry && w.mnt == w.root_mnt {
        return 1; // the task's root (chroot or container): done
    }
    let root = read_ptr(w.mnt + (o.mount_mnt + o.vfsmount_mnt_root) as u64);
    if w.dentry == root {
        let parent = read_ptr(w.mnt + o.mount_mnt_parent as u64);
        if parent == w.mnt || parent == 0 {
            return 1; // the root mount: done
        }
        w.dentry = read_ptr(w.mnt + o.mount_mnt_mountpoint as u64);
        w.mnt = parent;
        return 0;
    }
    let up = read_ptr(w.dentry + o.dentry_d_parent as u64);
    if up == w.dentry || up == 0 || w.n >= MAX_COMPONENTS as u64 {
        return 1; // a detached tree's root, or deeper than we name
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        w.failed = 1;
        return 1;
    };
    let name = read_ptr(w.dentry + (o.dentry_d_name + o.qstr_name) as u64);
    // SAFETY: per-CPU scratch value; index bounded just above.
    unsafe {
        if let Some(slot) = (*s).names.get_mut(w.n as usize & (MAX_COMPONENTS - 1)) {
            *slot = name;
        }
    }
    w.n += 1;
    w.dentry = up;
    0
}

/// Writes "/<name>" for the component `index` places from the root.
#[inline(never)]
extern "C" fn write(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer to our stack `Walk`.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    if index >= w.n || w.pos >= 256 {
        return 1; // done, or the key's bytes are all written
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        w.failed = 1;
        return 1;
    };
    // SAFETY: per-CPU scratch value; every offset is masked into bounds and
    // `at` < 256 with a 256-byte read keeps writes inside the 512 bytes.
    unsafe {
        let leaf_first = (w.n - 1 - index) as usize & (MAX_COMPONENTS - 1);
        let name = (*s).names[leaf_first];
        (*s).path[w.pos as usize & 0xff] = b'/';
        let at = (w.pos as usize + 1) & 0xff;
        let m = bpf_probe_read_kernel_str(
            (*s).path.as_mut_ptr().add(at).cast::<c_void>(),
            256,
            name as *const c_void,
        );
        if m <= 0 {
            w.failed = 1;
            return 1;
        }
        w.pos = (at + ((m as usize - 1) & 0xff)) as u64;
    }
    0
}

/// Writes the path of `dir` (a `struct path *`) into `s.path` with a NUL,
/// like bpf_d_path: returns the length including the NUL, or a negative
/// number when it cannot. Truncated paths are returned as far as they go.
#[inline(always)]
pub fn dir_path(s: &mut Scratch, dir: *const u8, o: &KernelOffsets) -> i64 {
    let dir = dir as u64;
    let dentry = read_ptr(dir + o.path_dentry as u64);
    let vfsmount = read_ptr(dir + o.path_mnt as u64);
    if dentry == 0 || vfsmount == 0 {
        return -1;
    }
    // SAFETY: helper without arguments; the pointer is only probe-read.
    let task = unsafe { bpf_get_current_task() };
    let fs = read_ptr(task + o.task_fs as u64);
    let root_vfsmount = read_ptr(fs + (o.fs_root + o.path_mnt) as u64);
    let root_dentry = read_ptr(fs + (o.fs_root + o.path_dentry) as u64);
    if fs == 0 || root_vfsmount == 0 || root_dentry == 0 {
        return -1;
    }
    let mut w = Walk {
        dentry,
        // struct mount embeds the vfsmount at offset mount_mnt.
        mnt: vfsmount - o.mount_mnt as u64,
        root_mnt: root_vfsmount - o.mount_mnt as u64,
        root_dentry,
        n: 0,
        pos: 0,
        failed: 0,
        o: *o,
    };
    let ctx = (&raw mut w).cast::<c_void>();
    // SAFETY: callbacks are BPF subprograms of this object; ctx is our stack.
    unsafe {
        bpf_loop(MAX_STEPS, climb as *mut c_void, ctx, 0);
    }
    if w.failed != 0 {
        return -1;
    }
    if w.n == 0 {
        s.path[0] = b'/';
        s.path[1] = 0;
        return 2;
    }
    // SAFETY: as above.
    unsafe {
        bpf_loop(MAX_COMPONENTS as u32, write as *mut c_void, ctx, 0);
    }
    if w.failed != 0 {
        return -1;
    }
    let end = w.pos as usize & 0x1ff;
    if let Some(b) = s.path.get_mut(end) {
        *b = 0;
    }
    (end + 1) as i64
}
