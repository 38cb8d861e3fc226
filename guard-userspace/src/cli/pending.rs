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

/// Widths of the table's variable columns: longer values are cut in the
/// middle (a path keeps its start and its file name), so that no row
/// pushes the next columns out of line.
const AGENT_W: usize = 14;
const TARGET_W: usize = 40;
/// Longest detail line: they end a row, so they break no column; this
/// only keeps a whole prompt passed as an argument off the screen.
const DETAIL_W: usize = 200;

fn print_table(holds: &[Value]) {
    if holds.is_empty() {
        println!("no held calls");
        return;
    }
    println!(
        "{:<20} {:<AGENT_W$} {:>7} {:<12} {:<TARGET_W$} {:>7} {:>7}",
        "ID", "AGENT", "PID", "WHAT", "TARGET", "WAITED", "LEFT"
    );
    for h in holds {
        let s = |k: &str| h[k].as_str().unwrap_or("-").to_owned();
        let secs = |k: &str| format!("{}s", h[k].as_u64().unwrap_or(0) / 1000);
        println!(
            "{:<20} {:<AGENT_W$} {:>7} {:<12} {:<TARGET_W$} {:>7} {:>7}",
            s("id"),
            cut(&s("agent"), AGENT_W),
            h["pid"].as_u64().unwrap_or(0),
            s("kind"),
            cut(&target(&h["target"]), TARGET_W),
            secs("waited_ms"),
            secs("left_ms")
        );
        for (label, text) in details(h) {
            println!("    {label:<10} {}", cut(&text, DETAIL_W));
        }
    }
}

/// The lines under a hold: what ran, where it came from, whose it is,
/// what the agent did lately, and what a scoped approval would grant.
fn details(h: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(reason) = h["reason"].as_str() {
        // A spent budget holds calls no rule would: say so first.
        out.push(("why", reason.to_owned()));
    }
    let cmd = args(&h["cmdline"]);
    let exe = h["exe"].as_str().unwrap_or("-");
    out.push((
        "command",
        if cmd.is_empty() {
            exe.to_owned()
        } else {
            format!("{cmd}  ({exe})")
        },
    ));
    let context = &h["context"];
    if let Some(chain) = context["ancestry"].as_array().filter(|c| !c.is_empty()) {
        let mut via: Vec<String> = chain
            .iter()
            .map(|p| {
                let cmd = args(&p["cmdline"]);
                let shown = if cmd.is_empty() {
                    p["comm"].as_str().unwrap_or("?").to_owned()
                } else {
                    cmd
                };
                format!("{} {}", p["pid"], cut(&shown, 40))
            })
            .collect();
        if context["ancestry_truncated"] == true {
            via.push("...".into());
        }
        out.push(("via", via.join(" <- ")));
    }
    let mut whose = format!("owner {}", h["owner"].as_str().unwrap_or("-"));
    if let Some(p) = h["purpose"].as_str() {
        whose.push_str(&format!(", purpose \"{p}\""));
    }
    if let Some(b) = h["on_behalf_of"].as_str() {
        whose.push_str(&format!(", on behalf of {b}"));
    }
    out.push(("agent", whose));
    if let Some(calls) = context["recent"]["calls"].as_object() {
        let mins = context["recent"]["window_secs"].as_u64().unwrap_or(300) / 60;
        let counts: Vec<String> = calls
            .iter()
            .map(|(kind, outcomes)| {
                let o: Vec<String> = outcomes
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(outcome, n)| format!("{outcome} {n}"))
                    .collect();
                format!("{kind} {}", o.join(", "))
            })
            .collect();
        let label = if mins == 5 { "last 5m" } else { "recently" };
        out.push((
            label,
            if counts.is_empty() {
                "no other calls".into()
            } else {
                counts.join("; ")
            },
        ));
        let last: Vec<String> = context["recent"]["last"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} {}",
                    c["outcome"].as_str().unwrap_or("?"),
                    cut(c["target"].as_str().unwrap_or("?"), 40)
                )
            })
            .collect();
        if !last.is_empty() {
            out.push(("latest", last.join(", ")));
        }
    }
    for scope in context["scopes"].as_array().into_iter().flatten() {
        if let Some(name @ ("subtree" | "destination" | "agent")) = scope["scope"].as_str() {
            let grants = scope["grants"].as_str().unwrap_or("?");
            out.push((
                match name {
                    "subtree" => "subtree",
                    "destination" => "dest",
                    _ => "agent-wide",
                },
                format!("--scope {name} would grant {grants}"),
            ));
        }
    }
    out
}

fn target(t: &Value) -> String {
    match t {
        Value::Object(t) => t
            .get("path")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                format!(
                    "{}:{}",
                    t.get("address").and_then(Value::as_str).unwrap_or("?"),
                    t.get("port").map(Value::to_string).unwrap_or_default()
                )
            }),
        _ => "-".into(),
    }
}

/// A command line as a shell would show it, arguments with spaces quoted.
fn args(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` in at most `width` characters, cut in the middle with "...",
/// control characters shown as '?' (a name or path is the agent's to
/// choose, and must not move the cursor of the terminal reading it).
fn cut(text: &str, width: usize) -> String {
    let clean: Vec<char> = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.len() <= width {
        return clean.into_iter().collect();
    }
    let keep = width.saturating_sub(3);
    let head = keep / 2;
    let tail = keep - head;
    let mut out: String = clean[..head].iter().collect();
    out.push_str("...");
    out.extend(&clean[clean.len() - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn long_fields_are_cut_in_the_middle_and_keep_the_columns() {
        let long = format!("/srv/{}/file.db", "deep/".repeat(40));
        let shown = cut(&long, TARGET_W);
        assert_eq!(shown.chars().count(), TARGET_W);
        assert!(
            shown.starts_with("/srv/deep/") && shown.ends_with("/file.db"),
            "{shown}"
        );
        assert_eq!(cut("/srv/x", TARGET_W), "/srv/x");
        assert_eq!(cut("a\x1b[2Jb", 10), "a?[2Jb");
    }

    #[test]
    fn details_show_the_context() {
        let h = json!({
            "exe": "/usr/bin/rm", "cmdline": ["rm", "-rf", "/srv/data/my dir"],
            "owner": "alice@example.com", "purpose": "tidy", "on_behalf_of": "bob",
            "context": {
                "ancestry": [{"pid": 8, "comm": "sh", "cmdline": ["sh", "-c", "rm -rf x"]},
                             {"pid": 5, "comm": "python3", "cmdline": []}],
                "recent": {"window_secs": 300,
                           "calls": {"file.unlink": {"allowed": 3, "denied": 1}},
                           "last": [{"time": "t", "kind": "file.unlink", "outcome": "denied",
                                     "target": "/etc/passwd"}]},
                "scopes": [{"scope": "once", "grants": "this call only"},
                           {"scope": "subtree", "path": "/srv/data",
                            "grants": "deletes under /srv/data (narrow it with --path)"}],
            },
        });
        let d: Vec<String> = details(&h)
            .into_iter()
            .map(|(l, t)| format!("{l}: {t}"))
            .collect();
        assert_eq!(
            d,
            [
                "command: rm -rf '/srv/data/my dir'  (/usr/bin/rm)",
                "via: 8 sh -c 'rm -rf x' <- 5 python3",
                "agent: owner alice@example.com, purpose \"tidy\", on behalf of bob",
                "last 5m: file.unlink allowed 3, denied 1",
                "latest: denied /etc/passwd",
                "subtree: --scope subtree would grant deletes under /srv/data (narrow it with --path)",
            ]
        );
    }
}
