//! TOML to [`Policy`]: serde does the shape (unknown keys, missing fields,
//! types), this file the meaning. Values that can be wrong are kept
//! [`Spanned`] so each error points at the offending value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use guard_common::{MAX_PORT_RULES, Mode, Verdict};
use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use toml::Spanned;

use super::error::Doc;
use super::{
    Agent, Approvers, DEFAULT_APPROVAL_TIMEOUT_SECS, DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR,
    DaemonConfig, NetPolicy, NetRule, PathPolicy, PathRule, Policy, PolicyError, RemovePolicy,
    compile, net, parse_mode, parse_verdict, path, surfaces,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    daemon: Option<RawDaemon>,
    #[serde(default, deserialize_with = "agent_array")]
    agent: Vec<Spanned<RawAgent>>,
    web: Option<surfaces::RawWeb>,
    metrics: Option<surfaces::RawMetrics>,
    #[serde(default)]
    notify: Vec<surfaces::RawNotify>,
    #[serde(default)]
    sink: Vec<Spanned<super::sink::RawSink>>,
    discover: Option<RawDiscover>,
}

/// `[discover]`: more names `agent-guard discover` looks for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [discover] table")]
struct RawDiscover {
    #[serde(default)]
    patterns: Vec<Spanned<String>>,
}

/// A plain `Vec` whose type error names the common mistake of writing
/// `[agent]` instead of `[[agent]]`.
fn agent_array<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Spanned<RawAgent>>, D::Error> {
    struct Agents;
    impl<'de> Visitor<'de> for Agents {
        type Value = Vec<Spanned<RawAgent>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("[[agent]] tables (an array of tables), not a single [agent] table")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(agent) = seq.next_element()? {
                out.push(agent);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Agents)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [daemon] table")]
struct RawDaemon {
    control_socket: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    approval_timeout_secs: Option<Spanned<u64>>,
    approvers: Option<RawApprovers>,
    readers: Option<RawApprovers>,
    on_remove: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { uids = [0], groups = [] }"
)]
struct RawApprovers {
    uids: Option<Vec<u32>>,
    groups: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [[agent]] table")]
struct RawAgent {
    name: Spanned<String>,
    owner: Spanned<String>,
    purpose: Spanned<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    cgroup: Spanned<String>,
    mode: Option<Spanned<String>>,
    connect: Option<RawRules>,
    delete: Option<RawRules>,
    allow_mounts: Option<bool>,
    allow_io_uring: Option<bool>,
    runners: Option<RawApprovers>,
    approval_timeout_secs: Option<Spanned<u64>>,
    budget: Option<Spanned<super::budget::RawBudget>>,
    expires: Option<Spanned<String>>,
}

/// `[agent.connect]` and `[agent.delete]` have the same shape.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of default, allow, ask and deny"
)]
struct RawRules {
    default: Option<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    ask: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    /// Delete tables only: start even where this kernel can neither block
    /// nor supervise deletes, observing them instead.
    accept_observe_only: Option<Spanned<bool>>,
}

impl RawRules {
    /// Entries with their verdicts (ids are assigned later, in file order).
    fn entries(&self) -> impl Iterator<Item = (Verdict, &Spanned<String>)> {
        [
            (Verdict::Allow, &self.allow),
            (Verdict::Ask, &self.ask),
            (Verdict::Deny, &self.deny),
        ]
        .into_iter()
        .flat_map(|(v, list)| list.iter().map(move |e| (v, e)))
    }
}

/// Where a validated agent's name and cgroup were written, for errors that
/// compare agents.
struct Seen {
    name_line: usize,
    cgroup_line: usize,
}

pub(super) fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
    let doc = Doc { file, text };
    let raw: RawPolicy = toml::from_str(text).map_err(|e| doc.toml_error(&e))?;
    let daemon = daemon(&doc, raw.daemon)?;
    let web = surfaces::web(&doc, raw.web)?;
    let metrics = surfaces::metrics(&doc, raw.metrics, web.as_ref())?;
    let notify = surfaces::notify(&doc, raw.notify)?;

    let mut agents: Vec<Agent> = Vec::with_capacity(raw.agent.len());
    let mut seen: Vec<Seen> = Vec::with_capacity(raw.agent.len());
    for raw_agent in raw.agent {
        let line = doc.line_col(raw_agent.span().start).0;
        let raw_agent = raw_agent.into_inner();
        let name_at = raw_agent.name.span().start;
        let cgroup_at = raw_agent.cgroup.span().start;
        // Checked before the agent's rules so errors come out in file order.
        check_against_earlier(&doc, &raw_agent, &agents, &seen)?;
        let agent = agent(&doc, raw_agent, line)?;
        capacity(&doc, &agent)?;
        seen.push(Seen {
            name_line: doc.line_col(name_at).0,
            cgroup_line: doc.line_col(cgroup_at).0,
        });
        agents.push(agent);
    }

    assign_ids(&mut agents);
    let sinks = super::sink::sinks(&doc, raw.sink)?;
    let discover = discover_patterns(&doc, raw.discover)?;
    Ok(Policy {
        file: file.to_owned(),
        daemon,
        agents,
        web,
        metrics,
        notify,
        sinks,
        discover,
    })
}

