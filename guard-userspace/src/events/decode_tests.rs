//! Decoding kernel records: side doors, short records, unknown values.
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
    let t = connect_target(&rec).expect("v4");
    assert_eq!(
        serde_json::to_value(&t).expect("json"),
        serde_json::json!({"family":"ipv4","address":"127.0.0.1","port":8080})
    );
    rec.family = AF_INET6;
    rec.addr = Ipv6Addr::LOCALHOST.octets();
    assert_eq!(connect_target(&rec).expect("v6").address.to_string(), "::1");
    rec.family = 1;
    assert!(connect_target(&rec).is_err());
}

fn record_path(text: &str, state: u8, flags: u8) -> RecordPath {
    let mut p = RecordPath {
        bytes: [0; guard_common::PATH_KEY_BYTES],
        len: text.len() as u16,
        state,
        flags,
    };
    p.bytes[..text.len()].copy_from_slice(text.as_bytes());
    p
}

fn bytes<T: Copy>(rec: &T) -> Vec<u8> {
    // SAFETY: T is a plain repr(C) record; its bytes are read as is.
    unsafe { std::slice::from_raw_parts((rec as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn header(kind: EventKind) -> EventHeader {
    EventHeader {
        kind: kind.raw(),
        outcome: guard_common::Outcome::Denied.raw(),
        verdict: Verdict::Ask.raw(),
        ..Default::default()
    }
}

#[test]
fn side_door_records() {
    let clock = BootClock::new();
    let rec = RenameRecord {
        header: header(EventKind::FileRename),
        path: record_path("/srv/vault", guard_common::PATH_COMPLETE, CALL_IO_URING),
        new_path: record_path("", PATH_UNKNOWN, 0),
        rename_flags: RENAME_DIR | RENAME_DEST_DECIDED,
        _pad: [0; 7],
    };
    let r = decode(&bytes(&rec), &clock).expect("a rename");
    assert!(r.io_uring);
    let RecordCall::Rename(t) = r.call else {
        panic!("not a rename: {:?}", r.call);
    };
    assert_eq!(t.paths.path.as_deref(), Some("/srv/vault"));
    assert_eq!(t.paths.new_path, None);
    assert_eq!(t.paths.new_path_error.as_deref(), Some(PATH_UNNAMED));
    assert!(t.directory && !t.exchange && !t.replaces);
    assert_eq!(t.decided_by, Side::Destination);

    let mut rec = MountRecord {
        header: header(EventKind::FileMount),
        path: record_path("", PATH_UNKNOWN, 0),
        op: MountOp::UserNamespace.raw(),
        _pad: [0; 7],
    };
    let r = decode(&bytes(&rec), &clock).expect("a mount");
    let RecordCall::Mount(t) = r.call else {
        panic!("not a mount: {:?}", r.call);
    };
    assert_eq!(t.operation, MountOperation::UserNamespace);
    assert_eq!((t.path, t.path_error), (None, None));
    rec.op = 200;
    assert!(
        decode(&bytes(&rec), &clock).is_err(),
        "an unknown mount operation is an error"
    );

    let rec = FileRecord {
        header: header(EventKind::NetUnixConnect),
        path: record_path("@dbus", guard_common::PATH_COMPLETE, CALL_ABSTRACT),
    };
    let r = decode(&bytes(&rec), &clock).expect("a unix connect");
    let RecordCall::Unix { send, target } = r.call else {
        panic!("not a unix connect: {:?}", r.call);
    };
    assert!(!send && target.is_abstract);
    assert_eq!(target.path.as_deref(), Some("@dbus"));

    let mut rec = ConnectRecord {
        header: header(EventKind::FileIoUring),
        ..Default::default()
    };
    assert!(
        decode(&bytes(&rec), &clock).is_err(),
        "the kernel never reports file.io_uring"
    );
    rec.header.kind = EventKind::NetSend.raw();
    rec.family = AF_INET;
    rec.flags = u32::from(CALL_IO_URING);
    let r = decode(&bytes(&rec), &clock).expect("a datagram");
    assert!(r.io_uring && matches!(r.call, RecordCall::Send(_)));
}

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
    let t = serde_json::to_value(escape_target(&rec).expect("an escape")).expect("json");
    assert_eq!(t["how"], "cgroup_write");
    assert_eq!(t["action"], "killed");
    assert_eq!(t["pid"], 42);
    assert_eq!(t["cgroup"], "/");
    rec.action = 9;
    assert!(
        escape_target(&rec).is_err(),
        "an unknown action is an error"
    );
}
