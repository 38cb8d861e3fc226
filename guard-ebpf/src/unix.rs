//! `unix:` rules: connects and datagrams to unix sockets.
//!
//! With BPF LSM the peer socket is known, and its real bound path (or its
//! abstract name) is judged, whatever name the agent used to reach it:
//! - `int unix_stream_connect(struct sock *sock, struct sock *other,
//!   struct sock *newsk)` (stream and seqpacket connects);
//! - `int unix_may_send(struct socket *sock, struct socket *other)` (every
//!   datagram, connected or not).
//!
//! Without it, cgroup/connect_unix and cgroup/sendmsg_unix (6.7+) see the
//! address the agent passed, before the kernel looks it up: a symlink the
//! agent made reaches a socket under another name (`agent-guard doctor`
//! says so). A relative or non-canonical path ("..", "//") cannot be
//! matched and is refused to an agent some unix rule guards. aya 0.14
//! cannot declare these attach types: the loader loads these two programs
//! with the right expected attach type itself (kernel/unix_programs.rs).
//! The address is read through `struct bpf_sock_addr_kern` (the context's
//! real layout; offsets from BTF), as there is no context field for it.
use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_probe_read_kernel, bpf_probe_read_kernel_str},
    programs::{LsmContext, SockAddrContext},
};
use guard_common::{
    AGENT_UNIX_GUARDED, CALL_ABSTRACT, EventKind, PATH_COMPLETE, PATH_UNKNOWN, RULE_DEFAULT,
    Verdict,
};

use crate::{
    decide::{self, Decision, HoldBy},
    emit,
    fs::{GuardError, agent_and_scratch, emit_file},
    grant,
    identity::Agent,
    maps::{SLOT_A, Scratch, UNIX_RULES},
    offsets::{off, read_u32, read_u64},
    paths::{self, Built, UNKNOWN},
};

/// sun_path bytes (struct sockaddr_un).
const SUN_PATH: usize = 108;
/// offsetof(struct sockaddr_un, sun_path): after the 2-byte family.
const SUN_PATH_AT: u64 = 2;

/// Where the peer is, once the hook found out.
enum Peer {
    /// Bound to nothing (a socketpair's other end): no name a rule could
    /// give, and nothing reached by name. Not judged, not reported.
    Unnamed,
    Named {
        built: Built,
        flags: u8,
    },
}

/// Judges a unix connect or send whose peer address is in key A.
#[inline(always)]
fn judge(kind: EventKind, agent: &Agent, s: &Scratch, peer: Peer, by: HoldBy) -> Decision {
    let Peer::Named { built, flags } = peer else {
        return Decision::Allow;
    };
    let (verdict, rule_id) = if built.state == PATH_UNKNOWN {
        if agent.entry.flags & AGENT_UNIX_GUARDED != 0 {
            (Verdict::Deny.raw(), RULE_DEFAULT)
        } else {
            (Verdict::Allow.raw(), RULE_DEFAULT)
        }
    } else {
        match UNIX_RULES.get(paths::key(s, SLOT_A)) {
            Some(rule) => (rule.verdict, rule.rule_id),
            None => (agent.entry.connect_default, RULE_DEFAULT),
        }
    };
    // Only an agent-wide grant covers a unix socket: subtree grants are
    // for file calls (a delete approval must not open a socket). No budget
    // counts unix sockets (class 0): connect_unix runs before the kernel
    // looks the path up, so glibc probing a missing nscd socket would
    // spend a connects budget here and not under BPF LSM.
    let climbed = decide::climb(
        agent,
        verdict,
        rule_id,
        0,
        || paths::held_call(kind, s, SLOT_A, built),
        || grant::for_agent(agent.entry.agent_id).unwrap_or(0),
        by,
    );
    if let Some(mut report) = climbed.report.filter(|r| emit::reported(kind, r)) {
        report.flags |= flags;
        emit_file(kind, agent, &report, rule_id, s, built);
    }
    climbed.decision
}

/// Writes "@<name>/\0" into key A from `len` bytes of abstract name at
/// kernel address `name`.
#[inline(always)]
fn abstract_key(s: &mut Scratch, agent_id: u32, name: u64, len: usize) -> Built {
    let k = &mut s.keys[SLOT_A];
    k.prefix_len = guard_common::NET_KEY_AGENT_BITS + (guard_common::PATH_KEY_BYTES as u32) * 8;
    k.agent_id = agent_id.to_be_bytes();
    k.path[0] = b'@';
    let n = len & 0xff;
    if n == 0 || n > SUN_PATH {
        return UNKNOWN;
    }
    // SAFETY: at most 255 bytes into the 512-byte key from offset 1.
    let rc = unsafe {
        bpf_probe_read_kernel(
            k.path.as_mut_ptr().add(1).cast::<c_void>(),
            n as u32,
            name as *const c_void,
        )
    };
    if rc != 0 {
        return UNKNOWN;
    }
    k.path[(n + 1) & 0x1ff] = b'/';
    k.path[(n + 2) & 0x1ff] = 0;
    Built {
        len: n + 1,
        state: PATH_COMPLETE,
    }
}

