//! The kind, `target` and call-specific members of every guarded call's
//! event, for both backends: kernel records (decode.rs) and calls the
//! seccomp supervisor judged (daemon/calls.rs). One place, so that a
//! rename looks the same whichever backend saw it.
use guard_common::{
    CALL_ABSTRACT, CALL_IO_URING, EventKind, MountOp, PATH_TRUNCATED, PATH_UNKNOWN,
    RENAME_DEST_DECIDED, RENAME_DIR, RENAME_EXCHANGES, RENAME_REPLACES, RecordPath,
};
use serde_json::{Map, Value, json};

use crate::supervise::{Object, Op, Request};

pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::NetConnect => "net.connect",
        EventKind::NetSend => "net.send",
        EventKind::NetUnixConnect => "net.unix_connect",
        EventKind::NetUnixSend => "net.unix_send",
        EventKind::FileUnlink | EventKind::FileObserved => "file.unlink",
        EventKind::FileRmdir => "file.rmdir",
        EventKind::FileRename => "file.rename",
        EventKind::FileTruncate => "file.truncate",
        EventKind::FileLink => "file.link",
        EventKind::FileMount => "file.mount",
        EventKind::FileIoUring => "file.io_uring",
        EventKind::AgentEscape => "agent.escape",
        // A refused path call's record: decode.rs names it after what it
        // reached for (guard.tamper, or agent.escape for a cgroup file).
        EventKind::GuardTamper | EventKind::GuardRefusedPath => "guard.tamper",
    }
}

pub fn mount_op_name(op: MountOp) -> &'static str {
    match op {
        MountOp::Mount => "mount",
        MountOp::MoveMount => "move_mount",
        MountOp::PivotRoot => "pivot_root",
        MountOp::Chroot => "chroot",
        MountOp::UserNamespace => "user_namespace",
        MountOp::MountNamespace => "mount_namespace",
        MountOp::OpenTree => "open_tree",
        MountOp::FsMount => "fsmount",
        MountOp::MountSetattr => "mount_setattr",
    }
}

/// What the event says when a hold could not rewind an io_uring call.
pub const IO_URING_REASON: &str = "an io_uring operation cannot be held (it completes into the ring, not a system call \
     a signal could restart); refused instead";

/// `path` of a kernel record: {path} or {path: null, path_error}, plus
/// path_truncated.
fn record_path(p: &RecordPath, key: &str, target: &mut Map<String, Value>) {
    if p.state == PATH_UNKNOWN {
        target.insert(key.into(), Value::Null);
        target.insert(
            format!("{key}_error"),
            "the kernel could not name it from the caller's root (a detached mount, \
             another namespace, or a path deeper than it walks)"
                .into(),
        );
        return;
    }
    let len = usize::from(p.len).min(p.bytes.len());
    let text = String::from_utf8_lossy(&p.bytes[..len]).into_owned();
    target.insert(key.into(), text.into());
    if p.state == PATH_TRUNCATED {
        target.insert(format!("{key}_truncated"), true.into());
    }
}

/// The target of a one-path kernel record (unlink, rmdir, truncate, unix).
pub fn file_target(kind: EventKind, p: &RecordPath) -> Value {
    let mut t = Map::new();
    if matches!(kind, EventKind::NetUnixConnect | EventKind::NetUnixSend) {
        t.insert("family".into(), "unix".into());
        if p.flags & CALL_ABSTRACT != 0 && p.state != PATH_UNKNOWN {
            // Abstract names are "@name", as unix:@name rules write them.
            let len = usize::from(p.len).min(p.bytes.len());
            let text = String::from_utf8_lossy(&p.bytes[..len]).into_owned();
            t.insert("path".into(), text.into());
            t.insert("abstract".into(), true.into());
            return t.into();
        }
    }
    record_path(p, "path", &mut t);
    t.into()
}

