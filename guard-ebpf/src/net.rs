//! Outbound connects and datagrams: cgroup/connect4 and connect6 (TCP, and
//! UDP's connect, after which its datagrams need no address), and
//! cgroup/sendmsg4 and sendmsg6 (4.18+: every datagram sent with an
//! address, so an agent cannot reach a denied port by `sendto` without
//! connecting).
//!
//! Kernel contract (include/uapi/linux/bpf.h, stable since 4.17):
//! `struct bpf_sock_addr { u32 user_family; u32 user_ip4; u32 user_ip6[4];
//! u32 user_port; ... }`, addresses and port in network byte order. Return 1
//! to let the connect proceed, 0 to fail it with EPERM.
use aya_ebpf::{
    helpers::generated::bpf_set_retval, maps::lpm_trie::Key, programs::SockAddrContext,
};
use guard_common::{
    AF_INET, ConnectRecord, ERESTARTNOINTR, EventKind, LISTEN_KEY_PORT_BITS, ListenKey,
    NET_KEY_AGENT_BITS, NetKey, Outcome, RULE_DEFAULT, RULE_GUARD, SOCK_STREAM, Verdict,
};

use crate::{
    decide::{self, Decision, HoldBy, Report},
    emit, grant,
    guard::GUARD_LISTEN,
    hold::Call,
    identity,
    maps::NET_RULES,
};

/// Why a decision could not be made normally.
pub enum GuardError {
    /// The socket address context had a family we do not handle.
    UnknownFamily,
    /// A unix address could not be judged (no offsets, no scratch).
    Unix,
}

/// The single conversion from a decision to the hook's return code: 1 lets
/// the call proceed, 0 fails it with EPERM (or with the errno set).
///
/// Fail-open on an unknown family, deliberately: these hooks only run for
/// agent cgroups, and it means a socket family the policy language cannot
/// name (not IPv4/IPv6), which the kernel never routes through them. A
/// unix address that cannot be judged fails closed.
#[inline(always)]
pub fn sock_verdict(result: Result<Decision, GuardError>) -> i32 {
    match result {
        Ok(Decision::Allow) | Err(GuardError::UnknownFamily) => 1,
        Ok(Decision::Deny) | Err(GuardError::Unix) => 0,
        Ok(Decision::Hold) => {
            // SAFETY: helper with a plain integer; allowed for cgroup
            // sock_addr programs since 5.18.
            unsafe { bpf_set_retval(-ERESTARTNOINTR) };
            0
        }
    }
}

/// connect4/connect6 (`kind` NetConnect) and sendmsg4/sendmsg6 (NetSend).
#[inline(always)]
pub fn try_connect(
    ctx: &SockAddrContext,
    family: u16,
    kind: EventKind,
) -> Result<Decision, GuardError> {
    let Some(agent) = identity::current_agent() else {
        // Attached to an agent cgroup, but the daemon does not know the
        // task's cgroup as an agent (e.g. between an agent's removal and
        // detach): not ours to judge.
        return Ok(Decision::Allow);
    };
    // SAFETY: the context pointer is valid for the program's lifetime.
    let sa = unsafe { &*ctx.sock_addr };
    let mut addr = [0u8; 16];
    if family == AF_INET {
        // IPv4-mapped: ::ffff:a.b.c.d, so v4 rules also cover mapped v6.
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..16].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else if family == guard_common::AF_INET6 {
        let mut i = 0;
        while i < 4 {
            let word = sa.user_ip6[i].to_ne_bytes();
            addr[i * 4..i * 4 + 4].copy_from_slice(&word);
            i += 1;
        }
    } else {
        return Err(GuardError::UnknownFamily);
    }
    let port = u16::from_be(sa.user_port as u16);

    // The daemon's own page and metrics endpoint: refused before the
    // ladder, so no rule, mode, grant or budget can open them (a web token
    // read by an agent must not make it an approver).
    if kind == EventKind::NetConnect && sa.type_ == SOCK_STREAM {
        if let Some(surface) = guard_listener(&addr, port) {
            let report = Report {
                outcome: Outcome::Denied,
                verdict: Verdict::Deny.raw(),
                hold_id: 0,
                grant_id: 0,
                flags: 0,
            };
            submit(
                &agent,
                kind,
                &report,
                RULE_GUARD + surface,
                family,
                &addr,
                port,
            );
            return Ok(Decision::Deny);
        }
    }

    let (verdict, rule_id) = lookup(agent.entry.agent_id, &addr, port)
        .unwrap_or((agent.entry.connect_default, RULE_DEFAULT));
    // No signals from this hook: sys_exit sends the stop.
    let climbed = decide::climb(
        &agent,
        verdict,
        rule_id,
        guard_common::BudgetClass::Connects.raw(),
        || Call::connect(kind.raw(), &addr, port),
        || grant::for_destination(agent.entry.agent_id, &addr, port).unwrap_or(0),
        HoldBy::StopAtExit,
    );
    if let Some(report) = climbed.report.filter(|r| emit::reported(kind, r)) {
        submit(&agent, kind, &report, rule_id, family, &addr, port);
    }
    Ok(climbed.decision)
}

/// Reports a judged connect or datagram.
#[inline(always)]
fn submit(
    agent: &identity::Agent,
    kind: EventKind,
    report: &Report,
    rule_id: u32,
    family: u16,
    addr: &[u8; 16],
    port: u16,
) {
    let record = ConnectRecord {
        header: emit::judged_header(kind, agent, report, rule_id),
        family,
        port,
        flags: u32::from(report.flags),
        addr: if family == AF_INET {
            let mut v4 = [0u8; 16];
            v4[..4].copy_from_slice(&addr[12..16]);
            v4
        } else {
            *addr
        },
    };
    emit::submit(&record, emit::urgent(report));
}

/// The daemon's surface (guard_common::SURFACE_*) listening at `addr`
/// (IPv6 or IPv4-mapped) and TCP `port`, if any.
#[inline(always)]
fn guard_listener(addr: &[u8; 16], port: u16) -> Option<u32> {
    let key = Key::new(
        LISTEN_KEY_PORT_BITS + 128,
        ListenKey {
            port: port.to_be_bytes(),
            addr: *addr,
        },
    );
    GUARD_LISTEN.get(&key).copied()
}

/// One longest-prefix lookup, then the first port rule that holds the port
/// (userspace stored them in precedence order).
#[inline(always)]
fn lookup(agent_id: u32, addr: &[u8; 16], port: u16) -> Option<(u8, u32)> {
    let key = Key::new(
        NET_KEY_AGENT_BITS + 128,
        NetKey {
            agent_id: agent_id.to_be_bytes(),
            addr: *addr,
        },
    );
    let set = NET_RULES.get(&key)?;
    let count = set.count as usize;
    let mut i = 0;
    while i < guard_common::MAX_PORT_RULES {
        if i >= count {
            break;
        }
        let rule = &set.rules[i];
        if rule.lo <= port && port <= rule.hi {
            return Some((rule.verdict, rule.rule_id));
        }
        i += 1;
    }
    None
}
