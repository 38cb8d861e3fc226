//! `policy suggest`: the least privilege that would have allowed what an
//! agent did, learned from its event log (an audit run, ideally). Deletes
//! become directory prefixes, destinations address:port (a /24 or /64
//! when several hosts of one network were used); everything else is
//! denied. The result replaces the agent's `[agent.delete]` and
//! `[agent.connect]` in the current policy file, and must parse.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use thiserror::Error;

use crate::{
    events::query::{self, Filter, QueryError},
    policy::{self, Policy, PolicyError},
};

#[derive(Debug, Error)]
pub enum SuggestError {
    #[error(transparent)]
    Log(#[from] QueryError),
    #[error("{file}: no agent {agent:?} in this policy (it declares: {names})")]
    NoAgent {
        file: String,
        agent: String,
        names: String,
    },
    #[error(
        "the suggested policy does not parse ({0}); the agent's table may set `connect` or \
         `delete` inline: write them as [agent.connect] / [agent.delete] tables"
    )]
    Invalid(PolicyError),
}

/// The part of a call line a suggestion needs.
#[derive(Debug, Deserialize)]
struct CallLine {
    kind: String,
    outcome: String,
    #[serde(default)]
    target: Option<Target>,
}

#[derive(Debug, Default, Deserialize)]
struct Target {
    #[serde(default)]
    path: Option<String>,
    /// A rename's or link's destination: it needs the right too.
    #[serde(default)]
    new_path: Option<String>,
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
}

/// What the agent was seen doing, with call counts.
#[derive(Debug, Default)]
pub struct Observed {
    pub paths: BTreeMap<String, u64>,
    pub hosts: BTreeMap<(IpAddr, u16), u64>,
    pub unix: BTreeMap<String, u64>,
    /// Calls counted (allowed, audited or observed).
    pub calls: u64,
    /// Calls the policy denied: the agent asked, but did not do them.
    pub denied: u64,
    pub first: Option<String>,
    pub last: Option<String>,
}

/// Reads the agent's calls from `logs` (chain verified as it reads).
pub fn observe(
    logs: &[Vec<PathBuf>],
    key: Option<&[u8]>,
    agent: &str,
    since: Option<std::time::SystemTime>,
) -> Result<Observed, QueryError> {
    let filter = Filter {
        agent: Some(agent.to_owned()),
        kinds: vec!["file.*".into(), "net.*".into()],
        since,
        until: None,
    };
    let mut seen = Observed::default();
    query::read(logs, key, &filter, |_, text, head| {
        let Ok(call) = serde_json::from_str::<CallLine>(text) else {
            return;
        };
        if call.outcome == "denied" {
            seen.denied += 1;
            return;
        }
        // A held call counts once it ran (its own `allowed` event).
        if !matches!(call.outcome.as_str(), "allowed" | "audited" | "observed") {
            return;
        }
        // Mounts and io_uring are governed by allow_mounts / allow_io_uring,
        // not by path rules: what they touched is no delete right.
        if matches!(call.kind.as_str(), "file.mount" | "file.io_uring") {
            return;
        }
        let t = call.target.unwrap_or_default();
        let counted = if call.kind.starts_with("file.") {
            for p in [&t.path, &t.new_path].into_iter().flatten() {
                *seen.paths.entry(p.clone()).or_default() += 1;
            }
            t.path.is_some()
        } else if t.family.as_deref() == Some("unix") {
            // A path, or `@name` for an abstract socket: both are
            // `unix:` rules.
            match t.path {
                Some(p) if p.starts_with('/') || p.len() > 1 && p.starts_with('@') => {
                    *seen.unix.entry(p).or_default() += 1;
                }
                _ => return,
            }
            true
        } else {
            match (t.address.as_deref().and_then(|a| a.parse().ok()), t.port) {
                (Some(addr), Some(port)) => *seen.hosts.entry((addr, port)).or_default() += 1,
                _ => return,
            }
            true
        };
        if counted {
            seen.calls += 1;
            let time = head
                .time
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            seen.first.get_or_insert_with(|| time.clone());
            seen.last = Some(time);
        }
    })?;
    Ok(seen)
}

