//! An object's absolute path without bpf_d_path: for kernels that do not
//! allow that helper in the path hooks (6.1 among them), and for every
//! hook where it is not allowed at all.
//!
//! Like the kernel's own prepend_path(): climb d_parent to the mount's root,
//! cross to the mountpoint in the parent mount, repeat until the root mount.
//! Names are collected leaf-first, then written root-first. Like bpf_d_path
//! it stops at the calling task's root (current->fs->root), so a chrooted or
//! containerised agent's paths are its own view. Differences:
//! - a path deeper than MAX_COMPONENTS is truncated to its first
//!   components, which still hold every rule prefix that fits the map key;
//! - an object the task's root does not lead to (a detached tree from
//!   open_tree or fsmount, a mount of another namespace, something outside
//!   a chroot) has no path at all, where bpf_d_path would print one
//!   relative to that tree's own root, which a policy could never name.
//!
//! Both loops run under bpf_loop (5.17+): the verifier checks each body once.
//! Written as plain bounded loops they took the 6.1 verifier over a minute
//! under emulation (measured in the QEMU tier).
use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_get_current_task, bpf_loop, bpf_probe_read_kernel_str},
};

use crate::{
    maps::SCRATCH,
    offsets::{off, read_u64},
};

/// Deepest directory the walk names in full.
pub const MAX_COMPONENTS: usize = 32;
/// Steps up the tree, counting mount crossings. A deeper object has no
/// known path (it cannot be judged, so it is refused).
const MAX_STEPS: u32 = 256;
/// Set in [`walk`]'s result when the object is deeper than MAX_COMPONENTS:
/// the path holds its first MAX_COMPONENTS components.
pub const WALK_DEEP: i64 = 1 << 16;

/// The walk could not read what it needed.
pub const WALK_FAILED: i64 = -1;
/// The object is not reachable from the task's root.
pub const WALK_UNREACHABLE: i64 = -2;

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
    /// 0 walking, 1 done at the task's root, or a WALK_* error.
    end: i64,
    /// Which scratch key the path goes to.
    slot: u64,
}

const AT_ROOT: i64 = 1;

/// One step up: from `dentry` to its parent, or across a mount.
#[inline(never)]
extern "C" fn climb(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer to our stack `Walk`.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    if w.dentry == w.root_dentry && w.mnt == w.root_mnt {
        w.end = AT_ROOT; // the task's root (chroot or container): done
        return 1;
    }
    let root = read_u64(w.mnt + off!(mount_mnt) + off!(vfsmount_mnt_root));
    if w.dentry == root {
        let parent = read_u64(w.mnt + off!(mount_mnt_parent));
        if parent == w.mnt || parent == 0 {
            // A root mount that is not the task's: a detached tree, another
            // namespace's mount, or outside a chroot.
            w.end = WALK_UNREACHABLE;
            return 1;
        }
        w.dentry = read_u64(w.mnt + off!(mount_mnt_mountpoint));
        w.mnt = parent;
        return 0;
    }
    let up = read_u64(w.dentry + off!(dentry_d_parent));
    if up == w.dentry || up == 0 {
        w.end = WALK_UNREACHABLE; // a disconnected tree's root
        return 1;
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        w.end = WALK_FAILED;
        return 1;
    };
    let name = read_u64(w.dentry + off!(dentry_d_name) + off!(qstr_name));
    // A ring: once past MAX_COMPONENTS it keeps the ones nearest the root,
    // which are the ones a rule prefix can name.
    // SAFETY: per-CPU scratch value; the index is masked into bounds.
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
    if index >= w.n || index >= MAX_COMPONENTS as u64 || w.pos >= 256 {
        return 1; // done, or the key's bytes are all written
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        w.end = WALK_FAILED;
        return 1;
    };
    // SAFETY: per-CPU scratch value; every offset is masked into bounds and
    // `at` < 256 with a 256-byte read keeps writes inside the 512 bytes.
    unsafe {
        let leaf_first = (w.n - 1 - index) as usize & (MAX_COMPONENTS - 1);
        let name = (*s).names[leaf_first];
        let key = &mut (*s).keys[w.slot as usize & 1];
        key.path[w.pos as usize & 0xff] = b'/';
        let at = (w.pos as usize + 1) & 0xff;
        let m = bpf_probe_read_kernel_str(
            key.path.as_mut_ptr().add(at).cast::<c_void>(),
            256,
            name as *const c_void,
        );
        if m <= 0 {
            w.end = WALK_FAILED;
            return 1;
        }
        w.pos = (at + ((m as usize - 1) & 0xff)) as u64;
    }
    0
}

