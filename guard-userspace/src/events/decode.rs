//! The one place where kernel records become JSON. serde never touches the
//! repr(C) types: records are copied out of the ring buffer and mapped field
//! by field here.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use guard_common::{
    AF_INET, AF_INET6, AT_REMOVEDIR, ConnectRecord, EventHeader, EventKind, FileRecord,
    MountRecord, NR_RMDIR, ObservedDeleteRecord, Outcome, RULE_DEFAULT, RenameRecord, Verdict,
};
use serde_json::{Map, Value, json};
use thiserror::Error;

use super::{calls, enrich::Enricher};
use crate::{
    daemon::registry::{AgentState, Registry},
    supervise::Request,
};

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {need}-byte layout")]
    Short { len: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
}

/// Converts CLOCK_BOOTTIME (what the kernel stamps) to wall-clock time.
pub struct BootClock {
    /// realtime - boottime, in ns, sampled at start.
    offset_ns: i128,
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

impl BootClock {
    pub fn new() -> Self {
        use nix::time::{ClockId, clock_gettime};
        let ns = |id| {
            clock_gettime(id)
                .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
                .unwrap_or(0)
        };
        let boot = ns(ClockId::CLOCK_BOOTTIME);
        let real = ns(ClockId::CLOCK_REALTIME);
        Self {
            offset_ns: real - boot,
        }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let ns = self.offset_ns + ktime_ns as i128;
        if ns <= 0 {
            return SystemTime::UNIX_EPOCH;
        }
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

/// Copies a `T` out of a record slice (the ring buffer gives no alignment
/// guarantee beyond 8 bytes and may hand us a shorter record).
pub(super) fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked; T is a plain repr(C) record (all bit patterns
    // valid), read unaligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn verdict_name(raw: u8) -> &'static str {
    match Verdict::from_raw(raw) {
        Some(Verdict::Allow) => "allow",
        Some(Verdict::Ask) => "ask",
        Some(Verdict::Deny) => "deny",
        None => "unknown",
    }
}

pub fn outcome_name(raw: u8) -> &'static str {
    match Outcome::from_raw(raw) {
        Some(Outcome::Allowed) => "allowed",
        Some(Outcome::Denied) => "denied",
        Some(Outcome::Held) => "held",
        Some(Outcome::Audited) => "audited",
        Some(Outcome::Observed) => "observed",
        None => "unknown",
    }
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// An event ready for the emitter: when it happened, and its body.
pub type Event = (SystemTime, Map<String, Value>);

/// Decodes one ring-buffer record into (event time, event body), or None
/// for a record that another path already reports.
pub fn decode(
    bytes: &[u8],
    registry: &Registry,
    clock: &BootClock,
    enricher: &mut Enricher,
) -> Result<Option<Event>, DecodeError> {
    let header: EventHeader = read(bytes)?;
    let kind = EventKind::from_raw(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    if kind == EventKind::FileObserved
        && registry
            .sessions
            .get(&header.cgroup_id)
            .is_some_and(|s| s.supervised)
    {
        // Seccomp supervision of this run judges and reports the call.
        return Ok(None);
    }
    // A refused path call becomes an event only if it reached for the
    // guard: found out before anything else is looked up.
    let refused = match kind {
        EventKind::GuardRefusedPath => match super::refused::classify(bytes, registry)? {
            Some(found) => Some(found),
            None => return Ok(None),
        },
        _ => None,
    };
    let mut body = common(&header, registry, enricher);
    body.insert("kind".into(), calls::kind_name(kind).into());
    let held_denied =
        header.outcome == Outcome::Denied.raw() && header.verdict == Verdict::Ask.raw();
    let def = registry.agent(header.agent_id).map(|a| &a.def);
    match kind {
        EventKind::GuardRefusedPath => {
            if let Some((kind, target)) = refused {
                body.insert("kind".into(), kind.into());
                body.insert("target".into(), target);
                body.insert("rule".into(), super::selfdefense::rule());
            }
        }
        EventKind::NetConnect | EventKind::NetSend => {
            let rec: ConnectRecord = read(bytes)?;
            body.insert("target".into(), connect_target(&rec));
            calls::io_uring(rec.flags as u8, held_denied, &mut body);
            super::budget::mark(rec.flags as u8, kind, def, &mut body);
        }
        EventKind::FileUnlink
        | EventKind::FileRmdir
        | EventKind::FileTruncate
        | EventKind::NetUnixConnect
        | EventKind::NetUnixSend => {
            let rec: FileRecord = read(bytes)?;
            body.insert("target".into(), calls::file_target(kind, &rec.path));
            calls::io_uring(rec.path.flags, held_denied, &mut body);
            super::budget::mark(rec.path.flags, kind, def, &mut body);
        }
        EventKind::FileRename | EventKind::FileLink => {
            let rec: RenameRecord = read(bytes)?;
            let link = kind == EventKind::FileLink;
            body.insert(
                "target".into(),
                calls::rename_target(&rec.path, &rec.new_path, rec.rename_flags, link),
            );
            calls::io_uring(rec.path.flags, held_denied, &mut body);
            super::budget::mark(rec.path.flags, kind, def, &mut body);
        }
        EventKind::FileMount => {
            let rec: MountRecord = read(bytes)?;
            body.insert("target".into(), calls::mount_target(rec.op, &rec.path));
            // The agent's switch decided, not a rule.
            let allowed = header.verdict == Verdict::Allow.raw();
            if let Some(rule) = body.get_mut("rule").and_then(Value::as_object_mut) {
                rule.insert("match".into(), calls::switch_rule(kind, allowed).into());
            }
        }
        EventKind::FileObserved => {
            let rec: ObservedDeleteRecord = read(bytes)?;
            observed(&rec, registry, &mut body);
        }
        // Only the supervisor reports these.
        EventKind::FileIoUring => return Err(DecodeError::UnknownKind(header.kind)),
        EventKind::AgentEscape | EventKind::GuardTamper => {
            super::selfdefense::decode(kind, bytes, registry, &mut body)?;
        }
    }
    Ok(Some((clock.wall(header.ktime_ns), body)))
}

/// A delete seen at syscall entry and not blocked: resolve the path as the
/// process sees it and say what the policy would have done.
fn observed(rec: &ObservedDeleteRecord, registry: &Registry, body: &mut Map<String, Value>) {
    let rmdir = rec.nr == NR_RMDIR as u32 || rec.flags & AT_REMOVEDIR != 0;
    body.insert(
        "kind".into(),
        calls::kind_name(if rmdir {
            EventKind::FileRmdir
        } else {
            EventKind::FileUnlink
        })
        .into(),
    );
    let len = (rec.path_len as usize).min(rec.path.len());
    let raw = String::from_utf8_lossy(&rec.path[..len]).into_owned();
    let path = resolve(rec.header.pid, rec.dirfd, &raw);
    let agent = registry.agent(rec.header.agent_id);
    let (verdict, rule) = match (agent, &path) {
        (Some(a), Some(p)) => {
            let (v, r) = a.def.delete.evaluate(p);
            (Some(v), r)
        }
        _ => (None, None),
    };
    body.insert(
        "rule".into(),
        json!({
            "verdict": verdict.map(|v| verdict_name(v.raw())),
            "match": rule.map(|r| r.text.clone()).or_else(|| verdict.map(|_| "default".into())),
            "source": rule.map(|r| format!("{}:{}", registry.policy.file, r.line)),
        }),
    );
    body.insert(
        "target".into(),
        json!({ "path": path, "raw_path": raw, "enforcement": "none: this kernel has no BPF LSM and the process was not started by `agent-guard run`" }),
    );
}

/// The absolute path `raw` names for `pid`, resolved against its cwd or the
/// directory fd, lexically normalized; None when /proc no longer has them.
fn resolve(pid: u32, dirfd: i32, raw: &str) -> Option<String> {
    let joined = if raw.starts_with('/') {
        raw.to_owned()
    } else {
        format!("{}/{raw}", proc_base(pid, dirfd)?)
    };
    Some(normalize(&joined))
}

/// The directory a relative path of `pid` starts from, read from /proc
/// while the process is alive: its cwd, or directory descriptor `dirfd`.
pub(super) fn proc_base(pid: u32, dirfd: i32) -> Option<String> {
    let link = if dirfd == -100 {
        format!("/proc/{pid}/cwd")
    } else {
        format!("/proc/{pid}/fd/{dirfd}")
    };
    let base = std::fs::read_link(link).ok()?;
    Some(base.display().to_string())
}

/// `path` made absolute and lexically normalized ("." and ".." folded,
/// repeated slashes collapsed).
pub(super) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// What a supervised call's event says about the rule that decided it.
pub enum RuleOf<'a> {
    /// A delete rule of the policy (None: the agent's default).
    Path(Option<&'a crate::policy::PathRule>),
    /// The agent's `allow_mounts` / `allow_io_uring` switch.
    Switch,
}

/// A call judged in userspace under seccomp supervision. Not a kernel
/// record, but the same event shape as the LSM backend's (the target comes
/// from events/calls.rs), built here so the shape has one home.
/// `session_cgroup` is the run whose supervisor handled the call: the
/// filter belongs to that run, so that is whose call it is.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per outcome; a struct would only rename them"
)]
pub fn supervised_call(
    registry: &Registry,
    agent: &AgentState,
    session_cgroup: u64,
    req: &Request,
    (outcome, verdict, rule): (Outcome, Verdict, RuleOf<'_>),
    dest_decided: bool,
    reason: Option<&str>,
    enricher: &mut Enricher,
) -> Map<String, Value> {
    let kind = calls::supervised_kind(req.op);
    let details = enricher.details(req.pid);
    let agent_ref = registry.agent_ref(agent.agent_id, session_cgroup);
    let mut body = Map::new();
    body.insert("kind".into(), calls::kind_name(kind).into());
    body.insert("outcome".into(), outcome_name(outcome.raw()).into());
    body.insert(
        "agent".into(),
        serde_json::to_value(agent_ref).unwrap_or(Value::Null),
    );
    body.insert(
        "process".into(),
        json!({
            "pid": req.pid, "tid": req.tid, "ppid": details.ppid, "uid": req.uid, "gid": req.gid,
            "user": enricher.user(req.uid), "group": enricher.group(req.gid),
            "exe": details.exe, "cmdline": details.cmdline,
        }),
    );
    body.insert("target".into(), calls::supervised_target(req, dest_decided));
    let (matched, line) = match rule {
        RuleOf::Path(Some(r)) => (r.text.clone(), r.line),
        RuleOf::Path(None) => ("default".to_owned(), agent.def.line),
        RuleOf::Switch => (
            calls::switch_rule(kind, verdict == Verdict::Allow).to_owned(),
            agent.def.line,
        ),
    };
    body.insert(
        "rule".into(),
        json!({
            "verdict": verdict_name(verdict.raw()),
            "match": matched,
            "source": Some(format!("{}:{line}", registry.policy.file)),
        }),
    );
    if let Some(reason) = reason {
        body.insert("reason".into(), reason.into());
    }
    body.insert("backend".into(), "seccomp".into());
    body
}

fn connect_target(rec: &ConnectRecord) -> Value {
    match rec.family {
        AF_INET => {
            let a = Ipv4Addr::new(rec.addr[0], rec.addr[1], rec.addr[2], rec.addr[3]);
            json!({ "family": "ipv4", "address": a.to_string(), "port": rec.port })
        }
        AF_INET6 => {
            let a = Ipv6Addr::from(rec.addr);
            json!({ "family": "ipv6", "address": a.to_string(), "port": rec.port })
        }
        other => json!({ "family": other, "port": rec.port }),
    }
}

/// Fields every kernel-originated event has: outcome, agent, process, rule.
fn common(
    header: &EventHeader,
    registry: &Registry,
    enricher: &mut Enricher,
) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("outcome".into(), outcome_name(header.outcome).into());
    let agent = registry
        .agent_ref(header.agent_id, header.cgroup_id)
        .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
        .unwrap_or_else(|| json!({ "name": null, "cgroup_id": header.agent_cgroup_id }));
    body.insert("agent".into(), agent);
    let details = enricher.details(header.pid);
    body.insert(
        "process".into(),
        json!({
            "pid": header.pid,
            "tid": header.tid,
            "ppid": details.ppid,
            "uid": header.uid,
            "gid": header.gid,
            "user": enricher.user(header.uid),
            "group": enricher.group(header.gid),
            "comm": comm(&header.comm),
            "exe": details.exe,
            "cmdline": details.cmdline,
        }),
    );
    let rule = if header.rule_id == RULE_DEFAULT {
        let source = registry
            .agent(header.agent_id)
            .map(|a| format!("{}:{}", registry.policy.file, a.def.line));
        json!({ "verdict": verdict_name(header.verdict), "match": "default", "source": source })
    } else {
        let info = registry.policy.rule_source(header.rule_id);
        json!({
            "verdict": verdict_name(header.verdict),
            "match": info.as_ref().map(|r| r.text.clone()),
            "source": info.map(|r| r.source),
        })
    };
    body.insert("rule".into(), rule);
    if header.hold_id != 0 {
        // A hold starting (outcome held), or the held call itself running
        // on its decision (allowed or denied): the same id either way.
        body.insert("hold".into(), json!({ "id": header.hold_id.to_string() }));
    }
    if header.grant_id != 0 {
        body.insert("grant".into(), json!({ "id": header.grant_id }));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_records_are_errors_not_panics() {
        assert!(matches!(
            read::<EventHeader>(&[0u8; 10]),
            Err(DecodeError::Short { len: 10, .. })
        ));
    }

    #[test]
    fn v4_and_v6_targets() {
        let mut rec = ConnectRecord {
            family: AF_INET,
            port: 8080,
            ..Default::default()
        };
        rec.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            connect_target(&rec),
            json!({"family":"ipv4","address":"127.0.0.1","port":8080})
        );
        rec.family = AF_INET6;
        rec.addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(connect_target(&rec)["address"], "::1");
    }
}