fn depth(path: &str) -> usize {
    Path::new(path).components().count().saturating_sub(1)
}

fn parent(path: &str) -> Option<String> {
    Path::new(path).parent().map(|p| p.display().to_string())
}

fn is_below(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Directory prefixes covering `paths`, with the calls each covers. A
/// file's directory is the rule; one nested in another merges into it;
/// three or more siblings become their parent. Nothing is widened to a
/// directory less than two levels deep (`/`, `/srv`): there the path
/// itself is the rule.
pub fn delete_prefixes(paths: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut dirs: BTreeMap<String, u64> = BTreeMap::new();
    for (p, n) in paths {
        let dir = parent(p)
            .filter(|d| depth(d) >= 2)
            .unwrap_or_else(|| p.clone());
        *dirs.entry(dir).or_default() += n;
    }
    loop {
        dirs = merge_nested(dirs);
        let mut siblings: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in dirs.keys() {
            if let Some(up) = parent(d).filter(|u| depth(u) >= 2) {
                siblings.entry(up).or_default().push(d.clone());
            }
        }
        let Some((up, kids)) = siblings.into_iter().find(|(_, k)| k.len() >= 3) else {
            return dirs;
        };
        let total: u64 = kids.iter().filter_map(|k| dirs.remove(k)).sum();
        *dirs.entry(up).or_default() += total;
    }
}

fn merge_nested(dirs: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    // Sorted: an ancestor comes before everything below it.
    for (d, n) in dirs {
        match out.keys().find(|k| is_below(&d, k)).cloned() {
            Some(k) => *out.entry(k).or_default() += n,
            None => {
                out.insert(d, n);
            }
        }
    }
    out
}

/// `addr/len:port` rules covering `hosts`: one host alone is /32 (/128);
/// several hosts of one /24 (/64) on one port become that network.
pub fn connect_rules(hosts: &BTreeMap<(IpAddr, u16), u64>) -> BTreeMap<String, u64> {
    let mut groups: BTreeMap<(IpAddr, u16), (BTreeSet<IpAddr>, u64)> = BTreeMap::new();
    for ((addr, port), n) in hosts {
        let g = groups.entry((network(*addr), *port)).or_default();
        g.0.insert(*addr);
        g.1 += n;
    }
    let mut out = BTreeMap::new();
    for ((net, port), (members, n)) in groups {
        let rule = match (members.len(), members.iter().next()) {
            (1, Some(one)) => host_rule(*one, port),
            _ => match net {
                IpAddr::V4(v4) => format!("{v4}/24:{port}"),
                IpAddr::V6(v6) => format!("[{v6}/64]:{port}"),
            },
        };
        *out.entry(rule).or_default() += n;
    }
    out
}

fn host_rule(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(v4) => format!("{v4}/32:{port}"),
        IpAddr::V6(v6) => format!("[{v6}/128]:{port}"),
    }
}

fn network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & 0xffff_ff00)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(
            u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
        )),
    }
}

fn table(name: &str, rules: &BTreeMap<String, u64>, note: &str) -> String {
    let mut out = format!("[agent.{name}]\n# {note}\ndefault = \"deny\"\n");
    if rules.is_empty() {
        return out;
    }
    out.push_str("allow = [\n");
    for (rule, n) in rules {
        let text = toml::Value::String(rule.clone()).to_string();
        out.push_str(&format!(
            "    {text},  # {n} call{}\n",
            if *n == 1 { "" } else { "s" }
        ));
    }
    out.push_str("]\n");
    out
}