/// Writes the path of (`dentry`, `vfsmount`) into scratch key `slot` with a
/// NUL, like bpf_d_path: returns the length including the NUL (with
/// [`WALK_DEEP`] set for a path of more components than it names), or a
/// WALK_* error. Paths longer than the key are written as far as they go.
#[inline(always)]
pub fn walk(slot: usize, dentry: u64, vfsmount: u64) -> i64 {
    if dentry == 0 || vfsmount == 0 {
        return WALK_FAILED;
    }
    // SAFETY: helper without arguments; the pointer is only probe-read.
    let task = unsafe { bpf_get_current_task() };
    let fs = read_u64(task + off!(task_fs));
    if fs == 0 {
        return WALK_FAILED;
    }
    let root_vfsmount = read_u64(fs + off!(fs_root) + off!(path_mnt));
    let root_dentry = read_u64(fs + off!(fs_root) + off!(path_dentry));
    if root_vfsmount == 0 || root_dentry == 0 {
        return WALK_FAILED;
    }
    let mut w = Walk {
        dentry,
        // struct mount embeds the vfsmount at offset mount_mnt.
        mnt: vfsmount - off!(mount_mnt),
        root_mnt: root_vfsmount - off!(mount_mnt),
        root_dentry,
        n: 0,
        pos: 0,
        end: 0,
        slot: slot as u64,
    };
    let ctx = (&raw mut w).cast::<c_void>();
    // SAFETY: callbacks are BPF subprograms of this object; ctx is our stack.
    unsafe {
        bpf_loop(MAX_STEPS, climb as *mut c_void, ctx, 0);
    }
    if w.end != AT_ROOT {
        // An error, or more steps than MAX_STEPS.
        return if w.end < 0 { w.end } else { WALK_FAILED };
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return WALK_FAILED;
    };
    // SAFETY: per-CPU scratch value.
    let key = unsafe { &mut (*s).keys[slot & 1] };
    if w.n == 0 {
        key.path[0] = b'/';
        key.path[1] = 0;
        return 2;
    }
    // SAFETY: as above.
    unsafe {
        bpf_loop(MAX_COMPONENTS as u32, write as *mut c_void, ctx, 0);
    }
    if w.end < 0 {
        return w.end;
    }
    let end = w.pos as usize & 0x1ff;
    if let Some(b) = key.path.get_mut(end) {
        *b = 0;
    }
    let deep = if w.n > MAX_COMPONENTS as u64 {
        WALK_DEEP
    } else {
        0
    };
    (end + 1) as i64 | deep
}

/// [`walk`] for a `struct path *`.
#[inline(always)]
pub fn path(slot: usize, path: u64) -> i64 {
    walk(
        slot,
        read_u64(path + off!(path_dentry)),
        read_u64(path + off!(path_mnt)),
    )
}

/// Whether `path`'s mount belongs to the calling task's mount namespace;
/// false for a detached tree (open_tree, fsmount), whose paths bpf_d_path
/// prints relative to the tree's own root.
#[inline(always)]
pub fn in_own_namespace(path: u64) -> bool {
    let vfsmount = read_u64(path + off!(path_mnt));
    let ns = read_u64(vfsmount - off!(mount_mnt) + off!(mount_mnt_ns));
    // SAFETY: helper without arguments; the pointer is only probe-read.
    let task = unsafe { bpf_get_current_task() };
    let nsproxy = read_u64(task + off!(task_nsproxy));
    ns != 0 && ns == read_u64(nsproxy + off!(nsproxy_mnt_ns))
}
