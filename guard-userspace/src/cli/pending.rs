//! `agent-guard pending`: calls held for a decision.
use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::Result;
use serde_json::Value;

use super::args::PendingArgs;
use crate::control::{Client, Request};

pub fn run(args: PendingArgs, socket: &Path) -> Result<ExitCode> {
    let mut client = Client::connect(socket)?;
    loop {
        let reply = client.call(Request::Pending {})?;
        let holds = reply
            .data
            .get("holds")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        if args.json {
            println!("{holds}");
        } else {
            print_table(holds.as_array().map(Vec::as_slice).unwrap_or_default());
        }
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(2));
        println!();
    }
}

fn print_table(holds: &[Value]) {
    if holds.is_empty() {
        println!("no held calls");
        return;
    }
    println!(
        "{:<20} {:<14} {:<20} {:>7} {:<24} {:<12} {:<32} {:>8} {:>8}",
        "ID", "AGENT", "OWNER", "PID", "EXE", "WHAT", "TARGET", "WAITED", "LEFT"
    );
    for h in holds {
        let s = |k: &str| h[k].as_str().unwrap_or("-").to_owned();
        let target = match &h["target"] {
            Value::Object(t) => t
                .get("path")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    Some(format!(
                        "{}:{}",
                        t.get("address").and_then(Value::as_str).unwrap_or("?"),
                        t.get("port").map(Value::to_string).unwrap_or_default()
                    ))
                })
                .unwrap_or_default(),
            _ => "-".into(),
        };
        let secs = |k: &str| format!("{}s", h[k].as_u64().unwrap_or(0) / 1000);
        println!(
            "{:<20} {:<14} {:<20} {:>7} {:<24} {:<12} {:<32} {:>8} {:>8}",
            s("id"),
            s("agent"),
            s("owner"),
            h["pid"].as_u64().unwrap_or(0),
            s("exe"),
            s("kind"),
            target,
            secs("waited_ms"),
            secs("left_ms")
        );
        if let Some(reason) = h["reason"].as_str() {
            // A spent budget holds calls no rule would: say so.
            println!("{:<20} why: {reason}", "");
        }
    }
}
