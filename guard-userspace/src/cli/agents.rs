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
        "{:<20} {:<8} {:>5} {:>4} {:>6} {:>8} {:>7} {:>5}  {:<20} {:<24} CGROUP",
        "NAME", "MODE", "PROCS", "RUNS", "GRANTS", "ALLOWED", "DENIED", "HELD", "EXPIRES", "OWNER"
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
            "{:<20} {:<8} {:>5} {:>4} {:>6} {:>8} {:>7} {:>5}  {:<20} {:<24} {}",
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
            s(a, "cgroup"),
        );
    }
    Ok(ExitCode::SUCCESS)
}
