//! The `ocsf` object every event carries: its OCSF class, activity, action
//! and disposition, and the agent as the actor, so a SIEM that speaks OCSF
//! classifies the line without a custom parser. The tables are in
//! docs/events.md; the numbers are OCSF 1.3's.
use serde_json::{Map, Value, json};

pub const OCSF_VERSION: &str = "1.3.0";

/// (class_uid, class_name, category_uid, category_name)
type Class = (u32, &'static str, u32, &'static str);

const FILE_ACTIVITY: Class = (1001, "File System Activity", 1, "System Activity");
const PROCESS_ACTIVITY: Class = (1007, "Process Activity", 1, "System Activity");
const NETWORK_ACTIVITY: Class = (4001, "Network Activity", 4, "Network Activity");
const APP_LIFECYCLE: Class = (6002, "Application Lifecycle", 6, "Application Activity");
const API_ACTIVITY: Class = (6003, "API Activity", 6, "Application Activity");
const BASE_EVENT: Class = (0, "Base Event", 0, "Uncategorized");

// action_id
const ACTION_UNKNOWN: (u32, &str) = (0, "Unknown");
const ALLOWED: (u32, &str) = (1, "Allowed");
const DENIED: (u32, &str) = (2, "Denied");
const OBSERVED: (u32, &str) = (3, "Observed");
const HELD: (u32, &str) = (99, "Held");

// disposition_id
const D_UNKNOWN: (u32, &str) = (0, "Unknown");
const D_ALLOWED: (u32, &str) = (1, "Allowed");
const D_BLOCKED: (u32, &str) = (2, "Blocked");
const D_APPROVED: (u32, &str) = (8, "Approved");
const D_DELAYED: (u32, &str) = (14, "Delayed");
const D_NO_ACTION: (u32, &str) = (16, "No Action");
const D_LOGGED: (u32, &str) = (17, "Logged");
const D_REJECTED: (u32, &str) = (25, "Rejected");

fn s<'a>(ev: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let mut v = ev.get(*path.first()?)?;
    for p in &path[1..] {
        v = v.get(p)?;
    }
    Some(v)
}

/// The class and activity of an event kind (outcome picks a connect's).
fn class_activity(kind: &str, outcome: &str) -> (Class, u32, &'static str) {
    match kind {
        "file.unlink" | "file.rmdir" => (FILE_ACTIVITY, 4, "Delete"),
        "file.rename" => (FILE_ACTIVITY, 5, "Rename"),
        "file.truncate" => (FILE_ACTIVITY, 3, "Update"),
        "file.link" => (FILE_ACTIVITY, 1, "Create"),
        "file.mount" => (FILE_ACTIVITY, 12, "Mount"),
        "file.io_uring" => (FILE_ACTIVITY, 99, "Other"),
        "net.connect" | "net.unix_connect" | "net.send" | "net.unix_send"
            if outcome == "denied" =>
        {
            (NETWORK_ACTIVITY, 5, "Refuse")
        }
        "net.connect" | "net.unix_connect" => (NETWORK_ACTIVITY, 1, "Open"),
        "net.send" | "net.unix_send" => (NETWORK_ACTIVITY, 6, "Traffic"),
        "agent.start" => (PROCESS_ACTIVITY, 1, "Launch"),
        "agent.exit" | "agent.kill" => (PROCESS_ACTIVITY, 2, "Terminate"),
        "daemon.start" => (APP_LIFECYCLE, 3, "Start"),
        "daemon.stop" => (APP_LIFECYCLE, 4, "Stop"),
        "daemon.task" => (APP_LIFECYCLE, 5, "Restart"),
        "policy.reload" | "agent.mode" => (APP_LIFECYCLE, 8, "Update"),
        // A spent budget changes what the agent may do next.
        "agent.budget" => (APP_LIFECYCLE, 8, "Update"),
        "control.refused" => (API_ACTIVITY, 99, "Other"),
        "agent.escape" | "guard.tamper" => (PROCESS_ACTIVITY, 99, "Other"),
        _ => (BASE_EVENT, 99, "Other"),
    }
}

/// (action, disposition) of a call's outcome.
fn action_disposition(ev: &Map<String, Value>) -> ((u32, &'static str), (u32, &'static str)) {
    let outcome = ev.get("outcome").and_then(Value::as_str).unwrap_or("");
    let kind = ev.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == "hold.decision" {
        return match outcome {
            "allowed" => (ALLOWED, D_APPROVED),
            _ => (DENIED, D_REJECTED),
        };
    }
    match outcome {
        // A call an earlier approval's grant let through was approved.
        "allowed" if ev.contains_key("grant") => (ALLOWED, D_APPROVED),
        "allowed" => (ALLOWED, D_ALLOWED),
        "denied" => (DENIED, D_BLOCKED),
        "held" => (HELD, D_DELAYED),
        "audited" => (ALLOWED, D_LOGGED),
        "observed" => (OBSERVED, D_NO_ACTION),
        _ => (ACTION_UNKNOWN, D_UNKNOWN),
    }
}

