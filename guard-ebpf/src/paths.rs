//! Building the lookup key of a call's path in the per-CPU scratch area:
//! the agent, then the path with a '/' after its last component and a NUL
//! (see guard_common::PathKey), and copying it into a record.
use aya_ebpf::{
    cty::{c_char, c_void},
    helpers::generated::{bpf_d_path, bpf_probe_read_kernel, bpf_probe_read_kernel_str},
};
use guard_common::{
    NET_KEY_AGENT_BITS, PATH_COMPLETE, PATH_KEY_BYTES, PATH_TRUNCATED, PATH_UNKNOWN, PathKey,
    RecordPath,
};

use crate::{
    hold::Call,
    maps::{KeyBuf, SCRATCH, Scratch},
    offsets::{self, off, read_u64},
    path_walk::{self, WALK_DEEP},
};

/// The scratch area, or None if the per-CPU slot is unavailable (it never
/// is for index 0).
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    let s = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU map value, not shared with another program run on
    // this CPU while we hold it (our programs do not nest on one CPU).
    Some(unsafe { &mut *s })
}

/// A path built into a scratch key.
#[derive(Clone, Copy)]
pub struct Built {
    /// Bytes of the path proper (without the trailing '/' and NUL).
    pub len: usize,
    /// PATH_COMPLETE, PATH_TRUNCATED or PATH_UNKNOWN.
    pub state: u8,
}

pub const UNKNOWN: Built = Built {
    len: 0,
    state: PATH_UNKNOWN,
};

/// The key in `slot` as the LPM lookup key it is laid out as.
#[inline(always)]
pub fn key(s: &Scratch, slot: usize) -> &aya_ebpf::maps::lpm_trie::Key<PathKey> {
    let k: *const KeyBuf = &s.keys[slot & 1];
    // SAFETY: KeyBuf starts with the exact layout of Key<PathKey> (prefix
    // length, agent id, path bytes) and is larger than it.
    unsafe { &*k.cast::<aya_ebpf::maps::lpm_trie::Key<PathKey>>() }
}

/// The call on the path in `slot` as a hold binds it (the rule-lookup
/// path, as hold.rs compares it).
#[inline(always)]
pub fn held_call(
    kind: guard_common::EventKind,
    s: &Scratch,
    slot: usize,
    built: Built,
) -> Option<Call> {
    Call::path(kind.raw(), s.keys[slot & 1].path.as_ptr(), built.len)
}

#[inline(always)]
fn head(s: &mut Scratch, slot: usize, agent_id: u32) -> &mut KeyBuf {
    let k = &mut s.keys[slot & 1];
    k.prefix_len = NET_KEY_AGENT_BITS + (PATH_KEY_BYTES as u32) * 8;
    k.agent_id = agent_id.to_be_bytes();
    k
}

/// After a walk or bpf_d_path wrote a path and its NUL (`n` bytes, maybe
/// with WALK_DEEP), puts a '/' after it unless it is the root: returns
/// where the next byte goes and whether the walk was too deep, or what to
/// report at once (unknown, or a path that fills the key).
#[inline(always)]
fn separate(k: &mut KeyBuf, n: i64) -> Result<(usize, bool), Built> {
    if n <= 0 {
        k.path[0] = 0;
        return Err(UNKNOWN);
    }
    // Index of the NUL that was written.
    let mut pos = ((n & 0xffff) as usize - 1) & 0x1ff;
    if pos >= PATH_KEY_BYTES - 1 {
        // It alone fills the key: match on it, report truncated.
        return Err(Built {
            len: PATH_KEY_BYTES,
            state: PATH_TRUNCATED,
        });
    }
    if pos != 1 {
        // Not the root "/": add the separator.
        k.path[pos & 0xff] = b'/';
        pos += 1;
    }
    Ok((pos & 0xff, n & WALK_DEEP != 0))
}

/// Turns a walk's result (length with the NUL) into "<path>/\0".
#[inline(always)]
fn finish(k: &mut KeyBuf, n: i64) -> Built {
    match separate(k, n) {
        Err(built) => built,
        Ok((pos, deep)) => {
            k.path[pos] = 0;
            Built {
                len: if pos == 1 { 1 } else { pos - 1 },
                state: if deep { PATH_TRUNCATED } else { PATH_COMPLETE },
            }
        }
    }
}

