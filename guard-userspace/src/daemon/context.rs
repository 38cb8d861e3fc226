//! What on-call needs to decide a held call, gathered once when it is
//! held and carried by every surface (the `held` event's `hold.context`,
//! `pending`, the page, webhooks): where the call came from (the parent
//! chain up to the agent's first process), what the agent did in the last
//! minutes, and exactly what each approval scope would grant.
//!
//! The held call's own command line, the agent's purpose and
//! `on_behalf_of` are already in the event (`process`, `agent`).
use guard_host::proc;

use super::{Shared, approvals};
use crate::events::model::{Ancestor, Call, HoldContext, Op, ScopeOffer};

/// Parents listed at most: a deeper chain is cut, and says so.
const MAX_ANCESTORS: usize = 16;
/// Arguments and bytes of one ancestor's command line shown at most; an
/// agent's shell may carry a whole prompt.
const MAX_ARGS: usize = 32;
const MAX_CMDLINE_BYTES: usize = 1024;

/// The context of held call `call` of process `pid`.
pub fn gather(shared: &Shared, call: &Call, pid: u32) -> HoldContext {
    let agent = call.agent.known();
    let cgroup = agent.map_or("", |a| a.cgroup.as_str());
    let (ancestry, ancestry_truncated) = ancestry(pid, cgroup);
    let recent = agent
        .map(|a| shared.counts.recent(&a.name))
        .unwrap_or_default();
    HoldContext {
        ancestry,
        ancestry_truncated,
        recent,
        scopes: scopes(call),
    }
}

/// The parents of `pid`, nearest first, for as long as they are in the
/// agent's cgroup (`cgroup`, relative to the cgroup2 mount): the last one
/// is the agent's first process. True when the chain was cut at
/// [`MAX_ANCESTORS`]. What a process says of itself (comm, arguments) is
/// the agent's to write; pids and membership are the kernel's.
fn ancestry(pid: u32, cgroup: &str) -> (Vec<Ancestor>, bool) {
    let inside = |p: u32| {
        proc::cgroup(p).is_some_and(|c| {
            let c = c.trim_start_matches('/');
            !cgroup.is_empty()
                && (c == cgroup
                    || c.strip_prefix(cgroup)
                        .is_some_and(|rest| rest.starts_with('/')))
        })
    };
    let mut chain = Vec::new();
    let mut next = proc::stat(pid).map(|s| s.ppid);
    while let Some(p) = next.filter(|p| *p > 1) {
        if !inside(p) {
            break;
        }
        if chain.len() == MAX_ANCESTORS {
            return (chain, true);
        }
        let Some(stat) = proc::stat(p) else { break };
        let (cmdline, cmdline_truncated) = bounded(proc::cmdline(p).unwrap_or_default());
        chain.push(Ancestor {
            pid: p,
            comm: stat.comm,
            cmdline,
            cmdline_truncated,
        });
        next = Some(stat.ppid);
    }
    (chain, false)
}

/// A command line cut to [`MAX_ARGS`] and [`MAX_CMDLINE_BYTES`], on
/// character boundaries; true if anything was cut.
fn bounded(args: Vec<String>) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut bytes = 0;
    let total = args.len();
    for arg in args {
        if out.len() == MAX_ARGS || bytes >= MAX_CMDLINE_BYTES {
            return (out, true);
        }
        let room = MAX_CMDLINE_BYTES - bytes;
        if arg.len() > room {
            let mut end = room;
            while !arg.is_char_boundary(end) {
                end -= 1;
            }
            out.push(arg[..end].to_owned());
            return (out, true);
        }
        bytes += arg.len();
        out.push(arg);
    }
    let cut = out.len() < total;
    (out, cut)
}