/// The policy file `text` with `agent`'s delete and connect tables
/// replaced by the least privilege `seen` needs. The result is parsed
/// before it is returned.
pub fn suggest(
    policy: &Policy,
    text: &str,
    agent: &str,
    seen: &Observed,
) -> Result<String, SuggestError> {
    let Some(def) = policy.agents.iter().find(|a| a.name == agent) else {
        return Err(SuggestError::NoAgent {
            file: policy.file.clone(),
            agent: agent.to_owned(),
            names: policy
                .agents
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let span = match (&seen.first, &seen.last) {
        (Some(a), Some(b)) => format!("{} calls, {a} .. {b}", seen.calls),
        _ => "no calls seen".into(),
    };
    let note = format!("suggested by `agent-guard policy suggest` from {span}");
    let mut connect = connect_rules(&seen.hosts);
    for (p, n) in &seen.unix {
        *connect.entry(format!("unix:{p}")).or_default() += n;
    }
    let tables = format!(
        "{}\n{}",
        table("delete", &delete_prefixes(&seen.paths), &note),
        table("connect", &connect, &note)
    );
    let out = replace_tables(text, def.line, &tables);
    policy::parse(&policy.file, &out).map_err(SuggestError::Invalid)?;
    Ok(out)
}

/// Replaces the `[agent.delete]`/`[agent.connect]` tables of the agent
/// whose `[[agent]]` header is on line `header` (1-based) with `tables`,
/// keeping every other line as written.
fn replace_tables(text: &str, header: usize, tables: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = header.saturating_sub(1);
    let is_header = |l: &str| l.trim_start().starts_with('[');
    // The agent's block ends at the next table that is not one of its own.
    let end = (start + 1..lines.len())
        .find(|i| is_header(lines[*i]) && !lines[*i].trim_start().starts_with("[agent."))
        .unwrap_or(lines.len());
    let mut out: Vec<&str> = lines[..start].to_vec();
    let mut skipping = false;
    for l in &lines[start..end] {
        if is_header(l) {
            let name = l.trim().trim_end_matches(|c: char| c != ']');
            skipping = matches!(name, "[agent.delete]" | "[agent.connect]");
        }
        if !skipping {
            out.push(l);
        }
    }
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    let mut text_out = out.join("\n");
    text_out.push_str("\n\n");
    text_out.push_str(tables);
    if end < lines.len() {
        text_out.push('\n');
        text_out.push_str(&lines[end..].join("\n"));
        text_out.push('\n');
    }
    text_out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(items: &[&str]) -> BTreeMap<String, u64> {
        items.iter().map(|p| ((*p).to_owned(), 1)).collect()
    }

    #[test]
    fn deletes_collapse_to_directories_but_not_to_the_top() {
        let got = delete_prefixes(&counts(&[
            "/srv/job/out/a.txt",
            "/srv/job/out/b.txt",
            "/srv/job/out/sub/c.txt",
            "/srv/job/tmp/1/x",
            "/srv/job/tmp/2/x",
            "/srv/job/tmp/3/x",
            "/etc-not-a-dir",
            "/srv/x",
        ]));
        let want: BTreeMap<String, u64> = [
            ("/etc-not-a-dir".to_owned(), 1),
            ("/srv/job/out".to_owned(), 3),
            ("/srv/job/tmp".to_owned(), 3),
            ("/srv/x".to_owned(), 1),
        ]
        .into();
        assert_eq!(got, want);
    }

    #[test]
    fn destinations_collapse_to_a_network_only_with_several_hosts() {
        let hosts: BTreeMap<(IpAddr, u16), u64> = [
            (("10.0.3.7".parse().expect("ip"), 443), 2),
            (("10.0.3.9".parse().expect("ip"), 443), 1),
            (("10.0.4.1".parse().expect("ip"), 443), 1),
            (("10.0.3.7".parse().expect("ip"), 5432), 4),
            (("2001:db8::1".parse().expect("ip"), 443), 1),
            (("2001:db8::2".parse().expect("ip"), 443), 1),
        ]
        .into();
        let got = connect_rules(&hosts);
        let want: BTreeMap<String, u64> = [
            ("10.0.3.0/24:443".to_owned(), 3),
            ("10.0.4.1/32:443".to_owned(), 1),
            ("10.0.3.7/32:5432".to_owned(), 4),
            ("[2001:db8::/64]:443".to_owned(), 2),
        ]
        .into();
        assert_eq!(got, want);
    }

    #[test]
    fn the_agents_tables_are_replaced_and_the_rest_is_kept() {
        let text = "# my policy\n[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\n\
                    cgroup = \"t/a\"\nmode = \"audit\"\n\n[agent.delete]\ndefault = \"allow\"\n\n\
                    [agent.connect]\ndefault = \"allow\"\n\n[[agent]]\nname = \"b\"\nowner = \"o\"\n\
                    purpose = \"p\"\ncgroup = \"t/b\"\n\n[agent.delete]\ndefault = \"allow\"\n";
        let policy = policy::parse("p.toml", text).expect("valid");
        let seen = Observed {
            paths: counts(&["/srv/job/out/a.txt"]),
            hosts: [(("127.0.0.1".parse().expect("ip"), 8080), 2)].into(),
            calls: 3,
            ..Observed::default()
        };
        let out = suggest(&policy, text, "a", &seen).expect("suggested");
        let p = policy::parse("p.toml", &out).expect("parses");
        let a = &p.agents[0];
        assert_eq!(a.delete.default, guard_common::Verdict::Deny);
        assert_eq!(a.delete.rules[0].text, "/srv/job/out");
        assert_eq!(a.connect.rules[0].text, "127.0.0.1/32:8080");
        assert!(out.contains("\"127.0.0.1/32:8080\",  # 2 calls"), "{out}");
        assert!(out.starts_with("# my policy\n"), "{out}");
        // The other agent is untouched.
        assert_eq!(p.agents[1].name, "b");
        assert_eq!(p.agents[1].delete.default, guard_common::Verdict::Allow);
        let err = suggest(&policy, text, "zed", &seen).expect_err("no such agent");
        assert!(err.to_string().contains("a, b"), "{err}");
    }

    #[test]
    fn observe_learns_renames_unix_sockets_and_skips_mounts_and_denials() {
        use serde_json::json;

        use crate::events::query::testlog;
        let ev = |kind: &str, outcome: &str, target: serde_json::Value| {
            json!({"time": "2026-12-01T00:00:00Z", "kind": kind, "outcome": outcome,
                   "agent": {"name": "a"}, "target": target})
        };
        let d = testlog::scratch("observe");
        let log = d.join("events.jsonl");
        testlog::write(
            &log,
            &[
                ev(
                    "file.rename",
                    "audited",
                    json!({"path": "/srv/in/x", "new_path": "/srv/out/x"}),
                ),
                ev(
                    "file.mount",
                    "audited",
                    json!({"operation": "mount", "path": "/mnt/x"}),
                ),
                ev(
                    "net.unix_connect",
                    "allowed",
                    json!({"family": "unix", "path": "@bus/x"}),
                ),
                ev(
                    "net.connect",
                    "denied",
                    json!({"family": "ipv4", "address": "10.0.0.1", "port": 80}),
                ),
                ev(
                    "net.send",
                    "audited",
                    json!({"family": "ipv4", "address": "10.0.0.2", "port": 53}),
                ),
            ],
        );
        let seen = observe(&query::logs(&[log], true), None, "a", None).expect("observe");
        assert_eq!(seen.paths, counts(&["/srv/in/x", "/srv/out/x"]));
        assert_eq!(seen.unix, counts(&["@bus/x"]));
        assert_eq!(seen.hosts.len(), 1);
        assert_eq!((seen.calls, seen.denied), (3, 1));
        let _ = std::fs::remove_dir_all(&d);
    }
}
