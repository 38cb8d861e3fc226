//! `events --follow --pretty`: one readable line per event for a person
//! watching a terminal. It reads the JSON lines the daemon streams, as any
//! client would (docs/events.md is the contract), so it never depends on
//! how the daemon builds events. A field it does not know is left out,
//! never an error: the JSON stream stays the record.
use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde_json::Value;

/// Fixed widths, so columns line up for the usual names; longer values
/// push the line on rather than being cut.
const AGENT_WIDTH: usize = 12;
const OUTCOME_WIDTH: usize = 8;
const KIND_WIDTH: usize = 14;

/// `line` as one readable line: time, agent, outcome, kind, target, rule,
/// then what a person needs next (a hold's id and the command to decide it,
/// a decision's maker). None when `line` is not a native event (v2, or a
/// v1 line of an earlier version: the members read here are the same).
pub fn render(line: &str, colour: bool) -> Option<String> {
    let event: Value = serde_json::from_str(line).ok()?;
    if !matches!(
        event["schema"].as_str(),
        Some(crate::events::SCHEMA | crate::events::SCHEMA_V1)
    ) {
        return None;
    }
    let paint = |style: Style, text: &str| {
        if colour && !text.is_empty() {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    };
    let kind = str_of(&event["kind"]).unwrap_or("?");
    let outcome = str_of(&event["outcome"]).unwrap_or("?");
    let agent = str_of(&event["agent"]["name"]).unwrap_or("-");

    let mut out = String::new();
    out.push_str(&paint(Style::new().dimmed(), &short_time(&event["time"])));
    out.push(' ');
    out.push_str(&paint(Style::new().bold(), &pad(agent, AGENT_WIDTH)));
    out.push(' ');
    out.push_str(&paint(
        outcome_style(kind, &event),
        &pad(outcome, OUTCOME_WIDTH),
    ));
    out.push(' ');
    out.push_str(&pad(kind, KIND_WIDTH));
    let target = target(kind, &event);
    if !target.is_empty() {
        out.push(' ');
        out.push_str(&target);
    }
    if let Some(rule) = rule(&event["rule"]) {
        out.push_str("  ");
        out.push_str(&paint(Style::new().dimmed(), &rule));
    }
    let next = next_step(kind, outcome, &event);
    if !next.is_empty() {
        out.push_str("  ");
        out.push_str(&paint(outcome_style(kind, &event).bold(), &next));
    }
    out.truncate(out.trim_end().len());
    Some(out)
}

fn str_of(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

fn pad(text: &str, width: usize) -> String {
    format!("{text:<width$}")
}

/// `HH:MM:SS.mmmZ` of an RFC 3339 UTC time: an operator watching live
/// knows the day; the zone stays visible.
fn short_time(time: &Value) -> String {
    let Some(t) = time.as_str() else {
        return "--:--:--.---Z".into();
    };
    let clock = t.split_once('T').map_or(t, |(_, c)| c);
    let clock = clock.trim_end_matches('Z');
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let ms: String = frac.chars().chain("000".chars()).take(3).collect();
    format!("{hms}.{ms}Z")
}

fn outcome_style(kind: &str, event: &Value) -> Style {
    let colour = match str_of(&event["outcome"]).unwrap_or("") {
        "allowed" | "success" => AnsiColor::Green,
        "held" => AnsiColor::Yellow,
        "audited" | "observed" => AnsiColor::Cyan,
        "denied" | "failure" | "failed" | "lost" => AnsiColor::Red,
        _ => AnsiColor::White,
    };
    let style = Style::new().fg_color(Some(colour.into()));
    // What on-call must look at stands out.
    if matches!(kind, "loss" | "control.refused") || event["outcome"] == "held" {
        style.bold()
    } else {
        style
    }
}

/// What the event is about, per kind.
fn target(kind: &str, e: &Value) -> String {
    let t = &e["target"];
    match kind {
        "net.connect" | "file.unlink" | "file.rmdir" | "hold.decision" => call_target(t),
        "agent.start" => format!(
            "run {} pid {}: {}",
            str_of(&e["session"]["id"]).unwrap_or("?"),
            e["process"]["pid"],
            cmdline(&e["process"]["cmdline"])
        ),
        "agent.exit" => {
            let s = &e["session"];
            let how = match (s["exit_code"].as_i64(), s["signal"].as_i64()) {
                (Some(code), _) => format!("exit {code}"),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => "ended".into(),
            };
            format!(
                "run {} {how} ({})",
                str_of(&s["id"]).unwrap_or("?"),
                str_of(&s["reason"]).unwrap_or("?")
            )
        }
        "agent.kill" => format!(
            "{} by {}",
            str_of(&e["control"]["target"]).unwrap_or("?"),
            who(&e["control"]["by"])
        ),
        "agent.budget" => format!(
            "{} budget {} spent; then {}",
            str_of(&e["budget"]["name"]).unwrap_or("?"),
            str_of(&e["budget"]["rate"]).unwrap_or("?"),
            str_of(&e["budget"]["action"]).unwrap_or("?"),
        ),
        "agent.mode" => format!(
            "{} -> {} by {}{}",
            str_of(&e["mode"]["from"]).unwrap_or("?"),
            str_of(&e["mode"]["to"]).unwrap_or("?"),
            who(&e["by"]),
            reason(&e["reason"])
        ),
        "agent.expired" => format!(
            "expired at {}: {} -> {}, {} process(es) held",
            str_of(&e["expiry"]["expires"]).unwrap_or("?"),
            str_of(&e["expiry"]["mode"]["from"]).unwrap_or("?"),
            str_of(&e["expiry"]["mode"]["to"]).unwrap_or("?"),
            e["expiry"]["processes"]
        ),
        "policy.reload" => {
            let p = &e["policy"];
            let path = str_of(&p["path"]).unwrap_or("<embedded policy>");
            match str_of(&p["error"]) {
                Some(err) => format!("{path}: {err}"),
                None => format!(
                    "{path} by {}{}",
                    who(&e["by"]),
                    diff(&p["diff"])
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
            }
        }
        "control.refused" => {
            let c = &e["control"];
            format!(
                "{} by {}: {}",
                str_of(&c["op"]).unwrap_or("?"),
                who(&c["by"]),
                str_of(&c["reason"]).unwrap_or("?")
            )
        }
        "loss" => {
            let l = &e["loss"];
            let mut s = format!(
                "{} event(s) lost: {}",
                l["count"],
                str_of(&l["reason"]).unwrap_or("?")
            );
            if let Some(sink) = str_of(&l["sink"]) {
                let _ = write!(s, " (sink {sink})");
            }
            s
        }
        "notify.failed" => {
            let n = &e["notify"];
            format!(
                "webhook {}: {}{}",
                str_of(&n["url"]).unwrap_or("?"),
                str_of(&n["error"])
                    .or_else(|| str_of(&n["reason"]))
                    .unwrap_or("?"),
                if n["will_retry"] == true {
                    " (will retry)"
                } else {
                    ""
                }
            )
        }
        "daemon.start" => {
            let d = &e["daemon"];
            let agents: Vec<&str> = d["agents"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!(
                "agent-guard {} pid {}, agents: {}, deletes by {}",
                str_of(&d["version"]).unwrap_or("?"),
                d["pid"],
                if agents.is_empty() {
                    "none".into()
                } else {
                    agents.join(", ")
                },
                str_of(&d["backends"]["delete"]).unwrap_or("?")
            )
        }
        "agent.escape" => format!(
            "pid {} by {}, to {}: {}",
            t["pid"],
            str_of(&t["how"]).unwrap_or("?"),
            str_of(&t["cgroup"])
                .map(str::to_owned)
                .unwrap_or_else(|| format!("cgroup id {}", t["cgroup_id"])),
            str_of(&t["action"]).unwrap_or("?")
        ),
        "guard.tamper" => {
            let what = str_of(&t["what"]).unwrap_or("?");
            let at = match what {
                "file" => format!(
                    "{}{}",
                    str_of(&t["protected"]).unwrap_or("?"),
                    if t["write"] == true { " (write)" } else { "" }
                ),
                "signal" => format!("{} to pid {}", t["signal"], t["pid"]),
                "ptrace" => format!("pid {}", t["pid"]),
                "bpf" => format!("command {}", t["command"]),
                _ => str_of(&t["protected"]).unwrap_or("?").to_owned(),
            };
            format!("{what} {at}: {}", str_of(&t["action"]).unwrap_or("?"))
        }
        "daemon.task" => {
            let task = &e["task"];
            format!(
                "{} failed ({} so far): {}; restarting in {} ms",
                str_of(&task["name"]).unwrap_or("?"),
                task["failures"],
                str_of(&task["error"]).unwrap_or("?"),
                task["restart_in_ms"]
            )
        }
        "daemon.stop" => format!(
            "pid {}, enforcement {}",
            e["daemon"]["pid"],
            str_of(&e["daemon"]["enforcement"]).unwrap_or("?")
        ),
        _ => String::new(),
    }
}

/// A connect's address and port, or a delete's path.
fn call_target(t: &Value) -> String {
    if let Some(port) = t["port"].as_u64() {
        let addr = str_of(&t["address"]).unwrap_or("?");
        return if t["family"] == "ipv6" {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        };
    }
    match (str_of(&t["path"]), str_of(&t["raw_path"])) {
        (Some(path), _) => path.to_owned(),
        (None, Some(raw)) => format!("{raw} (unresolved)"),
        _ => "?".into(),
    }
}

fn cmdline(v: &Value) -> String {
    match v {
        Value::Array(args) => args
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        Value::String(s) => s.clone(),
        _ => "?".into(),
    }
}

fn who(by: &Value) -> String {
    str_of(&by["user"])
        .map(str::to_owned)
        .or_else(|| by["uid"].as_u64().map(|u| format!("uid {u}")))
        .unwrap_or_else(|| "?".into())
}

fn reason(r: &Value) -> String {
    str_of(r).map(|r| format!(": {r}")).unwrap_or_default()
}

fn diff(d: &Value) -> Option<String> {
    let parts: Vec<String> = ["added", "removed", "changed"]
        .iter()
        .filter_map(|k| {
            let names: Vec<&str> = d[k].as_array()?.iter().filter_map(Value::as_str).collect();
            (!names.is_empty()).then(|| format!("{k} {}", names.join(",")))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `rule VERDICT MATCH (FILE:LINE)`, for events that carry a rule.
fn rule(r: &Value) -> Option<String> {
    let verdict = str_of(&r["verdict"])?;
    let mut s = format!("rule {verdict} {}", str_of(&r["match"]).unwrap_or("?"));
    if let Some(source) = str_of(&r["source"]) {
        let _ = write!(s, " ({source})");
    }
    Some(s)
}

/// What the watcher can do or needs to know next.
fn next_step(kind: &str, outcome: &str, e: &Value) -> String {
    let hold = &e["hold"];
    let id = str_of(&hold["id"]).unwrap_or("?");
    match (kind, outcome) {
        (_, "held") => format!(
            "hold {id}: agent-guard approve {id} | deny {id} (denied in {} s)",
            hold["timeout_secs"]
        ),
        ("hold.decision", _) => {
            let mut s = format!(
                "hold {id} {} by {}{}",
                str_of(&hold["decision"]).unwrap_or("?"),
                who(&hold["by"]),
                reason(&hold["reason"])
            );
            if let Some(scope) = hold["scope"].as_object() {
                let _ = write!(s, " [grant {}]", Value::Object(scope.clone()));
            }
            s
        }
        _ => match e["grant"]["id"].as_u64() {
            Some(grant) => format!("(grant {grant})"),
            None => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELD: &str = r#"{"schema":"agent-guard/v1","seq":7,"time":"2026-11-24T07:21:50.987041123Z","host":"h","kind":"file.unlink","outcome":"held","agent":{"name":"demo","owner":"o","purpose":"p","labels":{},"cgroup":"agent-guard/demo","cgroup_id":5,"session":"s1","on_behalf_of":"demo-user"},"process":{"pid":42,"tid":42,"comm":"rm"},"target":{"path":"/tmp/agent-guard-demo/held/report.txt"},"rule":{"verdict":"ask","match":"/tmp/agent-guard-demo/held","source":"<embedded default policy>:57"},"hold":{"id":"1234","timeout_secs":60}}"#;

    #[test]
    fn a_held_delete_reads_as_one_line_with_the_command_to_decide_it() {
        let line = render(HELD, false).expect("a v1 event");
        assert_eq!(
            line,
            "07:21:50.987Z demo         held     file.unlink    /tmp/agent-guard-demo/held/report.txt  \
             rule ask /tmp/agent-guard-demo/held (<embedded default policy>:57)  \
             hold 1234: agent-guard approve 1234 | deny 1234 (denied in 60 s)"
        );
        assert!(!line.contains('\u{1b}'), "no colour unless asked");
    }

    #[test]
    fn colour_marks_the_outcome_and_adds_nothing_else() {
        let plain = render(HELD, false).expect("v1");
        let coloured = render(HELD, true).expect("v1");
        assert!(coloured.contains("\u{1b}["), "{coloured:?}");
        // Yellow (33) for held.
        assert!(coloured.contains("33m"), "{coloured:?}");
        let stripped: String = anstream::adapter::strip_str(&coloured).to_string();
        assert_eq!(stripped, plain);
    }

    #[test]
    fn connects_decisions_and_lifecycle_events() {
        let connect = r#"{"schema":"agent-guard/v1","time":"2026-11-24T07:21:51Z","kind":"net.connect","outcome":"denied","agent":{"name":"claims-bot"},"target":{"family":"ipv6","address":"::1","port":9},"rule":{"verdict":"deny","match":"[::1]:9","source":"p.toml:12"}}"#;
        assert_eq!(
            render(connect, false).expect("v1"),
            "07:21:51.000Z claims-bot   denied   net.connect    [::1]:9  rule deny [::1]:9 (p.toml:12)"
        );
        let decision = r#"{"schema":"agent-guard/v1","time":"2026-11-24T07:22:50.1Z","kind":"hold.decision","outcome":"denied","agent":{"name":"demo"},"target":{"path":"/srv/x"},"rule":{"verdict":"ask","match":"/srv","source":"p:3"},"hold":{"id":"9","call":"file.unlink","decision":"expired","by":{"uid":null,"user":"agent-guard (approval timeout)"},"reason":"no decision before approval_timeout_secs","waited_ms":60000,"scope":"once"}}"#;
        assert_eq!(
            render(decision, false).expect("v1"),
            "07:22:50.100Z demo         denied   hold.decision  /srv/x  rule ask /srv (p:3)  \
             hold 9 expired by agent-guard (approval timeout): no decision before approval_timeout_secs"
        );
        let loss = r#"{"schema":"agent-guard/v1","time":"2026-11-24T07:22:50Z","kind":"loss","outcome":"lost","loss":{"reason":"subscriber_slow","count":3,"sink":"control"}}"#;
        assert_eq!(
            render(loss, false).expect("v1"),
            "07:22:50.000Z -            lost     loss           3 event(s) lost: subscriber_slow (sink control)"
        );
        let start = r#"{"schema":"agent-guard/v1","time":"2026-11-24T07:22:50Z","kind":"daemon.start","outcome":"success","daemon":{"pid":7,"version":"0.1.0","agents":["demo"],"backends":{"delete":"seccomp"}}}"#;
        assert_eq!(
            render(start, false).expect("v1"),
            "07:22:50.000Z -            success  daemon.start   agent-guard 0.1.0 pid 7, agents: demo, deletes by seccomp"
        );
    }

    #[test]
    fn escapes_and_tampering_name_what_was_refused() {
        let escape = r#"{"schema":"agent-guard/v1","time":"2026-11-24T07:22:50Z","kind":"agent.escape","outcome":"denied","agent":{"name":"bot"},"target":{"how":"cgroup_write","action":"refused","pid":77,"cgroup_id":1,"cgroup":"/"},"rule":{"verdict":"deny","match":"self-defense","source":null}}"#;
        assert_eq!(
            render(escape, false).expect("v1"),
            "07:22:50.000Z bot          denied   agent.escape   pid 77 by cgroup_write, to /: refused  \
             rule deny self-defense"
        );
        let tamper = r#"{"schema":"agent-guard/v1","time":"2026-11-24T07:22:50Z","kind":"guard.tamper","outcome":"denied","agent":{"name":"bot"},"target":{"what":"file","action":"refused","protected":"/var/lib/agent-guard/holds.json","write":true}}"#;
        assert_eq!(
            render(tamper, false).expect("v1"),
            "07:22:50.000Z bot          denied   guard.tamper   file /var/lib/agent-guard/holds.json (write): refused"
        );
        let signal = r#"{"schema":"agent-guard/v1","time":"2026-11-24T07:22:50Z","kind":"guard.tamper","outcome":"denied","agent":{"name":"bot"},"target":{"what":"signal","action":"refused","pid":12,"signal":9}}"#;
        assert!(
            render(signal, false)
                .expect("v1")
                .ends_with("guard.tamper   signal 9 to pid 12: refused")
        );
    }

    #[test]
    fn a_failed_daemon_task_says_which_and_when_it_restarts() {
        let task = r#"{"schema":"agent-guard/v1","time":"2026-11-24T07:22:50Z","kind":"daemon.task","outcome":"failure","task":{"name":"web page","error":"bind: address in use","failures":2,"restart_in_ms":400}}"#;
        assert_eq!(
            render(task, false).expect("v1"),
            "07:22:50.000Z -            failure  daemon.task    web page failed (2 so far): bind: address in use; restarting in 400 ms"
        );
    }

    #[test]
    fn lines_that_are_not_v1_events_are_left_to_the_caller() {
        assert_eq!(render("not json", false), None);
        assert_eq!(render(r#"{"@timestamp":"x","event":{}}"#, false), None);
        // An unknown kind still gets its common columns.
        let odd = r#"{"schema":"agent-guard/v1","time":"t","kind":"new.kind","outcome":"success"}"#;
        assert_eq!(
            render(odd, false).expect("v1"),
            "t.000Z -            success  new.kind"
        );
    }

    #[test]
    fn every_documented_event_renders() {
        for line in crate::events::examples::lines(false) {
            let shown = render(&line, false).unwrap_or_else(|| panic!("not rendered: {line}"));
            let event: Value = serde_json::from_str(&line).expect("json");
            let kind = event["kind"].as_str().expect("kind");
            assert!(shown.contains(kind), "{shown}");
            assert!(!shown.starts_with('{'), "a line, not JSON: {shown}");
        }
    }
}