/// The `ocsf` object of a native event (which has kind and outcome).
pub fn object(ev: &Map<String, Value>) -> Value {
    let kind = ev.get("kind").and_then(Value::as_str).unwrap_or("");
    let outcome = ev.get("outcome").and_then(Value::as_str).unwrap_or("");
    // A decision belongs to the class of the call that was held.
    let held_kind = if kind == "hold.decision" {
        s(ev, &["hold", "call"])
            .and_then(Value::as_str)
            .unwrap_or("")
    } else {
        kind
    };
    let ((class_uid, class_name, category_uid, category_name), activity_id, activity_name) =
        class_activity(held_kind, outcome);
    let ((action_id, action), (disposition_id, disposition)) = action_disposition(ev);
    let (status_id, status) = match (outcome, action_id) {
        ("denied" | "lost", _) => (2, "Failure"),
        (_, 1 | 3) | ("success", _) => (1, "Success"),
        _ => (0, "Unknown"),
    };
    let severity_id = match (kind, outcome) {
        ("loss", _) | ("control.refused", _) | ("agent.escape", _) | ("guard.tamper", _) => 4,
        (_, "denied") => 3,
        (_, "held") => 2,
        _ => 1,
    };
    let mut o = json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": u64::from(class_uid) * 100 + u64::from(activity_id),
        "action_id": action_id,
        "action": action,
        "disposition_id": disposition_id,
        "disposition": disposition,
        "status_id": status_id,
        "status": status,
        "severity_id": severity_id,
        "metadata": { "version": OCSF_VERSION, "product": { "name": "agent-guard", "vendor_name": "agent-guard" } },
    });
    if let Some(actor) = actor(ev) {
        o["actor"] = actor;
    }
    if held_kind.starts_with("file.") {
        if let Some(path) = s(ev, &["target", "path"]) {
            let dir = held_kind == "file.rmdir"
                || s(ev, &["target", "directory"]).and_then(Value::as_bool) == Some(true);
            o["file"] = json!({ "path": path, "type_id": if dir { 2 } else { 1 } });
        }
        if let Some(new_path) = s(ev, &["target", "new_path"]) {
            o["file_result"] = json!({ "path": new_path });
        }
    }
    match held_kind {
        "net.connect" | "net.send" => {
            o["dst_endpoint"] = json!({
                "ip": s(ev, &["target", "address"]),
                "port": s(ev, &["target", "port"]),
            });
        }
        "net.unix_connect" | "net.unix_send" => {
            o["dst_endpoint"] = json!({ "path": s(ev, &["target", "path"]) });
        }
        _ => {}
    }
    if let Some(rule) = ev.get("rule") {
        o["policy"] = json!({ "name": rule.get("match"), "desc": rule.get("source") });
    }
    o
}

/// The acting agent (an OCSF agent of type "AI Agent"), its process and the
/// user it acts for. None for events no agent caused.
fn actor(ev: &Map<String, Value>) -> Option<Value> {
    let agent = ev
        .get("agent")
        .filter(|a| a.get("name").is_some_and(Value::is_string));
    let process = ev.get("process");
    if agent.is_none() && process.is_none() {
        return None;
    }
    let mut actor = Map::new();
    if let Some(a) = agent {
        actor.insert("app_name".into(), a["name"].clone());
        actor.insert(
            "agent_list".into(),
            json!([{
                "name": a["name"], "type": "AI Agent", "type_id": 99,
                "uid": a.get("cgroup_id"), "vendor_name": a.get("owner"),
                "desc": a.get("purpose"), "labels": a.get("labels"),
            }]),
        );
        if let Some(session) = a.get("session").filter(|s| s.is_string()) {
            actor.insert("session".into(), json!({ "uid": session }));
        }
        // The person or system the agent acts for, when the run names one.
        if let Some(who) = a.get("on_behalf_of").filter(|s| s.is_string()) {
            actor.insert("user".into(), json!({ "name": who, "type": "User" }));
        }
    }
    if let Some(p) = process {
        actor.insert(
            "process".into(),
            json!({
                "pid": p.get("pid"), "cmd_line": p.get("cmdline").and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")),
                "file": { "path": p.get("exe") },
                "user": { "uid": p.get("uid"), "name": p.get("user") },
            }),
        );
    }
    Some(Value::Object(actor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn outcomes_map_to_actions_and_dispositions() {
        let cases = [
            (
                json!({"kind":"file.unlink","outcome":"allowed"}),
                1001,
                4,
                1,
                1,
            ),
            (
                json!({"kind":"file.rmdir","outcome":"denied"}),
                1001,
                4,
                2,
                2,
            ),
            (
                json!({"kind":"net.connect","outcome":"denied"}),
                4001,
                5,
                2,
                2,
            ),
            (
                json!({"kind":"net.connect","outcome":"held"}),
                4001,
                1,
                99,
                14,
            ),
            (
                json!({"kind":"hold.decision","outcome":"allowed","hold":{"call":"net.connect"}}),
                4001,
                1,
                1,
                8,
            ),
            (
                json!({"kind":"hold.decision","outcome":"denied","hold":{"call":"file.unlink"}}),
                1001,
                4,
                2,
                25,
            ),
            (
                json!({"kind":"file.rename","outcome":"denied"}),
                1001,
                5,
                2,
                2,
            ),
            (
                json!({"kind":"file.truncate","outcome":"held"}),
                1001,
                3,
                99,
                14,
            ),
            (
                json!({"kind":"file.mount","outcome":"denied"}),
                1001,
                12,
                2,
                2,
            ),
            (
                json!({"kind":"net.send","outcome":"allowed"}),
                4001,
                6,
                1,
                1,
            ),
            (
                json!({"kind":"net.unix_connect","outcome":"denied"}),
                4001,
                5,
                2,
                2,
            ),
            (
                json!({"kind":"agent.start","outcome":"success"}),
                1007,
                1,
                0,
                0,
            ),
        ];
        for (e, class, activity, action, disposition) in cases {
            let o = object(&ev(e.clone()));
            assert_eq!(o["class_uid"], class, "{e}");
            assert_eq!(o["activity_id"], activity, "{e}");
            assert_eq!(o["type_uid"], class * 100 + activity, "{e}");
            assert_eq!(o["action_id"], action, "{e}");
            assert_eq!(o["disposition_id"], disposition, "{e}");
        }
    }
}
