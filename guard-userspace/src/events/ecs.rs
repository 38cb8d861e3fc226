//! The ECS rendering of a native event (`format = "ecs"`): Elastic Common
//! Schema fields for what ECS has words for, agent identity under
//! `gen_ai.agent` and `labels`, and the rest under `agent_guard`. The
//! mapping table is in docs/events.md.
use serde_json::{Map, Value, json};

pub const ECS_VERSION: &str = "8.11.0";

fn categories(kind: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        "file.unlink" | "file.rmdir" => (&["file"], &["deletion"]),
        "file.rename" | "file.truncate" => (&["file"], &["change"]),
        "file.link" => (&["file"], &["creation"]),
        "file.mount" | "file.io_uring" => (&["file", "configuration"], &["change"]),
        "net.connect" | "net.unix_connect" => (&["network"], &["connection", "start"]),
        "net.send" | "net.unix_send" => (&["network"], &["protocol"]),
        "agent.start" => (&["process"], &["start"]),
        "agent.exit" | "agent.kill" => (&["process"], &["end"]),
        "daemon.start" => (&["process", "configuration"], &["start"]),
        "daemon.stop" => (&["process", "configuration"], &["end"]),
        "daemon.task" => (&["process"], &["change"]),
        "policy.reload" | "agent.mode" => (&["configuration"], &["change"]),
        "agent.budget" => (&["process", "intrusion_detection"], &["change"]),
        "control.refused" => (&["iam"], &["denied"]),
        "agent.escape" | "guard.tamper" => (&["process", "intrusion_detection"], &["denied"]),
        _ => (&["host"], &["info"]),
    }
}

/// ECS event.outcome: success, failure or unknown.
fn outcome(outcome: &str) -> &'static str {
    match outcome {
        "allowed" | "audited" | "observed" | "success" => "success",
        "denied" | "failure" | "lost" => "failure",
        _ => "unknown",
    }
}

/// Renders `ev` (native, with `ocsf`, without `chain`) as an ECS document.
pub fn render(ev: &Map<String, Value>) -> Map<String, Value> {
    let get = |k: &str| ev.get(k).cloned().unwrap_or(Value::Null);
    let kind = ev.get("kind").and_then(Value::as_str).unwrap_or("");
    let native_outcome = ev.get("outcome").and_then(Value::as_str).unwrap_or("");
    let call = if kind == "hold.decision" {
        ev.get("hold")
            .and_then(|h| h.get("call"))
            .and_then(Value::as_str)
            .unwrap_or("")
    } else {
        kind
    };
    let (category, ty) = categories(call);
    let mut out = Map::new();
    out.insert("@timestamp".into(), get("time"));
    out.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    let mut event = json!({
        "kind": if kind == "loss" { "metric" } else { "event" },
        "category": category,
        "type": ty,
        "action": kind,
        "outcome": outcome(native_outcome),
        "sequence": get("seq"),
        "module": "agent_guard",
        "dataset": "agent_guard.events",
        "provider": "agent-guard",
    });
    if native_outcome == "denied" {
        event["type"] = json!([ty, &["denied"]].concat());
    } else if native_outcome == "allowed" && call != kind {
        event["type"] = json!([ty, &["allowed"]].concat());
    }
    out.insert("event".into(), event);
    out.insert("host".into(), json!({ "name": get("host") }));
    if let Some(p) = ev.get("process") {
        let cmdline = p.get("cmdline").and_then(Value::as_array);
        out.insert(
            "process".into(),
            json!({
                "pid": p.get("pid"),
                "thread": { "id": p.get("tid") },
                "parent": { "pid": p.get("ppid") },
                "name": p.get("comm"),
                "executable": p.get("exe"),
                "args": cmdline,
                "command_line": cmdline.map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")),
            }),
        );
        out.insert(
            "user".into(),
            json!({
                "id": p.get("uid").map(|u| u.to_string()),
                "name": p.get("user"),
                "group": { "id": p.get("gid").map(|g| g.to_string()), "name": p.get("group") },
            }),
        );
    }
    let target = ev.get("target");
    if call.starts_with("file.") {
        out.insert(
            "file".into(),
            json!({ "path": target.and_then(|t| t.get("path")) }),
        );
    }
    if matches!(call, "net.unix_connect" | "net.unix_send") {
        out.insert(
            "destination".into(),
            json!({ "address": target.and_then(|t| t.get("path")) }),
        );
    }
    if matches!(call, "net.connect" | "net.send") {
        out.insert(
            "destination".into(),
            json!({ "ip": target.and_then(|t| t.get("address")), "port": target.and_then(|t| t.get("port")) }),
        );
        out.insert(
            "network".into(),
            json!({ "type": target.and_then(|t| t.get("family")) }),
        );
    }
    if let Some(r) = ev.get("rule") {
        out.insert(
            "rule".into(),
            json!({ "name": r.get("match"), "reference": r.get("source"), "action": r.get("verdict") }),
        );
    }
    if let Some(a) = ev
        .get("agent")
        .filter(|a| a.get("name").is_some_and(Value::is_string))
    {
        out.insert(
            "gen_ai".into(),
            json!({ "agent": {
                "name": a.get("name"), "owner": a.get("owner"), "description": a.get("purpose"),
                "id": a.get("cgroup_id").map(|i| i.to_string()), "cgroup": a.get("cgroup"),
                "session": a.get("session"), "on_behalf_of": a.get("on_behalf_of"),
            }}),
        );
        let mut labels = Map::new();
        labels.insert("agent_name".into(), a["name"].clone());
        if let Some(Value::Object(l)) = a.get("labels") {
            for (k, v) in l {
                labels.insert(format!("agent_{k}"), v.clone());
            }
        }
        out.insert("labels".into(), Value::Object(labels));
    }
    // Everything else, unchanged, so nothing native is lost.
    let mut rest = Map::new();
    for (k, v) in ev {
        if !matches!(
            k.as_str(),
            "time" | "host" | "process" | "rule" | "agent" | "ocsf"
        ) {
            rest.insert(k.clone(), v.clone());
        }
    }
    if let Some(id) = ev.get("agent").and_then(|a| a.get("cgroup_id")) {
        rest.insert("agent_cgroup_id".into(), id.clone());
    }
    out.insert("agent_guard".into(), Value::Object(rest));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_delete_in_ecs() {
        let Value::Object(ev) = json!({
            "schema": "agent-guard/v1", "seq": 7, "time": "2026-11-24T07:00:00Z", "host": "h",
            "kind": "file.unlink", "outcome": "denied",
            "agent": {"name": "bot", "owner": "o", "purpose": "p", "labels": {"env": "prod"}, "cgroup_id": 5},
            "process": {"pid": 10, "uid": 0, "gid": 0, "user": "root", "cmdline": ["rm", "x"]},
            "target": {"path": "/srv/x"},
        }) else {
            unreachable!()
        };
        let e = render(&ev);
        assert_eq!(e["event"]["category"], json!(["file"]));
        assert_eq!(e["event"]["type"], json!(["deletion", "denied"]));
        assert_eq!(e["event"]["outcome"], "failure");
        assert_eq!(e["file"]["path"], "/srv/x");
        assert_eq!(e["user"]["name"], "root");
        assert_eq!(e["gen_ai"]["agent"]["name"], "bot");
        assert_eq!(e["labels"]["agent_env"], "prod");
        assert_eq!(e["agent_guard"]["seq"], 7);
        assert_eq!(e["process"]["command_line"], "rm x");
    }
}
