//! `[agent.budget]`: blast-radius budgets. At most N destructive calls
//! (or connects) per window, then ask, deny or freeze. The kernel and the
//! supervisor enforce them with guard_common::budget; this file reads and
//! checks the table.
use guard_common::{BUDGET_MAX_LIMIT, BudgetClass, Exceed};
use serde::Deserialize;
use toml::Spanned;

use super::PolicyError;
use super::error::Doc;

/// An agent's `[agent.budget]` table, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// unlink, rmdir, rename and truncate calls the policy allows.
    pub deletes: Option<Rate>,
    /// Connects and datagrams to IPv4/IPv6 addresses it allows (not unix
    /// sockets: see guard-ebpf's unix.rs).
    pub connects: Option<Rate>,
    pub on_exceed: Exceed,
}

impl Budget {
    /// The rate of one class, if the table sets it.
    pub fn rate(&self, class: BudgetClass) -> Option<&Rate> {
        match class {
            BudgetClass::Deletes => self.deletes.as_ref(),
            BudgetClass::Connects => self.connects.as_ref(),
        }
    }
}

/// "N/s", "N/min" or "N/h".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub period_ms: u32,
    /// As written, for `agents` and events.
    pub text: String,
}

impl Rate {
    /// The window as events name it: "1s", "1min", "1h".
    pub fn window(&self) -> &'static str {
        match self.period_ms {
            1_000 => "1s",
            60_000 => "1min",
            _ => "1h",
        }
    }
}

/// The policy-file spelling of an `on_exceed` action.
pub fn exceed_str(e: Exceed) -> &'static str {
    match e {
        Exceed::Ask => "ask",
        Exceed::Deny => "deny",
        Exceed::Freeze => "freeze",
    }
}

/// The policy-file spelling of a budget class.
pub fn class_str(c: BudgetClass) -> &'static str {
    match c {
        BudgetClass::Deletes => "deletes",
        BudgetClass::Connects => "connects",
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { deletes = \"40/min\", connects = \"100/min\", on_exceed = \"ask\" }"
)]
pub(super) struct RawBudget {
    deletes: Option<Spanned<String>>,
    connects: Option<Spanned<String>>,
    on_exceed: Option<Spanned<String>>,
}

pub(super) fn budget(
    doc: &Doc<'_>,
    raw: Option<Spanned<RawBudget>>,
) -> Result<Option<Budget>, PolicyError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let at = raw.span().start;
    let raw = raw.into_inner();
    let deletes = raw.deletes.as_ref().map(|r| rate(doc, r)).transpose()?;
    let connects = raw.connects.as_ref().map(|r| rate(doc, r)).transpose()?;
    let on_exceed = match &raw.on_exceed {
        None => Exceed::Ask,
        Some(v) => Exceed::ALL
            .iter()
            .copied()
            .find(|e| exceed_str(*e) == v.get_ref())
            .ok_or_else(|| {
                doc.error_at(
                    v.span().start,
                    format!(
                        "on_exceed must be \"ask\", \"deny\" or \"freeze\", got {:?}",
                        v.get_ref()
                    ),
                )
            })?,
    };
    if deletes.is_none() && connects.is_none() {
        return Err(doc.error_at(
            at,
            "[agent.budget] sets no budget: write deletes = \"N/min\" and/or connects = \"N/min\"",
        ));
    }
    Ok(Some(Budget {
        deletes,
        connects,
        on_exceed,
    }))
}

fn rate(doc: &Doc<'_>, raw: &Spanned<String>) -> Result<Rate, PolicyError> {
    let text = raw.get_ref();
    parse_rate(text)
        .map(|(limit, period_ms)| Rate {
            limit,
            period_ms,
            text: text.clone(),
        })
        .map_err(|m| doc.error_at(raw.span().start, m))
}

/// "N/s", "N/min", "N/h" (also "N/sec", "N/m", "N/hour"): (N, window ms).
pub fn parse_rate(text: &str) -> Result<(u32, u32), String> {
    let usage = || format!("budget {text:?}: write N/s, N/min or N/h, e.g. \"40/min\"");
    let (n, unit) = text.trim().split_once('/').ok_or_else(usage)?;
    let period_ms = match unit.trim() {
        "s" | "sec" | "second" => 1_000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        _ => return Err(usage()),
    };
    let n = n.trim();
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage());
    }
    let limit: u64 = n.parse().map_err(|_| usage())?;
    if limit == 0 {
        return Err(format!(
            "budget {text:?}: N must be at least 1 (to refuse every call, use a deny rule)"
        ));
    }
    if limit > u64::from(BUDGET_MAX_LIMIT) {
        return Err(format!(
            "budget {text:?}: N must be at most {BUDGET_MAX_LIMIT}"
        ));
    }
    Ok((limit as u32, period_ms))
}
