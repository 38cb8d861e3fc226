//! Outbound connect: cgroup/connect4 and cgroup/connect6.
//!
//! Kernel contract (include/uapi/linux/bpf.h, stable since 4.17):
//! `struct bpf_sock_addr { u32 user_family; u32 user_ip4; u32 user_ip6[4];
//! u32 user_port; ... }`, addresses and port in network byte order. Return 1
//! to let the connect proceed, 0 to fail it with EPERM.
use aya_ebpf::{
    helpers::generated::bpf_set_retval, maps::lpm_trie::Key, programs::SockAddrContext,
};
use guard_common::{
    AF_INET, ConnectRecord, EventKind, Mode, NET_KEY_AGENT_BITS, NetKey, Outcome, RULE_DEFAULT,
    Verdict,
};

use crate::{
    emit, grant,
    hold::{self, Hold},
    identity,
    maps::NET_RULES,
};

/// Kernel-internal "restart after the signal"; see hold.rs.
const ERESTARTNOINTR: i32 = 513;

/// What the hook decided.
pub enum Decision {
    Allow,
    Deny,
    /// Fail this attempt with -ERESTARTNOINTR; sys_exit stops the thread,
    /// and the connect restarts when it is resumed (see hold.rs).
    Hold,
}

/// Why a decision could not be made normally.
pub enum GuardError {
    /// The socket address context had a family we do not handle.
    UnknownFamily,
}

/// The single conversion from a decision to the hook's return code.
///
/// Fail-open on errors, deliberately: this hook only runs for agent cgroups,
/// and an error here means a socket family the policy language cannot name
/// (not IPv4/IPv6), which the kernel never routes through connect4/6.
#[inline(always)]
pub fn connect_verdict(result: Result<Decision, GuardError>) -> i32 {
    match result {
        Ok(Decision::Allow) | Err(GuardError::UnknownFamily) => 1,
        Ok(Decision::Deny) => 0,
        Ok(Decision::Hold) => {
            // SAFETY: helper with a plain integer; allowed for cgroup
            // sock_addr programs since 5.18.
            unsafe { bpf_set_retval(-ERESTARTNOINTR) };
            0
        }
    }
}

#[inline(always)]
pub fn try_connect(ctx: &SockAddrContext, family: u16) -> Result<Decision, GuardError> {
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

    let (verdict, rule_id) = lookup(agent.entry.agent_id, &addr, port)
        .unwrap_or((agent.entry.connect_default, RULE_DEFAULT));
    let verdict = guard_common::applied_verdict(agent.entry.mode, verdict, rule_id);

    let audit = agent.entry.mode == Mode::Audit.raw();
    let mut hold_id = 0;
    let mut grant_id = 0;
    let (decision, outcome) = if audit {
        (Decision::Allow, Outcome::Audited)
    } else if verdict == Verdict::Allow.raw() {
        (Decision::Allow, Outcome::Allowed)
    } else if verdict == Verdict::Ask.raw() {
        match hold::Call::connect(EventKind::NetConnect.raw(), &addr, port) {
            // Not this thread's held call: an approval's scope may cover it.
            Some(call)
                if !call.held() && {
                    grant_id =
                        grant::for_destination(agent.entry.agent_id, &addr, port).unwrap_or(0);
                    grant_id != 0
                } =>
            {
                (Decision::Allow, Outcome::Allowed)
            }
            // No signals from this hook: sys_exit sends the stop.
            Some(call) => match hold::hold(false, &call) {
                Hold::Started { hold_id: id } => {
                    hold_id = id;
                    (Decision::Hold, Outcome::Held)
                }
                Hold::StillPending => return Ok(Decision::Hold),
                // The held call itself, decided: its own event, with the
                // hold's id, says what actually ran.
                Hold::Decided { allow, hold_id: id } => {
                    hold_id = id;
                    if allow {
                        (Decision::Allow, Outcome::Allowed)
                    } else {
                        (Decision::Deny, Outcome::Denied)
                    }
                }
                // Could not hold: fail closed, reported as denied.
                Hold::Failed => (Decision::Deny, Outcome::Denied),
            },
            // No scratch to describe the call: it cannot be held, so fail
            // closed (cannot happen for index 0 of a per-CPU array).
            None => (Decision::Deny, Outcome::Denied),
        }
    } else {
        (Decision::Deny, Outcome::Denied)
    };

    let mut header = emit::header(EventKind::NetConnect.raw(), &agent);
    header.outcome = outcome.raw();
    header.verdict = verdict;
    header.rule_id = rule_id;
    header.hold_id = hold_id;
    header.grant_id = grant_id;
    let record = ConnectRecord {
        header,
        family,
        port,
        _pad: 0,
        addr: if family == AF_INET {
            let mut v4 = [0u8; 16];
            v4[..4].copy_from_slice(&addr[12..16]);
            v4
        } else {
            addr
        },
    };
    // Denials, holds and decided holds wake the reader at once.
    emit::submit(
        &record,
        hold_id != 0 || !matches!(decision, Decision::Allow),
    );
    Ok(decision)
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
