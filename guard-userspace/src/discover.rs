//! `agent-guard discover`: processes that look like AI agents but run in no
//! agent's cgroup, so nothing guards them ("shadow" agents). A heuristic
//! inventory, not a boundary: a process that renames itself is not found,
//! which the README says.
//!
//! A process matches a pattern without '/' when the pattern is the name of
//! its executable, of its argv[0], or, for an interpreter (python, node,
//! npx, uvx, ...), of the script or `-m` module it runs; a pattern with '/'
//! matches inside any argument (an npm package path, say).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde::Serialize;

use crate::{cgroup, policy::Policy};
use guard_host::proc;

/// Coding-agent CLIs and agent frameworks, by the names they run under.
pub const DEFAULT_PATTERNS: &[&str] = &[
    "claude",
    "claude-code",
    "@anthropic-ai/claude-code",
    "codex",
    "@openai/codex",
    "aider",
    "gemini",
    "@google/gemini-cli",
    "cursor-agent",
    "goose",
    "openhands",
    "opencode",
    "crewai",
    "autogen",
    "autogenstudio",
    "langgraph",
    "langchain",
];

/// Programs that run a script or module named in their arguments.
const INTERPRETERS: &[&str] = &[
    "python", "python3", "node", "nodejs", "bun", "deno", "npx", "uv", "uvx", "pipx", "ruby",
];

/// One process, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
}

/// A process that looks like an agent, with everything below it.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    #[serde(flatten)]
    pub process: Proc,
    /// The pattern it matched.
    pub pattern: String,
    /// Its cgroup v2 path ("/user.slice/...").
    pub cgroup: String,
    /// The systemd unit (or scope) the cgroup belongs to.
    pub unit: Option<String>,
    /// The container runtime and id, when the cgroup is a container's.
    pub container: Option<String>,
    /// Processes in that cgroup, this one included.
    pub cgroup_processes: usize,
    pub children: Vec<Proc>,
    /// A `[[agent]]` table adopting the cgroup, or None for the root
    /// cgroup (nothing to adopt).
    pub stanza: Option<String>,
}

/// What a process looks like to the matcher.
struct Seen {
    proc: Proc,
    comm: String,
    cgroup: Option<String>,
}