fn discover_patterns(doc: &Doc<'_>, raw: Option<RawDiscover>) -> Result<Vec<String>, PolicyError> {
    let mut out = Vec::new();
    for p in raw.map(|d| d.patterns).unwrap_or_default() {
        if p.get_ref().trim().is_empty() {
            return Err(doc.error_at(p.span().start, "a discover pattern must not be empty"));
        }
        out.push(p.into_inner());
    }
    Ok(out)
}

/// Rejects a connect table the kernel's fixed-size rule sets cannot hold.
fn capacity(doc: &Doc<'_>, agent: &Agent) -> Result<(), PolicyError> {
    // Counting does not depend on rule ids, which are assigned later.
    compile::check_capacity(&agent.connect).map_err(|o| PolicyError::Invalid {
        file: doc.file.to_owned(),
        line: o.rule.line,
        col: o.rule.col,
        message: format!(
            "agent {:?}: connects to {} need {} port rules (its own and those of \
             the prefixes containing it); the kernel holds at most {MAX_PORT_RULES}",
            agent.name,
            net::prefix_display(o.addr, o.prefix),
            o.needed
        ),
    })
}

/// Rejects a name already taken and a cgroup that is invalid or nests with
/// an earlier agent's (a process must belong to exactly one agent).
fn check_against_earlier(
    doc: &Doc<'_>,
    raw: &RawAgent,
    agents: &[Agent],
    seen: &[Seen],
) -> Result<(), PolicyError> {
    let (name, cgroup) = (raw.name.get_ref(), raw.cgroup.get_ref());
    let cgroup_at = raw.cgroup.span().start;
    if let Some((_, at)) = agents.iter().zip(seen).find(|(a, _)| a.name == *name) {
        return Err(doc.error_at(
            raw.name.span().start,
            format!(
                "duplicate agent name {name:?} (first defined at line {})",
                at.name_line
            ),
        ));
    }
    path::validate_cgroup(cgroup).map_err(|m| doc.error_at(cgroup_at, m))?;
    let overlap = agents
        .iter()
        .zip(seen)
        .find(|(a, _)| path::cgroups_overlap(&a.cgroup, cgroup));
    if let Some((other, at)) = overlap {
        return Err(doc.error_at(
            cgroup_at,
            format!(
                "cgroup {cgroup:?} overlaps agent {:?}'s cgroup {:?} (line {}); \
                 agent cgroups must not be equal or nested",
                other.name, other.cgroup, at.cgroup_line
            ),
        ));
    }
    Ok(())
}

fn daemon(doc: &Doc<'_>, raw: Option<RawDaemon>) -> Result<DaemonConfig, PolicyError> {
    let Some(raw) = raw else {
        return Ok(DaemonConfig {
            control_socket: DEFAULT_CONTROL_SOCKET.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            approval_timeout_secs: DEFAULT_APPROVAL_TIMEOUT_SECS,
            approvers: default_approvers(),
            readers: no_one(),
            on_remove: RemovePolicy::Unguard,
        });
    };
    let abs_path = |v: Option<Spanned<String>>, default: &str, what: &str| match v {
        None => Ok(PathBuf::from(default)),
        Some(s) if s.get_ref().starts_with('/') => Ok(PathBuf::from(s.into_inner())),
        Some(s) => Err(doc.error_at(
            s.span().start,
            format!("{what} must be an absolute path, got {:?}", s.get_ref()),
        )),
    };
    let control_socket = abs_path(raw.control_socket, DEFAULT_CONTROL_SOCKET, "control_socket")?;
    let state_dir = abs_path(raw.state_dir, DEFAULT_STATE_DIR, "state_dir")?;
    let approval_timeout_secs =
        approval_timeout(doc, raw.approval_timeout_secs)?.unwrap_or(DEFAULT_APPROVAL_TIMEOUT_SECS);
    let approvers = uid_group_list(doc, raw.approvers, "approver")?;
    // Readers add to the approvers: none unless written.
    let readers = match raw.readers {
        None => no_one(),
        Some(r) => {
            let uids = r.uids.clone().unwrap_or_default();
            Approvers {
                uids,
                ..uid_group_list(doc, Some(r), "reader")?
            }
        }
    };
    let on_remove = match raw.on_remove {
        None => RemovePolicy::Unguard,
        Some(v) => match v.get_ref().as_str() {
            "kill" => RemovePolicy::Kill,
            "unguard" => RemovePolicy::Unguard,
            other => {
                return Err(doc.error_at(
                    v.span().start,
                    format!("on_remove must be \"kill\" or \"unguard\", got {other:?}"),
                ));
            }
        },
    };
    Ok(DaemonConfig {
        control_socket,
        state_dir,
        approval_timeout_secs,
        approvers,
        readers,
        on_remove,
    })
}

