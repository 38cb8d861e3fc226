//! `review`: per agent, what the log says it did over a period against
//! what the policy grants it: rule use (and rules never used), denials,
//! holds with their decisions, grants, escapes and refusals, activity,
//! and flags for agents idle in the period or without an owner. Rendered
//! as Markdown, JSON or one self-contained HTML file (`review_html`).
use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use crate::{
    events::query::{self, Filter, Head, QueryError},
    policy::{self, Policy},
};

/// Bars in each agent's activity timeline.
pub const BUCKETS: usize = 48;
/// Rows kept per list (denials, holds, ...); the counts stay exact.
const LIST_CAP: usize = 100;

#[derive(Debug, Serialize)]
pub struct Review {
    pub since: String,
    pub until: String,
    pub policy: String,
    pub logs: Vec<String>,
    /// Lines read (all verified by the chain).
    pub lines: u64,
    pub agents: Vec<AgentReview>,
}

#[derive(Debug, Default, Serialize)]
pub struct AgentReview {
    pub name: String,
    pub owner: String,
    pub purpose: String,
    pub mode: Option<String>,
    pub expires: Option<String>,
    /// Declared by the policy (false: seen in the log only, since removed).
    pub in_policy: bool,
    pub first_activity: Option<String>,
    pub last_activity: Option<String>,
    /// Calls by outcome (allowed, denied, held, audited, observed).
    pub calls: BTreeMap<String, u64>,
    pub rules: Vec<RuleUse>,
    /// Allow and ask rules no call matched: candidates to remove.
    pub unused: Vec<String>,
    pub denials: Vec<Row>,
    pub denials_total: u64,
    pub holds: Vec<Row>,
    pub holds_total: u64,
    pub grants: Vec<Row>,
    pub escapes: Vec<Row>,
    pub refusals: u64,
    pub tampering: u64,
    pub flags: Vec<String>,
    /// Calls per timeline bucket: [allowed or audited, denied, held].
    pub timeline: Vec<[u64; 3]>,
}

#[derive(Debug, Serialize)]
pub struct RuleUse {
    pub table: &'static str,
    pub verdict: &'static str,
    pub rule: String,
    pub source: String,
    pub calls: u64,
}

/// One listed event, as short text fields.
#[derive(Debug, Default, Serialize)]
pub struct Row {
    pub time: String,
    pub kind: String,
    pub target: String,
    /// The rule (denials), the decision (holds), the scope (grants), how
    /// (escapes).
    pub what: String,
    pub by: String,
    pub reason: String,
}