/// Finds matching processes outside every agent cgroup of `policy`.
pub fn discover(policy: &Policy) -> Vec<Found> {
    let patterns: Vec<&str> = DEFAULT_PATTERNS
        .iter()
        .copied()
        .chain(policy.discover.iter().map(String::as_str))
        .collect();
    let me = std::process::id();
    let all: BTreeMap<u32, Seen> = proc::pids()
        .into_iter()
        .filter(|pid| *pid != me)
        .filter_map(|pid| seen(pid).map(|s| (pid, s)))
        .collect();
    let inside = |cg: &str| {
        let cg = cg.trim_start_matches('/');
        policy.agents.iter().any(|a| {
            cg == a.cgroup
                || cg
                    .strip_prefix(a.cgroup.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    };
    let matched: BTreeMap<u32, &str> = all
        .iter()
        .filter(|(_, s)| s.cgroup.as_deref().is_some_and(|c| !inside(c)))
        .filter_map(|(pid, s)| {
            patterns
                .iter()
                .find(|p| matches(p, &s.proc, &s.comm))
                .map(|p| (*pid, *p))
        })
        .collect();
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (pid, s) in &all {
        children.entry(s.proc.ppid).or_default().push(*pid);
    }
    let hierarchy = cgroup::Hierarchy::discover().ok();
    matched
        .iter()
        // A match below another match is that one's child, not a finding.
        .filter(|(pid, _)| !has_matched_ancestor(**pid, &all, &matched))
        .filter_map(|(pid, pattern)| {
            let s = all.get(pid)?;
            let cg = s.cgroup.clone().unwrap_or_default();
            let below = descendants(*pid, &children)
                .into_iter()
                .filter_map(|c| all.get(&c).map(|s| s.proc.clone()))
                .collect();
            let cgroup_processes = hierarchy
                .as_ref()
                .map_or(0, |h| cgroup::count_procs(&h.path(&cg)));
            let mut found = Found {
                process: s.proc.clone(),
                pattern: (*pattern).to_owned(),
                unit: unit(&cg),
                container: container(&cg),
                cgroup: cg,
                cgroup_processes,
                children: below,
                stanza: None,
            };
            found.stanza = stanza(&found, policy);
            Some(found)
        })
        .collect()
}

fn seen(pid: u32) -> Option<Seen> {
    let stat = proc::stat(pid)?;
    let cmdline = proc::cmdline(pid).unwrap_or_default();
    // Kernel threads have no command line and are never agents.
    if cmdline.is_empty() {
        return None;
    }
    let uid = proc::uid(pid);
    Some(Seen {
        proc: Proc {
            pid,
            ppid: stat.ppid,
            uid,
            user: uid.and_then(|u| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            }),
            exe: proc::exe(pid).map(|p| p.display().to_string()),
            cmdline,
        },
        comm: stat.comm,
        cgroup: proc::cgroup(pid),
    })
}

fn base(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

/// A script's name without its extension: `aider.py` runs aider.
fn stem(path: &str) -> &str {
    let b = base(path);
    ["py", "js", "mjs", "cjs", "ts"]
        .iter()
        .find_map(|ext| b.strip_suffix(&format!(".{ext}")[..]))
        .unwrap_or(b)
}

fn is_interpreter(name: &str) -> bool {
    // python3.12, node20 ...: the family name followed by a version.
    INTERPRETERS.iter().any(|i| {
        name.strip_prefix(i)
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
    })
}

fn matches(pattern: &str, p: &Proc, comm: &str) -> bool {
    if pattern.contains('/') {
        return p.cmdline.iter().any(|a| a.contains(pattern));
    }
    let exe = p.exe.as_deref().map(base);
    let argv0 = p.cmdline.first().map(|a| base(a));
    if exe == Some(pattern) || argv0 == Some(pattern) || comm == pattern {
        return true;
    }
    let runs_scripts = exe.is_some_and(is_interpreter) || argv0.is_some_and(is_interpreter);
    if !runs_scripts {
        return false;
    }
    // The first argument that is not an option is the script (or, after
    // -m, the module): `python3 -u /usr/bin/aider`, `python -m crewai run`.
    let mut args = p.cmdline.iter().skip(1);
    while let Some(a) = args.next() {
        if a == "-m" {
            return args.next().is_some_and(|m| {
                let top = m.split('.').next().unwrap_or(m);
                top == pattern
                    || top
                        .strip_prefix(pattern)
                        .is_some_and(|r| r.starts_with('_'))
            });
        }
        if !a.starts_with('-') {
            return stem(a) == pattern;
        }
    }
    false
}

fn has_matched_ancestor(
    pid: u32,
    all: &BTreeMap<u32, Seen>,
    matched: &BTreeMap<u32, &str>,
) -> bool {
    let mut at = all.get(&pid).map(|s| s.proc.ppid);
    // Bounded: a pid cycle cannot happen, but a walk must end anyway.
    for _ in 0..4096 {
        match at {
            Some(p) if p > 1 => {
                if matched.contains_key(&p) {
                    return true;
                }
                at = all.get(&p).map(|s| s.proc.ppid);
            }
            _ => return false,
        }
    }
    false
}

fn descendants(pid: u32, children: &BTreeMap<u32, Vec<u32>>) -> Vec<u32> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for c in children.get(&p).into_iter().flatten() {
            if seen.insert(*c) {
                out.push(*c);
                next.push(*c);
            }
        }
    }
    out.sort_unstable();
    out
}

/// The deepest systemd unit or scope on the cgroup path.
fn unit(cgroup: &str) -> Option<String> {
    cgroup
        .split('/')
        .rev()
        .find(|c| {
            [".service", ".scope", ".slice"]
                .iter()
                .any(|s| c.ends_with(s))
        })
        .map(str::to_owned)
}

/// "docker 3f2a..." for the cgroups container runtimes create.
fn container(cgroup: &str) -> Option<String> {
    let parts: Vec<&str> = cgroup.split('/').collect();
    for (i, c) in parts.iter().enumerate().rev() {
        let c = c.strip_suffix(".scope").unwrap_or(c);
        for (prefix, runtime) in [
            ("docker-", "docker"),
            ("libpod-", "podman"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
        ] {
            if let Some(id) = c.strip_prefix(prefix) {
                return Some(format!("{runtime} {id}"));
            }
        }
        if i > 0 && matches!(parts[i - 1], "docker" | "lxc") && !c.is_empty() {
            return Some(format!("{} {c}", parts[i - 1]));
        }
    }
    None
}

/// A `[[agent]]` table that adopts the process's cgroup, in audit mode
/// (learn first: `policy suggest` turns an audit run into rules).
fn stanza(f: &Found, policy: &Policy) -> Option<String> {
    let cg = f.cgroup.trim_start_matches('/');
    if cg.is_empty() {
        return None;
    }
    let mut name: String = format!("{}-{}", f.pattern, f.process.pid)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches('-').chars().take(64).collect();
    let owner = f.process.user.clone().unwrap_or_else(|| "unknown".into());
    let mut out = String::new();
    if f.cgroup_processes > 1 + f.children.len() {
        out.push_str(&format!(
            "# {cg} holds {} processes, not only this agent's: adopting it guards them all.\n\
             # Better: start the agent in a unit of its own (systemd-run --unit={name} ...)\n\
             # or with `agent-guard run`.\n",
            f.cgroup_processes
        ));
    }
    if policy
        .agents
        .iter()
        .any(|a| a.cgroup.starts_with(&format!("{cg}/")))
    {
        out.push_str(
            "# An agent of this policy lives below this cgroup: agents' cgroups may not nest.\n",
        );
    }
    out.push_str(&format!(
        "[[agent]]\nname = {}\nowner = {}\npurpose = {}\ncgroup = {}\nmode = \"audit\"\n",
        toml_str(&name),
        toml_str(&owner),
        toml_str(&format!(
            "discovered {} (pid {}): say what it is for",
            f.pattern, f.process.pid
        )),
        toml_str(cg)
    ));
    Some(out)
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(exe: &str, argv: &[&str]) -> Proc {
        Proc {
            pid: 10,
            ppid: 1,
            uid: Some(1000),
            user: Some("alice".into()),
            exe: Some(exe.into()),
            cmdline: argv.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn names_scripts_modules_and_package_paths() {
        let m = |pat, proc: &Proc| matches(pat, proc, "x");
        assert!(m("claude", &p("/usr/local/bin/claude", &["claude"])));
        assert!(m(
            "aider",
            &p(
                "/usr/bin/python3.12",
                &["python3", "-u", "/usr/local/bin/aider"]
            )
        ));
        assert!(m(
            "crewai",
            &p("/usr/bin/python3", &["python3", "-m", "crewai", "run"])
        ));
        assert!(m(
            "autogen",
            &p("/usr/bin/python3", &["python", "-m", "autogen_agentchat.x"])
        ));
        assert!(m(
            "@openai/codex",
            &p(
                "/usr/bin/node",
                &["node", "/usr/lib/node_modules/@openai/codex/bin/codex.js"]
            )
        ));
        assert!(m(
            "codex",
            &p("/usr/bin/node", &["node", "/x/codex.js", "exec"])
        ));
        // Not an interpreter: its arguments are data.
        assert!(!m("gemini", &p("/usr/bin/vim", &["vim", "gemini"])));
        assert!(!m(
            "goose",
            &p("/usr/bin/python3", &["python3", "mongoose.py"])
        ));
        assert!(!m(
            "autogen",
            &p("/usr/bin/python3", &["python3", "-m", "autogenerate"])
        ));
    }

    #[test]
    fn units_and_containers() {
        assert_eq!(
            unit("/user.slice/user-1000.slice/session-3.scope").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(
            unit("/system.slice/docker-abc.scope").as_deref(),
            Some("docker-abc.scope")
        );
        assert_eq!(
            container("/system.slice/docker-abc.scope").as_deref(),
            Some("docker abc")
        );
        assert_eq!(
            container("/kubepods/besteffort/pod1/cri-containerd-f00.scope").as_deref(),
            Some("containerd f00")
        );
        assert_eq!(container("/docker/0123").as_deref(), Some("docker 0123"));
        assert_eq!(container("/user.slice"), None);
    }

    #[test]
    fn the_stanza_is_a_valid_agent_table() {
        let policy = crate::policy::parse("p.toml", "").expect("empty policy");
        let found = Found {
            process: p("/usr/local/bin/claude", &["claude"]),
            pattern: "@anthropic-ai/claude-code".into(),
            cgroup: "/user.slice/user-1000.slice/session-3.scope".into(),
            unit: None,
            container: None,
            cgroup_processes: 5,
            children: Vec::new(),
            stanza: None,
        };
        let text = stanza(&found, &policy).expect("a cgroup to adopt");
        assert!(text.starts_with("# user.slice/"), "{text}");
        let parsed = crate::policy::parse("s.toml", &text).expect("the stanza parses");
        assert_eq!(
            parsed.agents[0].cgroup,
            "user.slice/user-1000.slice/session-3.scope"
        );
        assert_eq!(parsed.agents[0].name, "anthropic-ai-claude-code-10");
        let root = Found {
            cgroup: "/".into(),
            ..found
        };
        assert!(stanza(&root, &policy).is_none());
    }

    #[test]
    fn the_policy_adds_patterns_and_rejects_empty_ones() {
        let p =
            crate::policy::parse("p.toml", "[discover]\npatterns = [\"my-bot\"]\n").expect("valid");
        assert_eq!(p.discover, ["my-bot"]);
        let err = crate::policy::parse("p.toml", "[discover]\npatterns = [\" \"]\n")
            .expect_err("empty pattern");
        assert_eq!((err.line(), err.col()), (Some(2), Some(13)), "{err}");
    }
}