/// The target of a rename or link record.
pub fn rename_target(path: &RecordPath, new_path: &RecordPath, flags: u8, link: bool) -> Value {
    let mut t = Map::new();
    record_path(path, "path", &mut t);
    record_path(new_path, "new_path", &mut t);
    if !link {
        t.insert("exchange".into(), (flags & RENAME_EXCHANGES != 0).into());
        t.insert("replaces".into(), (flags & RENAME_REPLACES != 0).into());
        t.insert("directory".into(), (flags & RENAME_DIR != 0).into());
        t.insert(
            "decided_by".into(),
            if flags & RENAME_DEST_DECIDED != 0 {
                "destination"
            } else {
                "source"
            }
            .into(),
        );
    }
    t.into()
}

/// The target of a mount-family record.
pub fn mount_target(op: u8, p: &RecordPath) -> Value {
    let mut t = Map::new();
    t.insert(
        "operation".into(),
        MountOp::from_raw(op)
            .map_or("unknown", mount_op_name)
            .into(),
    );
    if p.state == PATH_UNKNOWN && p.len == 0 {
        t.insert("path".into(), Value::Null);
    } else {
        record_path(p, "path", &mut t);
    }
    t.into()
}

/// Marks a call that came through io_uring (and, if an ask became a
/// denial there, why).
pub fn io_uring(flags: u8, held_denied: bool, body: &mut Map<String, Value>) {
    if flags & CALL_IO_URING != 0 {
        body.insert("via".into(), "io_uring".into());
        if held_denied {
            body.insert("reason".into(), IO_URING_REASON.into());
        }
    }
}

/// The `rule` of a mount-family or io_uring call: the agent's switch.
pub fn switch_rule(kind: EventKind, allowed: bool) -> &'static str {
    match (kind, allowed) {
        (EventKind::FileIoUring, true) => "allow_io_uring = true",
        (EventKind::FileIoUring, false) => "allow_io_uring = false",
        (_, true) => "allow_mounts = true",
        (_, false) => "allow_mounts = false",
    }
}

/// The kind of a supervised call.
pub fn supervised_kind(op: Op) -> EventKind {
    match op {
        Op::Unlink => EventKind::FileUnlink,
        Op::Rmdir => EventKind::FileRmdir,
        Op::Rename { .. } => EventKind::FileRename,
        Op::Link => EventKind::FileLink,
        // An open is only ever reported refused, as guard.tamper (which
        // rewrites the kind).
        Op::Truncate | Op::Open => EventKind::FileTruncate,
        Op::Mount(_) => EventKind::FileMount,
        Op::IoUringSetup => EventKind::FileIoUring,
    }
}

fn object_path(o: &Object, key: &str, t: &mut Map<String, Value>) {
    if o.path.is_empty() {
        t.insert(key.into(), Value::Null);
    } else {
        t.insert(key.into(), o.path.clone().into());
    }
    t.insert(format!("raw_{key}"), o.raw_path.clone().into());
}

/// The target of a supervised call, and which side decided a rename.
pub fn supervised_target(req: &Request, dest_decided: bool) -> Value {
    let mut t = Map::new();
    match req.op {
        Op::Mount(op) => {
            t.insert("operation".into(), mount_op_name(op).into());
            object_path(&req.object, "path", &mut t);
        }
        Op::IoUringSetup => {
            t.insert("operation".into(), "io_uring_setup".into());
        }
        _ => object_path(&req.object, "path", &mut t),
    }
    if let Some(second) = &req.second {
        object_path(second, "new_path", &mut t);
    }
    if let Op::Rename { exchange } = req.op {
        let replaces = req.second.as_ref().is_some_and(|s| s.exists);
        t.insert("exchange".into(), exchange.into());
        t.insert("replaces".into(), replaces.into());
        t.insert("directory".into(), req.object.dir.into());
        t.insert(
            "decided_by".into(),
            if dest_decided {
                "destination"
            } else {
                "source"
            }
            .into(),
        );
    }
    json!(t)
}