/// `approval_timeout_secs`, in [daemon] or an [[agent]]: more than 0.
fn approval_timeout(doc: &Doc<'_>, raw: Option<Spanned<u64>>) -> Result<Option<u64>, PolicyError> {
    match raw {
        Some(t) if *t.get_ref() == 0 => Err(doc.error_at(
            t.span().start,
            "approval_timeout_secs must be greater than 0",
        )),
        t => Ok(t.map(Spanned::into_inner)),
    }
}

/// `{ uids = [...], groups = [...] }` for approvers and runners; omitted
/// means root only.
fn uid_group_list(
    doc: &Doc<'_>,
    raw: Option<RawApprovers>,
    what: &str,
) -> Result<Approvers, PolicyError> {
    let Some(a) = raw else {
        return Ok(default_approvers());
    };
    let mut groups = Vec::new();
    for g in a.groups.unwrap_or_default() {
        if g.get_ref().trim().is_empty() {
            return Err(doc.error_at(g.span().start, format!("{what} group name is empty")));
        }
        groups.push(g.into_inner());
    }
    Ok(Approvers {
        uids: a.uids.unwrap_or_else(|| default_approvers().uids),
        groups,
    })
}

fn no_one() -> Approvers {
    Approvers {
        uids: Vec::new(),
        groups: Vec::new(),
    }
}

fn default_approvers() -> Approvers {
    Approvers {
        uids: vec![0],
        groups: Vec::new(),
    }
}

/// Validates one agent's own fields (the cgroup is checked by
/// [`check_against_earlier`]).
fn agent(doc: &Doc<'_>, raw: RawAgent, line: usize) -> Result<Agent, PolicyError> {
    let name = raw.name.get_ref();
    let name_ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !name_ok {
        return Err(doc.error_at(
            raw.name.span().start,
            format!("invalid agent name {name:?}: use 1-64 characters from A-Z a-z 0-9 _ . -"),
        ));
    }
    for (field, value) in [("owner", &raw.owner), ("purpose", &raw.purpose)] {
        if value.get_ref().trim().is_empty() {
            return Err(doc.error_at(value.span().start, format!("{field} must not be empty")));
        }
    }
    let mode = match &raw.mode {
        None => Mode::Enforce,
        Some(m) => parse_mode(m.get_ref()).ok_or_else(|| {
            doc.error_at(
                m.span().start,
                format!(
                    "unknown mode {:?}; expected \"enforce\" or \"audit\"",
                    m.get_ref()
                ),
            )
        })?,
    };
    let connect = net_policy(doc, raw.connect.as_ref())?;
    let delete = path_policy(doc, raw.delete.as_ref())?;
    let runners = uid_group_list(doc, raw.runners, "runner")?;
    let approval_timeout_secs = approval_timeout(doc, raw.approval_timeout_secs)?;
    let budget = super::budget::budget(doc, raw.budget)?;
    let expires = raw.expires.as_ref().map(|e| expiry(doc, e)).transpose()?;
    Ok(Agent {
        name: raw.name.into_inner(),
        owner: raw.owner.into_inner(),
        purpose: raw.purpose.into_inner(),
        labels: raw.labels,
        cgroup: raw.cgroup.into_inner(),
        mode,
        connect,
        delete,
        allow_mounts: raw.allow_mounts.unwrap_or(false),
        allow_io_uring: raw.allow_io_uring.unwrap_or(false),
        runners,
        approval_timeout_secs,
        budget,
        expires,
        line,
    })
}

