//! agent-guard kernel programs.
//!
//! Entry points are thin: each calls a `try_*` function in its hook family's
//! module and turns the `Decision` into the hook's return code in one place.
#![no_std]
#![no_main]
// BPF_CMPXCHG for budgets: the BPF target has no atomic CAS in core
// (atomic-cas is off in its target spec), the intrinsic emits it.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core_intrinsics: atomic_cxchg on the BPF target"
)]

mod budget;
mod decide;
mod emit;
// Self-defense (entry points in these modules): escape.rs, tamper.rs;
// refused.rs reports from escape.rs's sys_exit.
mod escape;
mod fs;
mod grant;
mod guard;
mod hold;
mod identity;
mod maps;
mod mounts;
mod net;
mod offsets;
mod path_walk;
mod paths;
mod refused;
mod rename;
mod tamper;
mod unix;

use aya_ebpf::{
    macros::{btf_tracepoint, cgroup_sock_addr, lsm},
    programs::{BtfTracePointContext, LsmContext, SockAddrContext},
};
use guard_common::{AF_INET, AF_INET6, EventKind};

/// cgroup/connect4, attached to every agent cgroup.
#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    net::sock_verdict(net::try_connect(&ctx, AF_INET, EventKind::NetConnect))
}

/// cgroup/connect6, attached to every agent cgroup. Also sees dual-stack
/// sockets connecting to IPv4-mapped addresses, which the v4 rules govern.
#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    net::sock_verdict(net::try_connect(&ctx, AF_INET6, EventKind::NetConnect))
}

/// cgroup/sendmsg4: every UDP datagram an agent sends with an address.
#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    net::sock_verdict(net::try_connect(&ctx, AF_INET, EventKind::NetSend))
}

/// cgroup/sendmsg6, as sendmsg4 (v4-mapped destinations by the v4 rules).
#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    net::sock_verdict(net::try_connect(&ctx, AF_INET6, EventKind::NetSend))
}

/// cgroup/connect_unix (6.7+). Declared under an attach type aya 0.14
/// knows so that it parses the object; the loader loads it with
/// BPF_CGROUP_UNIX_CONNECT itself (see unix.rs).
#[cgroup_sock_addr(sendmsg4)]
pub fn connect_unix(ctx: SockAddrContext) -> i32 {
    net::sock_verdict(
        unix::try_cgroup(&ctx, EventKind::NetUnixConnect).map_err(|_| net::GuardError::Unix),
    )
}

/// cgroup/sendmsg_unix (6.7+), loaded like connect_unix.
#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg_unix(ctx: SockAddrContext) -> i32 {
    net::sock_verdict(
        unix::try_cgroup(&ctx, EventKind::NetUnixSend).map_err(|_| net::GuardError::Unix),
    )
}

/// lsm/path_unlink: every unlink on the host; agents' are judged.
#[lsm(hook = "path_unlink")]
pub fn path_unlink(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(fs::try_delete::<false>(&ctx, EventKind::FileUnlink))
}

/// lsm/path_rmdir: every rmdir on the host; agents' are judged.
#[lsm(hook = "path_rmdir")]
pub fn path_rmdir(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(fs::try_delete::<false>(&ctx, EventKind::FileRmdir))
}

/// lsm/path_unlink for kernels that refuse bpf_d_path there (6.1).
#[lsm(hook = "path_unlink")]
pub fn path_unlink_walk(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(fs::try_delete::<true>(&ctx, EventKind::FileUnlink))
}

/// lsm/path_rmdir for kernels that refuse bpf_d_path there (6.1).
#[lsm(hook = "path_rmdir")]
pub fn path_rmdir_walk(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(fs::try_delete::<true>(&ctx, EventKind::FileRmdir))
}

/// lsm/path_rename: renames that move a protected object away or replace
/// one (io_uring's RENAMEAT included).
#[lsm(hook = "path_rename")]
pub fn path_rename(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(rename::try_rename::<false>(&ctx))
}

/// lsm/path_rename for kernels that refuse bpf_d_path there (6.1).
#[lsm(hook = "path_rename")]
pub fn path_rename_walk(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(rename::try_rename::<true>(&ctx))
}

/// lsm/path_link: a second name for a protected file.
#[lsm(hook = "path_link")]
pub fn path_link(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(rename::try_link::<false>(&ctx))
}

/// lsm/path_link for kernels that refuse bpf_d_path there (6.1).
#[lsm(hook = "path_link")]
pub fn path_link_walk(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(rename::try_link::<true>(&ctx))
}

/// lsm/path_truncate: truncate(2) (on 6.1 every truncation).
#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(fs::try_truncate::<false, false>(&ctx))
}

/// lsm/path_truncate for kernels that refuse bpf_d_path there (6.1).
#[lsm(hook = "path_truncate")]
pub fn path_truncate_walk(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(fs::try_truncate::<false, true>(&ctx))
}

/// lsm/file_truncate (6.2+): ftruncate, O_TRUNC opens, io_uring's ftruncate.
#[lsm(hook = "file_truncate")]
pub fn file_truncate(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(fs::try_truncate::<true, false>(&ctx))
}

/// lsm/file_truncate where bpf_d_path is not allowed there.
#[lsm(hook = "file_truncate")]
pub fn file_truncate_walk(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(fs::try_truncate::<true, true>(&ctx))
}

/// lsm/sb_mount: mount(2) in every form.
#[lsm(hook = "sb_mount")]
pub fn sb_mount(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(mounts::sb_mount(&ctx))
}

/// lsm/move_mount: attaching or moving a tree (new mount API).
#[lsm(hook = "move_mount")]
pub fn move_mount(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(mounts::move_mount(&ctx))
}

/// lsm/sb_pivotroot.
#[lsm(hook = "sb_pivotroot")]
pub fn sb_pivotroot(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(mounts::pivot_root(&ctx))
}

/// lsm/path_chroot.
#[lsm(hook = "path_chroot")]
pub fn path_chroot(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(mounts::chroot(&ctx))
}

/// lsm/userns_create (6.1+).
#[lsm(hook = "userns_create")]
pub fn userns_create(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(mounts::userns_create(&ctx))
}

/// lsm/unix_stream_connect: the peer socket's real path is judged.
#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(unix::try_lsm::<false>(&ctx))
}

/// lsm/unix_may_send: every unix datagram, by its peer's real path.
#[lsm(hook = "unix_may_send")]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    fs::lsm_verdict(unix::try_lsm::<true>(&ctx))
}

/// tp_btf/sys_enter: attached only where BPF LSM is unavailable, to observe
/// deletes by agent processes that no backend can block.
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    let _ = fs::try_observe_delete(&ctx);
    0
}

/// tp_btf/sys_exit: sends the stop for held connects and datagrams.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    hold::stop_at_exit(ctx.arg(1));
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never entered.
    loop {}
}

/// GPL-compatible, as the helpers this object calls require.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
