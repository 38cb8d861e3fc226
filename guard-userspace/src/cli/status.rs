//! `agent-guard status`: the daemon's health at a glance.
use std::{path::Path, process::ExitCode};

use anyhow::Result;
use serde_json::Value;

use super::args::StatusArgs;
use crate::control::{Client, Request};

pub fn run(args: StatusArgs, socket: &Path) -> Result<ExitCode> {
    let reply = Client::connect(socket)?.call(Request::Status {})?;
    let data = Value::Object(reply.data);
    if args.json {
        println!("{data}");
        return Ok(ExitCode::SUCCESS);
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let ev = &data["events"];
    println!(
        "agent-guard daemon pid {}, up {}s, policy {}",
        n(&data["pid"]),
        n(&data["uptime_secs"]),
        data["policy"].as_str().unwrap_or("?")
    );
    println!(
        "agents: {}   runs: {}   held calls: {}   budget hits: {}",
        data["agents"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        n(&data["sessions"]),
        n(&data["held"]),
        n(&data["budget_hits"])
    );
    println!(
        "events: {} emitted, {} /s",
        n(&ev["emitted"]),
        ev["per_sec"].as_f64().unwrap_or(0.0)
    );
    match data["drops"].as_object().filter(|d| !d.is_empty()) {
        None => println!("losses: none"),
        Some(d) => {
            let parts: Vec<String> = d.iter().map(|(k, v)| format!("{k} {}", n(v))).collect();
            println!("losses: {}", parts.join(", "));
        }
    }
    println!("sinks:");
    for s in data["sinks"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} {:<7} {:<4} {:<5} written {} dropped {} failed {}{}",
            s["name"].as_str().unwrap_or("?"),
            s["type"].as_str().unwrap_or("?"),
            s["format"].as_str().unwrap_or("?"),
            s["state"].as_str().unwrap_or("?"),
            n(&s["written"]),
            n(&s["dropped"]),
            n(&s["write_failed"]),
            s["last_error"]
                .as_str()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default()
        );
    }
    for s in data["unix_sinks"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} unix    {:<4} serving {}",
            s["name"].as_str().unwrap_or("?"),
            s["format"].as_str().unwrap_or("?"),
            s["path"].as_str().unwrap_or("?")
        );
    }
    println!(
        "stream readers: {}   chain: {} (last {})",
        data["readers"].as_array().map_or(0, Vec::len),
        data["chain"]["alg"].as_str().unwrap_or("?"),
        data["chain"]["last"].as_str().unwrap_or("-")
    );
    Ok(ExitCode::SUCCESS)
}