/// The members a review reads beyond the [`Head`].
#[derive(Debug, Default, Deserialize)]
struct Line {
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    agent: Option<AgentLine>,
    #[serde(default)]
    rule: Option<RuleLine>,
    #[serde(default)]
    target: Option<Value>,
    #[serde(default)]
    hold: Option<Value>,
    #[serde(default)]
    control: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct AgentLine {
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    purpose: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RuleLine {
    #[serde(default, rename = "match")]
    matched: Option<String>,
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A call's target in one line: a path (and where it went), an address.
fn target_text(t: Option<&Value>) -> String {
    let Some(t) = t else {
        return String::new();
    };
    if let Some(addr) = t.get("address").and_then(Value::as_str) {
        let port = text(t.get("port"));
        return if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        };
    }
    let path = text(t.get("path"));
    match t.get("new_path").and_then(Value::as_str) {
        Some(new) => format!("{path} -> {new}"),
        None => path,
    }
}

/// The period's ends, to the second (events keep their nanoseconds).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn is_call(kind: &str) -> bool {
    (kind.starts_with("file.") || kind.starts_with("net.")) && kind != "hold.decision"
}

/// Owners that say nobody owns the agent.
fn ownerless(owner: &str) -> bool {
    let o = owner.trim().to_ascii_lowercase();
    o.is_empty()
        || ["unknown", "none", "-", "tbd", "todo", "nobody", "change-me"].contains(&o.as_str())
}

/// Builds the review of `policy`'s agents (and any other agent the log
/// names) over [since, until), reading `logs` through the chain check.
pub fn review(
    policy: &Policy,
    logs: &[Vec<PathBuf>],
    key: Option<&[u8]>,
    since: SystemTime,
    until: SystemTime,
) -> Result<Review, QueryError> {
    let mut agents: BTreeMap<String, AgentReview> = BTreeMap::new();
    for a in &policy.agents {
        agents.insert(
            a.name.clone(),
            AgentReview {
                name: a.name.clone(),
                owner: a.owner.clone(),
                purpose: a.purpose.clone(),
                mode: Some(policy::mode_str(a.mode).to_owned()),
                expires: a.expires_text(),
                in_policy: true,
                timeline: vec![[0; 3]; BUCKETS],
                ..AgentReview::default()
            },
        );
    }
    let mut uses: BTreeMap<(String, &'static str, String), u64> = BTreeMap::new();
    let span = until
        .duration_since(since)
        .unwrap_or(Duration::from_secs(1));
    let filter = Filter {
        since: Some(since),
        until: Some(until),
        ..Filter::default()
    };
    let reports = query::read(logs, key, &filter, |_, raw, head| {
        let line: Line = serde_json::from_str(raw).unwrap_or_default();
        let Some(name) = attributed(head, &line) else {
            return;
        };
        let a = agents.entry(name.clone()).or_insert_with(|| AgentReview {
            name: name.clone(),
            timeline: vec![[0; 3]; BUCKETS],
            ..AgentReview::default()
        });
        if !a.in_policy && a.owner.is_empty() {
            if let Some(al) = &line.agent {
                a.owner = al.owner.clone().unwrap_or_default();
                a.purpose = al.purpose.clone().unwrap_or_default();
            }
        }
        let time = head.time.format(&Rfc3339).unwrap_or_default();
        a.first_activity.get_or_insert_with(|| time.clone());
        a.last_activity = Some(time.clone());
        tally(a, head, &line, time, since, span, &mut uses);
    })?;
    for a in agents.values_mut() {
        rule_use(policy, a, &uses);
        flag(policy, a, until);
    }
    Ok(Review {
        since: rfc3339(since),
        until: rfc3339(until),
        policy: policy.file.clone(),
        logs: logs
            .iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect(),
        lines: reports.iter().map(|r| r.lines).sum(),
        agents: agents.into_values().collect(),
    })
}

/// The agent an event is about: its `agent`, or for a refusal the agent
/// the caller sat in.
fn attributed(head: &Head, line: &Line) -> Option<String> {
    if let Some(name) = head.agent() {
        return Some(name.to_owned());
    }
    let control = line.control.as_ref()?;
    control["by"]["agent"]
        .as_str()
        .or_else(|| control["agent"].as_str())
        .map(str::to_owned)
}

fn tally(
    a: &mut AgentReview,
    head: &Head,
    line: &Line,
    time: String,
    since: SystemTime,
    span: Duration,
    uses: &mut BTreeMap<(String, &'static str, String), u64>,
) {
    let kind = head.kind.as_str();
    let target = target_text(line.target.as_ref());
    if is_call(kind) {
        *a.calls.entry(line.outcome.clone()).or_default() += 1;
        let at = SystemTime::from(head.time)
            .duration_since(since)
            .unwrap_or_default();
        let i = ((at.as_secs_f64() / span.as_secs_f64()) * BUCKETS as f64) as usize;
        let slot = match line.outcome.as_str() {
            "denied" => 1,
            "held" => 2,
            _ => 0,
        };
        a.timeline[i.min(BUCKETS - 1)][slot] += 1;
        let table = if kind.starts_with("file.") {
            "delete"
        } else {
            "connect"
        };
        let matched = line
            .rule
            .as_ref()
            .and_then(|r| r.matched.clone())
            .unwrap_or_default();
        *uses
            .entry((a.name.clone(), table, matched.clone()))
            .or_default() += 1;
        if line.outcome == "denied" {
            a.denials_total += 1;
            push(
                &mut a.denials,
                Row {
                    time,
                    kind: kind.to_owned(),
                    target,
                    what: matched,
                    ..Row::default()
                },
            );
        }
        return;
    }
    match kind {
        "hold.decision" => {
            let h = line.hold.clone().unwrap_or_default();
            let row = Row {
                time,
                kind: text(h.get("call")),
                target,
                what: text(h.get("decision")),
                by: text(h.get("by").and_then(|b| b.get("user"))),
                reason: text(h.get("reason")),
            };
            // A scope other than "once" is a grant: later calls pass.
            if let Some(scope) = h.get("scope").filter(|s| s.is_object()) {
                push(
                    &mut a.grants,
                    Row {
                        what: text(scope.get("scope").or(scope.get("kind"))),
                        reason: text(scope.get("expires")),
                        ..clone_row(&row)
                    },
                );
            }
            a.holds_total += 1;
            push(&mut a.holds, row);
        }
        "agent.escape" => push(
            &mut a.escapes,
            Row {
                time,
                kind: kind.to_owned(),
                what: text(line.target.as_ref().and_then(|t| t.get("how"))),
                reason: text(line.target.as_ref().and_then(|t| t.get("action"))),
                ..Row::default()
            },
        ),
        "control.refused" => a.refusals += 1,
        "guard.tamper" => a.tampering += 1,
        _ => {}
    }
}

fn clone_row(r: &Row) -> Row {
    Row {
        time: r.time.clone(),
        kind: r.kind.clone(),
        target: r.target.clone(),
        what: r.what.clone(),
        by: r.by.clone(),
        reason: r.reason.clone(),
    }
}

fn push(list: &mut Vec<Row>, row: Row) {
    if list.len() < LIST_CAP {
        list.push(row);
    }
}

fn rule_use(
    policy: &Policy,
    a: &mut AgentReview,
    uses: &BTreeMap<(String, &'static str, String), u64>,
) {
    let Some(def) = policy.agents.iter().find(|d| d.name == a.name) else {
        return;
    };
    let count = |table: &'static str, text: &str| {
        uses.get(&(a.name.clone(), table, text.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let mut rules = Vec::new();
    for r in &def.delete.rules {
        rules.push(("delete", r.verdict, r.text.clone(), r.line));
    }
    for r in &def.connect.rules {
        rules.push(("connect", r.verdict, r.text.clone(), r.line));
    }
    for (table, verdict, text, line) in rules {
        let calls = count(table, &text);
        if calls == 0 && verdict != guard_common::Verdict::Deny {
            a.unused.push(format!(
                "[agent.{table}] {} {text:?}",
                policy::verdict_str(verdict)
            ));
        }
        a.rules.push(RuleUse {
            table,
            verdict: policy::verdict_str(verdict),
            rule: text,
            source: format!("{}:{line}", policy.file),
            calls,
        });
    }
    for (table, default) in [
        ("delete", def.delete.default),
        ("connect", def.connect.default),
    ] {
        a.rules.push(RuleUse {
            table,
            verdict: policy::verdict_str(default),
            rule: "default".into(),
            source: format!("{}:{}", policy.file, def.line),
            calls: count(table, "default"),
        });
    }
}

fn flag(policy: &Policy, a: &mut AgentReview, until: SystemTime) {
    if a.first_activity.is_none() {
        a.flags
            .push("no activity in the period: is it still needed?".into());
    }
    if ownerless(&a.owner) {
        a.flags.push("no owner: name who answers for it".into());
    }
    if !a.in_policy {
        a.flags
            .push("not in the policy: seen in the log only (removed since?)".into());
    }
    if let Some(def) = policy.agents.iter().find(|d| d.name == a.name) {
        if def.expired(until) {
            a.flags.push(format!(
                "expired at {}",
                a.expires.clone().unwrap_or_default()
            ));
        } else if def.expired(until + policy::expiry::WARN_AHEAD) {
            a.flags.push(format!(
                "expires at {}",
                a.expires.clone().unwrap_or_default()
            ));
        }
    }
    if !a.unused.is_empty() {
        a.flags.push(format!(
            "{} rule(s) never used: candidates to remove",
            a.unused.len()
        ));
    }
    if !a.escapes.is_empty() || a.tampering > 0 {
        a.flags
            .push("tried to escape or tamper with the guard".into());
    }
}

/// Markdown: one section per agent.
pub fn markdown(r: &Review) -> String {
    let mut out = format!(
        "# agent-guard review\n\nPeriod {} .. {}; policy `{}`; {} log lines, chain intact.\n",
        r.since, r.until, r.policy, r.lines
    );
    for a in &r.agents {
        out.push_str(&format!("\n## {}\n\n", a.name));
        out.push_str(&format!(
            "- owner: {}\n- purpose: {}\n- mode: {}\n- expires: {}\n- activity: {} .. {}\n- calls: {}\n",
            or_dash(&a.owner),
            or_dash(&a.purpose),
            a.mode.as_deref().unwrap_or("-"),
            a.expires.as_deref().unwrap_or("never"),
            a.first_activity.as_deref().unwrap_or("none"),
            a.last_activity.as_deref().unwrap_or("none"),
            calls_text(&a.calls),
        ));
        for f in &a.flags {
            out.push_str(&format!("- **flag: {f}**\n"));
        }
        if !a.rules.is_empty() {
            out.push_str("\n| table | verdict | rule | source | calls |\n|---|---|---|---|---|\n");
            for u in &a.rules {
                out.push_str(&format!(
                    "| {} | {} | `{}` | {} | {} |\n",
                    u.table, u.verdict, u.rule, u.source, u.calls
                ));
            }
        }
        if !a.unused.is_empty() {
            out.push_str("\nCandidates to remove (never used):\n\n");
            for u in &a.unused {
                out.push_str(&format!("- {u}\n"));
            }
        }
        table(
            &mut out,
            &format!("Denials ({})", a.denials_total),
            &a.denials,
            ["kind", "target", "rule", "", ""],
        );
        table(
            &mut out,
            &format!("Holds ({})", a.holds_total),
            &a.holds,
            ["call", "target", "decision", "by", "reason"],
        );
        table(
            &mut out,
            &format!("Grants ({})", a.grants.len()),
            &a.grants,
            ["call", "target", "scope", "by", "expires"],
        );
        table(
            &mut out,
            &format!("Escapes ({})", a.escapes.len()),
            &a.escapes,
            ["kind", "", "how", "", "action"],
        );
        if a.refusals + a.tampering > 0 {
            out.push_str(&format!(
                "\nRefused control requests from inside it: {}; tampering refused: {}\n",
                a.refusals, a.tampering
            ));
        }
    }
    out
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

pub fn calls_text(calls: &BTreeMap<String, u64>) -> String {
    if calls.is_empty() {
        return "none".into();
    }
    calls
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(out: &mut String, title: &str, rows: &[Row], heads: [&str; 5]) {
    if rows.is_empty() {
        return;
    }
    out.push_str(&format!("\n### {title}\n\n| time |"));
    let shown: Vec<usize> = (0..5).filter(|i| !heads[*i].is_empty()).collect();
    for i in &shown {
        out.push_str(&format!(" {} |", heads[*i]));
    }
    out.push_str(&format!("\n|---|{}\n", "---|".repeat(shown.len())));
    for r in rows {
        let cells = [&r.kind, &r.target, &r.what, &r.by, &r.reason];
        out.push_str(&format!("| {} |", r.time));
        for i in &shown {
            out.push_str(&format!(" {} |", cells[*i].replace('|', "\\|")));
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::query::testlog;

    #[test]
    fn counts_rules_denials_holds_grants_and_flags() {
        let policy = policy::parse(
            "p.toml",
            "[[agent]]\nname = \"bot\"\nowner = \"o@x\"\npurpose = \"p\"\ncgroup = \"t/bot\"\n\
             [agent.connect]\nallow = [\"10.0.0.1/32:443\", \"10.0.0.2/32:443\"]\n\n\
             [[agent]]\nname = \"idle\"\nowner = \"TBD\"\npurpose = \"p\"\ncgroup = \"t/idle\"\n",
        )
        .expect("policy");
        let bot = json!({"name": "bot"});
        let call = |t: &str, outcome: &str, rule: &str| {
            json!({"time": t, "kind": "net.connect", "outcome": outcome, "agent": bot,
                   "rule": {"match": rule}, "target": {"address": "10.0.0.1", "port": 443}})
        };
        let d = testlog::scratch("review");
        let log = d.join("events.jsonl");
        testlog::write(
            &log,
            &[
                json!({"time": "2026-12-01T00:00:00Z", "kind": "daemon.start", "outcome": "success"}),
                call("2026-12-01T01:00:00Z", "allowed", "10.0.0.1/32:443"),
                call("2026-12-01T02:00:00Z", "denied", "default"),
                call("2026-12-01T03:00:00Z", "denied", "default"),
                json!({"time": "2026-12-01T04:00:00Z", "kind": "hold.decision", "outcome": "allowed",
                   "agent": bot, "hold": {"call": "file.unlink", "decision": "approved",
                   "by": {"user": "alice"}, "reason": "OPS-1",
                   "scope": {"scope": {"kind": "subtree"}, "expires": "2026-12-01T05:00:00Z"}}}),
                json!({"time": "2026-12-01T05:00:00Z", "kind": "control.refused", "outcome": "denied",
                   "control": {"op": "thaw", "by": {"agent": "bot"}}}),
                // Outside the period: not counted.
                call("2026-12-03T00:00:00Z", "denied", "default"),
            ],
        );
        let at = |t: &str| query::parse_when(t, SystemTime::now()).expect("time");
        let r = review(
            &policy,
            &query::logs(&[log], true),
            None,
            at("2026-12-01T00:00:00Z"),
            at("2026-12-02T00:00:00Z"),
        )
        .expect("review");
        let bot = &r.agents[0];
        assert_eq!(
            (bot.name.as_str(), bot.denials_total, bot.holds_total),
            ("bot", 2, 1)
        );
        assert_eq!(bot.unused, ["[agent.connect] allow \"10.0.0.2/32:443\""]);
        assert_eq!(bot.grants.len(), 1);
        assert_eq!(bot.holds[0].by, "alice");
        assert_eq!(bot.refusals, 1);
        assert_eq!(bot.timeline.iter().map(|b| b[1]).sum::<u64>(), 2);
        let idle = &r.agents[1];
        assert!(
            idle.flags.iter().any(|f| f.contains("no activity")),
            "{:?}",
            idle.flags
        );
        assert!(
            idle.flags.iter().any(|f| f.contains("no owner")),
            "{:?}",
            idle.flags
        );
        let md = markdown(&r);
        assert!(
            md.contains("| connect | allow | `10.0.0.2/32:443` | p.toml:7 | 0 |"),
            "{md}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
