//! docs/events.schema.json against events built the way the emitter builds
//! them, including kinds other parts of the daemon emit (policy.reload,
//! agent.mode). The privileged suite validates every event of real runs.
#![expect(
    clippy::unwrap_used,
    reason = "a test should fail loudly on a broken fixture"
)]

use serde_json::{Map, Value, json};

use super::{assemble, chain::Alg, chain::Chain};

const SCHEMA: &str = include_str!("../../../docs/events.schema.json");

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    jsonschema::draft202012::new(&schema).unwrap()
}

fn event(chain: &mut Chain, seq: u64, body: Value) -> Value {
    let Value::Object(body) = body else {
        unreachable!("bodies are objects")
    };
    let mut ev: Map<String, Value> = assemble(seq, "2026-11-24T07:00:00.123456789Z", "h", body);
    chain.link(&mut ev);
    Value::Object(ev)
}

fn agent() -> Value {
    json!({"name": "bot", "owner": "o", "purpose": "p", "labels": {"env": "prod"},
           "cgroup": "g/bot", "cgroup_id": 7, "session": "ab", "on_behalf_of": "alice"})
}

#[test]
fn every_kind_validates() {
    let v = validator();
    let mut chain = Chain::new(Alg::Sha256, None);
    let process = json!({"pid": 1, "tid": 1, "ppid": 0, "uid": 0, "gid": 0, "user": "root",
                         "group": "root", "comm": "rm", "exe": "/usr/bin/rm", "cmdline": ["rm", "x"]});
    let rule = json!({"verdict": "ask", "match": "/srv", "source": "p.toml:9"});
    let bodies = [
        json!({"kind": "net.connect", "outcome": "denied", "agent": agent(), "process": process,
               "rule": rule, "target": {"family": "ipv4", "address": "10.0.0.1", "port": 443}}),
        json!({"kind": "file.unlink", "outcome": "held", "agent": agent(), "process": process,
               "rule": rule, "target": {"path": "/srv/x", "raw_path": "x"}, "backend": "seccomp",
               "hold": {"id": "12", "timeout_secs": 300, "context": {
                   "ancestry": [{"pid": 7, "comm": "sh", "cmdline": ["sh", "-c", "rm x"]},
                                {"pid": 5, "comm": "python3", "cmdline": ["python3"],
                                 "cmdline_truncated": true}],
                   "ancestry_truncated": true,
                   "recent": {"window_secs": 300, "calls": {"file.unlink": {"allowed": 2}},
                              "last": [{"time": "2026-01-01T00:00:00Z", "kind": "file.unlink",
                                        "outcome": "allowed", "target": "/srv/y"}]},
                   "scopes": [{"scope": "once", "grants": "this call only"},
                              {"scope": "subtree", "path": "/srv", "grants": "deletes under /srv"},
                              {"scope": "agent", "agent": "bot", "grants": "every call"}]}}}),
        json!({"kind": "hold.decision", "outcome": "allowed", "agent": agent(), "process": process,
               "rule": rule, "target": {"path": "/srv/x"},
               "hold": {"id": "12", "call": "file.unlink", "decision": "approved",
                        "by": {"uid": 0, "user": "root"}, "reason": null, "waited_ms": 5,
                        "scope": {"id": 1, "kind": "subtree"}}}),
        json!({"kind": "policy.reload", "outcome": "success",
               "policy": {"path": "/etc/p.toml", "digest": format!("sha256:{}", "a".repeat(64)),
                          "error": null, "diff": {"added": ["x"], "removed": [], "changed": ["bot"]}},
               "by": {"uid": 0, "user": "root"}}),
        json!({"kind": "policy.reload", "outcome": "failure",
               "policy": {"path": "/etc/p.toml", "digest": null, "error": "p.toml:3:1: bad", "diff": null},
               "by": null}),
        json!({"kind": "agent.mode", "outcome": "success", "agent": agent(),
               "mode": {"from": "enforce", "to": "freeze"}, "by": {"uid": 0, "user": null}}),
        json!({"kind": "agent.budget", "outcome": "held", "agent": agent(), "process": process,
               "budget": {"name": "deletes", "count": 40, "limit": 40, "window": "1min",
                          "rate": "40/min", "action": "ask"},
               "target": {"path": "/srv/x"}, "call": "file.unlink"}),
        json!({"kind": "file.unlink", "outcome": "held", "agent": agent(), "process": process,
               "rule": rule, "target": {"path": "/srv/x", "raw_path": "x"},
               "hold": {"id": "13", "timeout_secs": 300},
               "reason": "budget: the agent's deletes budget (40/min) is spent",
               "budget": {"name": "deletes", "limit": 40, "window": "1min", "rate": "40/min",
                          "action": "ask", "exhausted": true}}),
        json!({"kind": "loss", "outcome": "lost", "loss": {"reason": "sink_slow", "count": 3, "sink": "siem", "total": 3}}),
        json!({"kind": "daemon.task", "outcome": "failure",
               "task": {"name": "control socket", "error": "boom", "failures": 1, "restart_in_ms": 100}}),
        json!({"kind": "control.refused", "outcome": "denied",
               "control": {"op": "approve", "hold": "12", "reason": "inside agent bot",
                           "by": {"uid": 0, "pid": 9, "user": "root", "agent": "bot"}}}),
        json!({"kind": "control.refused", "outcome": "denied",
               "control": {"op": "suppressed", "count": 4990, "reason": "rate limit",
                           "by": {"uid": 65534, "pid": 9, "user": "nobody"}}}),
    ];
    let bodies = bodies.into_iter().chain(side_door_bodies(&process, &rule));
    for (i, body) in bodies.into_iter().enumerate() {
        let ev = event(&mut chain, i as u64 + 1, body);
        let errors: Vec<String> = v
            .iter_errors(&ev)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{ev}\n{errors:#?}");
    }
}

/// The side-door kinds, with targets built by the one builder both
/// backends use (events/calls.rs).
fn side_door_bodies(process: &Value, rule: &Value) -> Vec<Value> {
    use guard_common::{
        CALL_ABSTRACT, EventKind, MountOp, PATH_COMPLETE, PATH_UNKNOWN, RENAME_DIR,
        RENAME_REPLACES, RecordPath,
    };

    use super::calls;
    let path = |text: &str, state, flags| {
        let mut p = RecordPath {
            bytes: [0; guard_common::PATH_KEY_BYTES],
            len: text.len() as u16,
            state,
            flags,
        };
        p.bytes[..text.len()].copy_from_slice(text.as_bytes());
        p
    };
    let call = |kind: &str, outcome: &str, target: Value| {
        json!({"kind": kind, "outcome": outcome, "agent": agent(), "process": process,
               "rule": rule, "target": target})
    };
    let src = path("/srv/vault", PATH_COMPLETE, 0);
    let dst = path("/tmp/elsewhere", PATH_COMPLETE, 0);
    let mut io_uring = call(
        "file.unlink",
        "denied",
        calls::file_target(EventKind::FileUnlink, &src),
    );
    io_uring["via"] = "io_uring".into();
    io_uring["reason"] = calls::IO_URING_REASON.into();
    vec![
        call(
            "file.rename",
            "denied",
            calls::rename_target(&src, &dst, RENAME_DIR | RENAME_REPLACES, false),
        ),
        call(
            "file.link",
            "held",
            calls::rename_target(&src, &dst, 0, true),
        ),
        call(
            "file.truncate",
            "allowed",
            calls::file_target(EventKind::FileTruncate, &src),
        ),
        call(
            "file.mount",
            "denied",
            calls::mount_target(MountOp::Mount.raw(), &dst),
        ),
        call(
            "file.mount",
            "denied",
            calls::mount_target(MountOp::UserNamespace.raw(), &path("", PATH_UNKNOWN, 0)),
        ),
        call(
            "net.unix_connect",
            "denied",
            calls::file_target(
                EventKind::NetUnixConnect,
                &path("@dbus", PATH_COMPLETE, CALL_ABSTRACT),
            ),
        ),
        call(
            "net.unix_send",
            "allowed",
            calls::file_target(EventKind::NetUnixSend, &path("/dev/log", PATH_COMPLETE, 0)),
        ),
        call(
            "net.send",
            "held",
            json!({"family": "ipv6", "address": "::1", "port": 53}),
        ),
        call(
            "file.io_uring",
            "denied",
            json!({"operation": "io_uring_setup"}),
        ),
        io_uring,
    ]
}

#[test]
fn unknown_kinds_and_members_fail() {
    let v = validator();
    let mut chain = Chain::new(Alg::Sha256, None);
    let unknown = event(
        &mut chain,
        1,
        json!({"kind": "file.chmod", "outcome": "allowed"}),
    );
    assert!(!v.is_valid(&unknown), "an unknown kind must not validate");
    let stray = event(
        &mut chain,
        2,
        json!({"kind": "loss", "outcome": "lost", "loss": {"reason": "sink_slow", "count": 1}, "colour": 1}),
    );
    assert!(
        !v.is_valid(&stray),
        "an undocumented member must not validate"
    );
    let wrong = event(
        &mut chain,
        3,
        json!({"kind": "daemon.stop", "outcome": "success", "daemon": {"pid": 1}}),
    );
    assert!(!v.is_valid(&wrong), "a missing member must not validate");
}
