//! agent-guard kernel programs.
//!
//! Entry points are thin: each calls a `try_*` function in its hook family's
//! module and turns the `Decision` into the hook's return code in one place.
#![no_std]
#![no_main]

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
mod net;
mod path_walk;
mod refused;
mod tamper;

use aya_ebpf::{
    macros::{btf_tracepoint, cgroup_sock_addr, lsm},
    programs::{BtfTracePointContext, LsmContext, SockAddrContext},
};
use guard_common::{AF_INET, AF_INET6, EventKind};

/// cgroup/connect4, attached to every agent cgroup.
#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    net::connect_verdict(net::try_connect(&ctx, AF_INET))
}

/// cgroup/connect6, attached to every agent cgroup. Also sees dual-stack
/// sockets connecting to IPv4-mapped addresses, which the v4 rules govern.
#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    net::connect_verdict(net::try_connect(&ctx, AF_INET6))
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

/// tp_btf/sys_enter: attached only where BPF LSM is unavailable, to observe
/// deletes by agent processes that no backend can block.
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    let _ = fs::try_observe_delete(&ctx);
    0
}

/// tp_btf/sys_exit: sends the stop for held connects.
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