/// `expires`: an RFC 3339 time, with `Z` or an offset.
fn expiry(doc: &Doc<'_>, raw: &Spanned<String>) -> Result<std::time::SystemTime, PolicyError> {
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};
    OffsetDateTime::parse(raw.get_ref(), &Rfc3339)
        .map(std::time::SystemTime::from)
        .map_err(|e| {
            doc.error_at(
                raw.span().start,
                format!(
                    "expires {:?} is not an RFC 3339 time ({e}); write it like \
                     \"2027-03-31T18:00:00Z\" or \"2027-03-31T20:00:00+02:00\"",
                    raw.get_ref()
                ),
            )
        })
}

/// Both tables default to deny: an agent gets only what its policy grants.
fn default_verdict(doc: &Doc<'_>, raw: Option<&RawRules>) -> Result<Verdict, PolicyError> {
    match raw.and_then(|r| r.default.as_ref()) {
        None => Ok(Verdict::Deny),
        Some(d) => verdict(doc, d),
    }
}

fn verdict(doc: &Doc<'_>, s: &Spanned<String>) -> Result<Verdict, PolicyError> {
    parse_verdict(s.get_ref()).ok_or_else(|| {
        doc.error_at(
            s.span().start,
            format!(
                "unknown verdict {:?}; expected \"allow\", \"ask\" or \"deny\"",
                s.get_ref()
            ),
        )
    })
}

fn net_policy(doc: &Doc<'_>, raw: Option<&RawRules>) -> Result<NetPolicy, PolicyError> {
    if let Some(flag) = raw.and_then(|r| r.accept_observe_only.as_ref()) {
        return Err(doc.error_at(
            flag.span().start,
            "accept_observe_only applies to [agent.delete] only; connects are always enforced"
                .to_owned(),
        ));
    }
    let default = default_verdict(doc, raw)?;
    let mut rules = Vec::new();
    for (verdict, entry) in raw.iter().flat_map(|r| r.entries()) {
        let at = entry.span().start;
        let target = net::parse_target(entry.get_ref()).map_err(|m| doc.error_at(at, m))?;
        let (line, col) = doc.line_col(at);
        rules.push(NetRule {
            id: 0,
            verdict,
            target,
            text: entry.get_ref().clone(),
            line,
            col,
        });
    }
    Ok(NetPolicy { default, rules })
}

fn path_policy(doc: &Doc<'_>, raw: Option<&RawRules>) -> Result<PathPolicy, PolicyError> {
    let default = default_verdict(doc, raw)?;
    let mut rules = Vec::new();
    for (verdict, entry) in raw.iter().flat_map(|r| r.entries()) {
        let at = entry.span().start;
        let prefix = path::normalize_abs(entry.get_ref()).map_err(|m| doc.error_at(at, m))?;
        let (line, col) = doc.line_col(at);
        rules.push(PathRule {
            id: 0,
            verdict,
            prefix,
            text: entry.get_ref().clone(),
            line,
            col,
        });
    }
    let accept_observe_only = raw
        .and_then(|r| r.accept_observe_only.as_ref())
        .is_some_and(|f| *f.get_ref());
    Ok(PathPolicy {
        default,
        rules,
        accept_observe_only,
    })
}

/// Numbers every rule of the policy 1.. in file order (by position, so the
/// order of the allow/ask/deny keys inside a table does not matter) and
/// leaves each rule list sorted by id.
fn assign_ids(agents: &mut [Agent]) {
    let mut order: Vec<(usize, usize, usize, bool, usize)> = Vec::new();
    for (a, agent) in agents.iter().enumerate() {
        for (i, r) in agent.connect.rules.iter().enumerate() {
            order.push((r.line, r.col, a, false, i));
        }
        for (i, r) in agent.delete.rules.iter().enumerate() {
            order.push((r.line, r.col, a, true, i));
        }
    }
    order.sort_unstable();
    let mut next = 1u32;
    for (_, _, a, is_delete, i) in order {
        let slot = if is_delete {
            agents
                .get_mut(a)
                .and_then(|x| x.delete.rules.get_mut(i))
                .map(|r| &mut r.id)
        } else {
            agents
                .get_mut(a)
                .and_then(|x| x.connect.rules.get_mut(i))
                .map(|r| &mut r.id)
        };
        if let Some(id) = slot {
            *id = next;
            next += 1;
        }
    }
    for agent in agents {
        agent.connect.rules.sort_by_key(|r| r.id);
        agent.delete.rules.sort_by_key(|r| r.id);
    }
}
