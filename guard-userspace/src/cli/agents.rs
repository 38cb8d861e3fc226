//! `agent-guard agents [--json]`: the agent registry.
use std::{path::Path, process::ExitCode};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::args::AgentsArgs;
use crate::control::{Client, Request};

pub fn run(args: AgentsArgs, socket: &Path) -> Result<ExitCode> {
    let reply = Client::connect(socket)?
        .call(Request::Agents {})
        .context("listing agents")?;
    let agents = reply.data.get("agents").cloned().unwrap_or(Value::Null);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&agents)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = agents.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no agents in the policy");
        return Ok(ExitCode::SUCCESS);
    }
    let s = |a: &Value, k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
    let n = |a: &Value, k: &str| a.get(k).and_then(Value::as_u64).unwrap_or(0);
    println!(
        "{:<20} {:<8} {:>5} {:>4} {:>6} {:>8} {:>7} {:>5}  {:<20} {:<24} {:<28} CGROUP",
        "NAME",
        "MODE",
        "PROCS",
        "RUNS",
        "GRANTS",
        "ALLOWED",
        "DENIED",
        "HELD",
        "EXPIRES",
        "OWNER",
        "BUDGET"
    );
    for a in &list {
        let c = |k: &str| {
            a.get("counts")
                .and_then(|c| c.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let len = |k: &str| a.get(k).and_then(|v| v.as_array()).map_or(0, Vec::len);
        println!(
            "{:<20} {:<8} {:>5} {:>4} {:>6} {:>8} {:>7} {:>5}  {:<20} {:<24} {:<28} {}",
            s(a, "name"),
            s(a, "mode"),
            n(a, "processes"),
            len("sessions"),
            len("grants"),
            c("allowed"),
            c("denied"),
            c("held"),
            s(a, "expires"),
            s(a, "owner"),
            budget(a.get("budget")),
            s(a, "cgroup"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// "deletes 12/40 per 1min, connects 3/100 per 1h" ("-" without a budget);
/// a spent one is marked.
fn budget(b: Option<&Value>) -> String {
    let Some(b) = b.filter(|b| b.is_object()) else {
        return "-".into();
    };
    let parts: Vec<String> = ["deletes", "connects"]
        .iter()
        .filter_map(|name| {
            let u = b.get(name)?;
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            let spent = if u.get("exhausted").and_then(Value::as_bool) == Some(true) {
                " spent"
            } else {
                ""
            };
            Some(format!(
                "{name} {}/{} per {}{spent}",
                n("used"),
                n("limit"),
                u.get("window").and_then(Value::as_str).unwrap_or("?")
            ))
        })
        .collect();
    parts.join(", ")
}