/// The bound address of unix socket `sk` (a `struct sock *` inside its
/// `struct unix_sock`).
#[inline(always)]
fn bound(s: &mut Scratch, agent_id: u32, sk: u64) -> Peer {
    let path = sk + off!(unix_sock_path);
    if read_u64(path + off!(path_dentry)) != 0 {
        return Peer::Named {
            // Not a hook that may call bpf_d_path: the walk.
            built: paths::object::<true>(s, SLOT_A, agent_id, path),
            flags: 0,
        };
    }
    let addr = read_u64(sk + off!(unix_sock_addr));
    if addr == 0 {
        return Peer::Unnamed;
    }
    // struct unix_address { refcount_t; int len; struct sockaddr_un name[]; }
    let len = read_u32(addr + off!(unix_address_len)) as usize;
    let sun_path = addr + off!(unix_address_name) + SUN_PATH_AT;
    // A path-bound socket has its dentry; this is an abstract name: a NUL,
    // then the name's bytes up to `len`.
    Peer::Named {
        built: abstract_key(s, agent_id, sun_path + 1, len.saturating_sub(3)),
        flags: CALL_ABSTRACT,
    }
}

/// lsm/unix_stream_connect (SEND false) and lsm/unix_may_send (true).
#[inline(always)]
pub fn try_lsm<const SEND: bool>(ctx: &LsmContext) -> Result<Decision, GuardError> {
    let previous: i32 = if SEND { ctx.arg(2) } else { ctx.arg(3) };
    if previous != 0 {
        return Ok(Decision::Deny);
    }
    let Some((agent, s)) = agent_and_scratch()? else {
        return Ok(Decision::Allow);
    };
    let other: u64 = ctx.arg(1);
    let (sk, kind) = if SEND {
        // struct socket *: its struct sock.
        (read_u64(other + off!(socket_sk)), EventKind::NetUnixSend)
    } else {
        (other, EventKind::NetUnixConnect)
    };
    let peer = bound(s, agent.entry.agent_id, sk);
    Ok(judge(kind, &agent, s, peer, HoldBy::StopNow))
}

/// Whether the path of `n` bytes in key A is absolute and canonical: a
/// rule prefix then matches it exactly as the kernel will resolve it,
/// up to symlinks.
#[inline(always)]
fn canonical(path: &[u8; 512], n: usize) -> bool {
    if path[0] != b'/' {
        return false;
    }
    let mut i = 0usize;
    while i < SUN_PATH {
        if i + 1 >= n {
            break;
        }
        if path[i & 0x1ff] == b'/' {
            let a = path[(i + 1) & 0x1ff];
            let b = path[(i + 2) & 0x1ff];
            let c = path[(i + 3) & 0x1ff];
            let end = |x: u8| x == b'/' || x == 0;
            // "//", "/./" or "/." at the end, "/../" or "/.." at the end.
            if a == b'/' || (a == b'.' && end(b)) || (a == b'.' && b == b'.' && end(c)) {
                return false;
            }
        }
        i += 1;
    }
    true
}

/// cgroup/connect_unix and cgroup/sendmsg_unix (6.7+; loaded by hand, see
/// the module docs). The address the agent passed is judged.
#[inline(always)]
pub fn try_cgroup(ctx: &SockAddrContext, kind: EventKind) -> Result<Decision, GuardError> {
    let Some((agent, s)) = agent_and_scratch()? else {
        return Ok(Decision::Allow);
    };
    if off!(sock_addr_kern_uaddr) == 0 {
        return Err(GuardError::NoOffsets);
    }
    // The context really is a struct bpf_sock_addr_kern.
    let kern = ctx.sock_addr as u64;
    let uaddr = read_u64(kern + off!(sock_addr_kern_uaddr));
    let len = read_u32(kern + off!(sock_addr_kern_uaddrlen)) as usize;
    let sun_path = uaddr + SUN_PATH_AT;
    let id = agent.entry.agent_id;
    let first = read_u64(sun_path) as u8;
    let peer = if uaddr == 0 || len <= SUN_PATH_AT as usize {
        Peer::Named {
            built: UNKNOWN,
            flags: 0,
        }
    } else if first == 0 {
        Peer::Named {
            built: abstract_key(s, id, sun_path + 1, len.saturating_sub(3)),
            flags: CALL_ABSTRACT,
        }
    } else {
        let k = &mut s.keys[SLOT_A];
        k.prefix_len = guard_common::NET_KEY_AGENT_BITS + (guard_common::PATH_KEY_BYTES as u32) * 8;
        k.agent_id = id.to_be_bytes();
        // SAFETY: at most 109 bytes (with the NUL) into the 512-byte key.
        let m = unsafe {
            bpf_probe_read_kernel_str(
                k.path.as_mut_ptr().cast::<c_void>(),
                SUN_PATH as u32 + 1,
                sun_path as *const c_void,
            )
        };
        let n = if m > 0 { (m as usize - 1) & 0xff } else { 0 };
        let built = if n == 0 || n > SUN_PATH || !canonical(&k.path, n) {
            UNKNOWN
        } else {
            // Trailing "/" dropped before the separator is added.
            let n = if n > 1 && k.path[(n - 1) & 0x1ff] == b'/' {
                n - 1
            } else {
                n
            };
            k.path[n & 0x1ff] = b'/';
            k.path[(n + 1) & 0x1ff] = 0;
            Built {
                len: n,
                state: PATH_COMPLETE,
            }
        };
        Peer::Named { built, flags: 0 }
    };
    Ok(judge(kind, &agent, s, peer, HoldBy::StopAtExit))
}