/// "<path>/\0" of the object a `struct path *` names (a file to truncate,
/// a unix socket), by bpf_d_path or (`WALK`) the dentry walk.
#[inline(always)]
pub fn object<const WALK: bool>(s: &mut Scratch, slot: usize, agent_id: u32, path: u64) -> Built {
    let k = head(s, slot, agent_id);
    let n = if WALK {
        path_walk::path(slot, path)
    } else {
        d_path(k, path)
    };
    finish(k, n)
}

/// bpf_d_path into `k`, refused (no path) for an object outside the
/// caller's mount namespace, which bpf_d_path would name relative to a
/// detached tree's root.
#[inline(always)]
fn d_path(k: &mut KeyBuf, path: u64) -> i64 {
    if !path_walk::in_own_namespace(path) {
        return -1;
    }
    // SAFETY: `path` is the hook's trusted argument; the buffer is ours.
    unsafe {
        bpf_d_path(
            path as *mut aya_ebpf::bindings::path,
            k.path.as_mut_ptr() as *mut c_char,
            k.path.len() as u32,
        )
    }
}

/// "<path>/\0" of `dentry` in mount `vfsmount` (path_link's existing file,
/// which shares the new name's mount).
#[inline(always)]
pub fn dentry_in(s: &mut Scratch, slot: usize, agent_id: u32, dentry: u64, vfsmount: u64) -> Built {
    let k = head(s, slot, agent_id);
    finish(k, path_walk::walk(slot, dentry, vfsmount))
}

/// "<dir>/<name>/\0" for an entry `dentry` of directory `dir` (a `struct
/// path *`): the unlink, rmdir and rename hooks' shape. `WALK` selects how
/// the directory's path is built: bpf_d_path (kernels that allow it in the
/// hook) or the dentry walk.
#[inline(always)]
pub fn dir_entry<const WALK: bool>(
    s: &mut Scratch,
    slot: usize,
    agent_id: u32,
    dir: u64,
    dentry: u64,
) -> Built {
    let k = head(s, slot, agent_id);
    let n = if WALK {
        path_walk::path(slot, dir)
    } else {
        d_path(k, dir)
    };
    let (pos, deep) = match separate(k, n) {
        Ok(at) => at,
        Err(built) => return built,
    };
    let name = read_u64(dentry + off!(dentry_d_name) + off!(qstr_name));
    if name == 0 {
        return UNKNOWN;
    }
    // SAFETY: destination stays inside the 512-byte buffer (pos < 256,
    // size 256); the helper bounds the read and NUL-terminates.
    let m = unsafe {
        bpf_probe_read_kernel_str(
            k.path.as_mut_ptr().add(pos).cast::<c_void>(),
            256,
            name as *const c_void,
        )
    };
    if m <= 0 {
        return UNKNOWN;
    }
    let end = pos + ((m as usize - 1) & 0xff);
    // Trailing '/' and NUL: whole-component matching (see PathKey).
    if let Some(b) = k.path.get_mut(end) {
        *b = b'/';
    }
    if let Some(b) = k.path.get_mut(end + 1) {
        *b = 0;
    }
    if end > PATH_KEY_BYTES - 2 {
        return Built {
            len: PATH_KEY_BYTES,
            state: PATH_TRUNCATED,
        };
    }
    Built {
        len: end,
        state: if deep { PATH_TRUNCATED } else { PATH_COMPLETE },
    }
}

/// Copies the path of key `slot` into a record being written in place.
///
/// # Safety
/// `dst` must point at a reserved ring-buffer record we own.
#[inline(always)]
pub unsafe fn copy_into(dst: *mut RecordPath, s: &Scratch, slot: usize, built: Built, flags: u8) {
    // SAFETY: the caller owns `dst`; the source is our scratch key.
    unsafe {
        (*dst).len = built.len as u16;
        (*dst).state = built.state;
        (*dst).flags = flags;
        bpf_probe_read_kernel(
            (*dst).bytes.as_mut_ptr().cast::<c_void>(),
            PATH_KEY_BYTES as u32,
            s.keys[slot & 1].path.as_ptr().cast::<c_void>(),
        );
    }
}

/// Whether `dentry` is a directory; None for a negative dentry.
#[inline(always)]
pub fn is_dir(dentry: u64) -> Option<bool> {
    offsets::dentry_mode(dentry).map(|m| m & guard_common::S_IFMT == guard_common::S_IFDIR)
}
