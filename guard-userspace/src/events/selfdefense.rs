//! `agent.escape` and `guard.tamper`: the self-defense records (guard-ebpf
//! escape.rs and tamper.rs) as events. Called from `decode`, after the
//! fields every kernel event shares.
use guard_common::{
    ACTION_KILL_PENDING, ACTION_KILLED, ACTION_REFUSED, Call, ESCAPE_ATTACH, ESCAPE_CLONE,
    ESCAPE_OPEN, EscapeRecord, EventKind, TAMPER_BPF, TAMPER_FILE, TAMPER_PTRACE, TAMPER_SIGNAL,
    TamperRecord,
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
    body.insert("rule".into(), rule());
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

/// The `rule` of every self-defense event: no policy rule decides these,
/// the guard always refuses them.
pub fn rule() -> Value {
    json!({"verdict": "deny", "match": "self-defense", "source": null})
}

/// Turns a supervised delete's event (`decode::supervised_delete`) into
/// the `guard.tamper` the daemon reports when a run's delete reaches for
/// a protected file.
pub fn supervised_tamper(body: &mut Map<String, Value>, protected: &std::path::Path) {
    body.insert("kind".into(), "guard.tamper".into());
    body.remove("backend");
    body.insert("rule".into(), rule());
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
    let mut target = json!({
        "how": how,
        "action": action(rec.action),
        "pid": rec.moved_pid,
        "cgroup_id": rec.dst_cgroup_id,
        "cgroup": path,
    });
    if rec.how == ESCAPE_CLONE && rec.action == ACTION_REFUSED {
        // Only the seccomp filter refuses clone3 (seen at system call exit);
        // the fork hook lets it happen and kills.
        target["call"] = "clone3".into();
    }
    target
}

fn tamper_target(rec: &TamperRecord, registry: &Registry) -> Value {
    let action = action(rec.action);
    // Known where the refusal was seen at system call exit; the BPF LSM
    // hooks see the operation, not the call.
    let call = u16::try_from(rec.call).ok().and_then(Call::from_raw);
    let mut target = match rec.what {
        TAMPER_SIGNAL => json!({"what": "signal", "action": action, "pid": rec.target_pid,
                                "signal": rec.arg}),
        TAMPER_PTRACE => {
            let mut t = json!({"what": "ptrace", "action": action, "pid": rec.target_pid});
            match call {
                None => t["mode"] = rec.arg.into(),
                Some(Call::Ptrace) => t["request"] = rec.arg.into(),
                Some(Call::PidfdGetfd) => t["fd"] = rec.arg.into(),
                Some(_) => {}
            }
            t
        }
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
    };
    if let Some(call) = call {
        target["call"] = call.name().into();
    }
    target
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