/// Each approval scope on offer for this call, and exactly what it grants.
/// A scope beyond `once` lasts what the approver chooses (`--for`).
fn scopes(call: &Call) -> Vec<ScopeOffer> {
    let agent = call.agent.known().map(|a| a.name.clone());
    let mut offer = vec![ScopeOffer::Once {
        grants: "this call only".into(),
    }];
    if call.kind().name().starts_with("file.") {
        if let Some(path) = approvals::default_subtree(call) {
            offer.push(ScopeOffer::Subtree {
                grants: format!("deletes under {path} (narrow it with --path)"),
                path,
            });
        }
    }
    if let Op::Connect(dst) = &call.op {
        let shown = if dst.address.is_ipv6() {
            format!("[{}]:{}", dst.address, dst.port)
        } else {
            format!("{}:{}", dst.address, dst.port)
        };
        offer.push(ScopeOffer::Destination {
            address: dst.address,
            port: dst.port,
            grants: format!("connects to {shown}"),
        });
    }
    offer.push(ScopeOffer::Agent {
        grants: format!(
            "every call of agent {} that would be held",
            agent.as_deref().unwrap_or("?")
        ),
        agent,
    });
    offer
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::events::{Event, examples, model::FileTarget};

    /// The documented example call of `kind`.
    fn example(kind: &str) -> Call {
        examples::all()
            .into_iter()
            .find_map(|e| match e {
                Event::Call(c) if c.kind().name() == kind => Some(c),
                _ => None,
            })
            .unwrap_or_else(|| panic!("an example {kind}"))
    }

    fn names(s: &[ScopeOffer]) -> Vec<&'static str> {
        s.iter()
            .map(|o| match o {
                ScopeOffer::Once { .. } => "once",
                ScopeOffer::Subtree { .. } => "subtree",
                ScopeOffer::Destination { .. } => "destination",
                ScopeOffer::Agent { .. } => "agent",
            })
            .collect()
    }

    #[test]
    fn a_delete_offers_the_ask_rules_subtree() {
        let mut call = example("file.unlink");
        call.op = Op::Unlink(FileTarget::path("/srv/data/tmp/x".into()));
        call.rule.matched = Some("/srv/data/".into());
        let s = scopes(&call);
        assert_eq!(names(&s), ["once", "subtree", "agent"]);
        assert!(matches!(&s[1], ScopeOffer::Subtree { path, .. } if path == "/srv/data"));
        assert!(
            matches!(&s[2], ScopeOffer::Agent { agent: Some(a), .. } if a == "claims-bot"),
            "{s:?}"
        );
    }

    #[test]
    fn a_delete_without_a_path_rule_offers_its_directory() {
        let mut call = example("file.rmdir");
        call.op = Op::Rmdir(FileTarget::path("/x".into()));
        call.rule.matched = None;
        assert!(matches!(&scopes(&call)[1], ScopeOffer::Subtree { path, .. } if path == "/"));
    }

    #[test]
    fn a_connect_offers_its_destination() {
        let mut call = example("net.connect");
        if let Op::Connect(t) = &mut call.op {
            t.address = "2001:db8::1".parse().expect("an address");
            t.port = 443;
        }
        let s = scopes(&call);
        assert_eq!(names(&s), ["once", "destination", "agent"]);
        assert!(matches!(&s[1], ScopeOffer::Destination { grants, .. }
                         if grants == "connects to [2001:db8::1]:443"));
    }

    #[test]
    fn long_command_lines_are_cut_on_a_character() {
        let (out, cut) = bounded(vec!["é".repeat(MAX_CMDLINE_BYTES)]);
        assert!(cut);
        assert!(out[0].len() <= MAX_CMDLINE_BYTES);
        let (out, cut) = bounded((0..100).map(|i| i.to_string()).collect());
        assert!(cut);
        assert_eq!(out.len(), MAX_ARGS);
        let (out, cut) = bounded(vec!["rm".into(), "-rf".into()]);
        assert!(!cut);
        assert_eq!(out, ["rm", "-rf"]);
    }

    #[test]
    fn the_chain_stops_at_the_agents_first_process() {
        // This test process is in no agent's cgroup: no parent is listed.
        let (chain, cut) = ancestry(std::process::id(), "agent-guard-no-such-agent");
        assert!(chain.is_empty() && !cut);
    }
}
