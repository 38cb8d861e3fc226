//! What on-call needs to decide a held call, gathered once when it is
//! held and carried by every surface (the `held` event's `hold.context`,
//! `pending`, the page, webhooks): where the call came from (the parent
//! chain up to the agent's first process), what the agent did in the last
//! minutes, and exactly what each approval scope would grant.
//!
//! The held call's own command line, the agent's purpose and
//! `on_behalf_of` are already in the event (`process`, `agent`).
use guard_host::proc;
use serde_json::{Map, Value, json};

use super::{Shared, approvals};

/// Parents listed at most: a deeper chain is cut, and says so.
const MAX_ANCESTORS: usize = 16;
/// Arguments and bytes of one ancestor's command line shown at most; an
/// agent's shell may carry a whole prompt.
const MAX_ARGS: usize = 32;
const MAX_CMDLINE_BYTES: usize = 1024;

/// The context of held call `event` (kind, agent, process, target, rule).
pub fn gather(shared: &Shared, event: &Map<String, Value>, pid: u32) -> Value {
    let agent = event.get("agent");
    let name = agent
        .and_then(|a| a.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let cgroup = agent
        .and_then(|a| a.get("cgroup"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (ancestors, cut) = ancestry(pid, cgroup);
    let recent = {
        let emitter = match shared.emitter.lock() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        emitter.recent(name)
    };
    let mut context = json!({
        "ancestry": ancestors,
        "recent": recent,
        "scopes": scopes(event),
    });
    if cut {
        context["ancestry_truncated"] = true.into();
    }
    context
}

/// The parents of `pid`, nearest first, for as long as they are in the
/// agent's cgroup (`cgroup`, relative to the cgroup2 mount): the last one
/// is the agent's first process. True when the chain was cut at
/// [`MAX_ANCESTORS`]. What a process says of itself (comm, arguments) is
/// the agent's to write; pids and membership are the kernel's.
fn ancestry(pid: u32, cgroup: &str) -> (Vec<Value>, bool) {
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
        let (cmdline, cut) = bounded(proc::cmdline(p).unwrap_or_default());
        let mut entry = json!({"pid": p, "comm": stat.comm, "cmdline": cmdline});
        if cut {
            entry["cmdline_truncated"] = true.into();
        }
        chain.push(entry);
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
fn scopes(event: &Map<String, Value>) -> Vec<Value> {
    let kind = event.get("kind").and_then(Value::as_str).unwrap_or("");
    let agent = event
        .get("agent")
        .and_then(|a| a.get("name"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut offer = vec![json!({"scope": "once", "grants": "this call only"})];
    if kind.starts_with("file.") {
        if let Some(path) = approvals::default_subtree(event) {
            offer.push(json!({
                "scope": "subtree", "path": path,
                "grants": format!("deletes under {path} (narrow it with --path)"),
            }));
        }
    }
    let target = event.get("target");
    if kind == "net.connect" {
        let address = target
            .and_then(|t| t.get("address"))
            .and_then(Value::as_str);
        let port = target.and_then(|t| t.get("port")).and_then(Value::as_u64);
        if let (Some(address), Some(port)) = (address, port) {
            let shown = if address.contains(':') {
                format!("[{address}]:{port}")
            } else {
                format!("{address}:{port}")
            };
            offer.push(json!({
                "scope": "destination", "address": address, "port": port,
                "grants": format!("connects to {shown}"),
            }));
        }
    }
    offer.push(json!({
        "scope": "agent", "agent": agent,
        "grants": format!(
            "every call of agent {} that would be held",
            agent.as_str().unwrap_or("?")
        ),
    }));
    offer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_delete_offers_the_ask_rules_subtree() {
        let ev = map(json!({
            "kind": "file.unlink", "agent": {"name": "bot"},
            "target": {"path": "/srv/data/tmp/x"}, "rule": {"match": "/srv/data/"},
        }));
        let s = scopes(&ev);
        let names: Vec<&str> = s.iter().filter_map(|o| o["scope"].as_str()).collect();
        assert_eq!(names, ["once", "subtree", "agent"]);
        assert_eq!(s[1]["path"], "/srv/data");
        assert_eq!(s[2]["agent"], "bot");
    }

    #[test]
    fn a_delete_without_a_path_rule_offers_its_directory() {
        let ev = map(json!({
            "kind": "file.rmdir", "agent": {"name": "bot"},
            "target": {"path": "/x"}, "rule": {"match": null},
        }));
        assert_eq!(scopes(&ev)[1]["path"], "/");
    }

    #[test]
    fn a_connect_offers_its_destination() {
        let ev = map(json!({
            "kind": "net.connect", "agent": {"name": "bot"},
            "target": {"address": "2001:db8::1", "port": 443},
        }));
        let s = scopes(&ev);
        assert_eq!(s[1]["scope"], "destination");
        assert_eq!(s[1]["grants"], "connects to [2001:db8::1]:443");
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
