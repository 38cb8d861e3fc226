//! `agent.escape` and `guard.tamper`: the self-defense records (guard-ebpf
//! escape.rs and tamper.rs) as events. Called from `decode`, after the
//! fields every kernel event shares.
use guard_common::{
    ACTION_KILL_PENDING, ACTION_KILLED, ACTION_REFUSED, ESCAPE_ATTACH, ESCAPE_CLONE, ESCAPE_OPEN,
    EscapeRecord, EventKind, TAMPER_BPF, TAMPER_FILE, TAMPER_PTRACE, TAMPER_SIGNAL, TamperRecord,
};
use serde_json::{Map, Value, json};

use super::decode::{DecodeError, read};
use crate::daemon::registry::Registry;

/// Fills kind, target and rule of a self-defense record's event.
pub fn decode(
    kind: EventKind,
    bytes: &[u8],
    registry: &Registry,
    body: &mut Map<String, Value>,
) -> Result<(), DecodeError> {
    // No policy rule decides these: the guard always refuses them.
    body.insert(
        "rule".into(),
        json!({"verdict": "deny", "match": "self-defense", "source": null}),
    );
    match kind {
        EventKind::AgentEscape => {
            let rec: EscapeRecord = read(bytes)?;
            body.insert("kind".into(), "agent.escape".into());
            body.insert("target".into(), escape_target(&rec));
        }
        _ => {
            let rec: TamperRecord = read(bytes)?;
            body.insert("kind".into(), "guard.tamper".into());
            body.insert("target".into(), tamper_target(&rec, registry));
        }
    }
    Ok(())
}

/// Turns a supervised delete's event (`decode::supervised_delete`) into
/// the `guard.tamper` the daemon reports when a run's delete reaches for
/// a protected file.
pub fn supervised_tamper(body: &mut Map<String, Value>, protected: &std::path::Path) {
    body.insert("kind".into(), "guard.tamper".into());
    body.remove("backend");
    body.insert(
        "rule".into(),
        json!({"verdict": "deny", "match": "self-defense", "source": null}),
    );
    body.insert(
        "target".into(),
        json!({"what": "file", "action": "refused",
               "protected": protected.display().to_string(), "write": true}),
    );
}

fn action(raw: u32) -> &'static str {
    match raw {
        ACTION_REFUSED => "refused",
        ACTION_KILLED => "killed",
        ACTION_KILL_PENDING => "kill_pending",
        _ => "unknown",
    }
}

fn escape_target(rec: &EscapeRecord) -> Value {
    let how = match rec.how {
        ESCAPE_ATTACH => "cgroup_write",
        ESCAPE_CLONE => "clone_into_cgroup",
        ESCAPE_OPEN => "cgroup_open",
        _ => "unknown",
    };
    let len = (rec.path_len as usize).min(rec.path.len());
    let path = (len > 0).then(|| String::from_utf8_lossy(&rec.path[..len]).into_owned());
    json!({
        "how": how,
        "action": action(rec.action),
        "pid": rec.moved_pid,
        "cgroup_id": rec.dst_cgroup_id,
        "cgroup": path,
    })
}

fn tamper_target(rec: &TamperRecord, registry: &Registry) -> Value {
    let action = action(rec.action);
    match rec.what {
        TAMPER_SIGNAL => json!({"what": "signal", "action": action, "pid": rec.target_pid,
                                "signal": rec.arg}),
        TAMPER_PTRACE => json!({"what": "ptrace", "action": action, "pid": rec.target_pid,
                                "mode": rec.arg}),
        TAMPER_BPF => json!({"what": "bpf", "action": action, "command": rec.arg}),
        TAMPER_FILE => {
            let path = registry
                .protected
                .iter()
                .find(|(key, _)| *key == rec.protected)
                .map(|(_, p)| p.display().to_string());
            json!({"what": "file", "action": action, "protected": path,
                   "write": rec.arg & 2 != 0})
        }
        _ => json!({"what": "unknown", "action": action}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_names_where_it_went() {
        let mut rec = EscapeRecord {
            header: Default::default(),
            moved_pid: 42,
            how: ESCAPE_ATTACH,
            action: ACTION_KILLED,
            path_len: 1,
            dst_cgroup_id: 1,
            path: [0; guard_common::ESCAPE_PATH_BYTES],
        };
        rec.path[0] = b'/';
        let t = escape_target(&rec);
        assert_eq!(t["how"], "cgroup_write");
        assert_eq!(t["action"], "killed");
        assert_eq!(t["pid"], 42);
        assert_eq!(t["cgroup"], "/");
    }
}
