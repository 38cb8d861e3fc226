//! The examples of the side doors beside unlink and connect, and the
//! context of a held call (kept apart: they are most of the examples).
use std::{collections::BTreeMap, net::IpAddr};

use super::{HOLD, agent, process, rule};
use crate::events::model::*;

/// The side doors beside unlink and connect: one event of each kind.
pub(super) fn side_doors() -> Vec<Event> {
    let file_call = |op: Op, outcome, r: Rule| Call {
        op,
        outcome,
        agent: Agent::Known(agent()),
        process: process("python3", "/usr/bin/python3.11", &["python3", "bot.py"]),
        rule: r,
        hold: None,
        grant: None,
        backend: None,
        via: None,
        reason: None,
        budget: None,
    };
    let rename = file_call(
        Op::Rename(Box::new(RenameTarget {
            paths: PathPair {
                path: Some("/srv/claims/2024".into()),
                new_path: Some("/tmp/old-claims".into()),
                ..PathPair::default()
            },
            exchange: false,
            replaces: false,
            directory: true,
            decided_by: Side::Source,
        })),
        CallOutcome::Denied,
        rule(Verdict::Deny, "/srv", 12),
    );
    let mut link = file_call(
        Op::Link(Box::new(PathPair {
            path: Some("/srv/claims/2024/claim-17.pdf".into()),
            raw_path: Some("claim-17.pdf".into()),
            new_path: Some("/tmp/keep.pdf".into()),
            raw_new_path: Some("/tmp/keep.pdf".into()),
            ..PathPair::default()
        })),
        CallOutcome::Held,
        rule(Verdict::Ask, "/srv/claims", 14),
    );
    link.hold = Some(HoldRef {
        id: HoldId(HOLD + 1),
        timeout_secs: Some(300),
        context: Some(Box::new(hold_context())),
    });
    link.backend = Some(Backend::Seccomp);
    link.process.comm = None;
    let truncate = file_call(
        Op::Truncate(FileTarget::path("/srv/claims/tmp/upload.part".into())),
        CallOutcome::Allowed,
        rule(Verdict::Allow, "/srv/claims/tmp", 13),
    );
    let mount = file_call(
        Op::Mount(MountTarget {
            operation: MountOperation::Mount,
            path: Some("/srv/claims".into()),
            raw_path: None,
            path_error: None,
            path_truncated: false,
        }),
        CallOutcome::Denied,
        rule(Verdict::Deny, "allow_mounts = false", 5),
    );
    let mut io_uring = file_call(
        Op::IoUring(IoUringTarget {
            operation: IoUringOperation::IoUringSetup,
        }),
        CallOutcome::Denied,
        rule(Verdict::Deny, "allow_io_uring = false", 5),
    );
    io_uring.backend = Some(Backend::Seccomp);
    io_uring.process.comm = None;
    let mut via_ring = file_call(
        Op::Unlink(FileTarget::path("/srv/claims/2024/claim-19.pdf".into())),
        CallOutcome::Denied,
        rule(Verdict::Ask, "/srv/claims", 14),
    );
    via_ring.via = Some(CallVia::IoUring);
    via_ring.reason = Some(IO_URING_REASON.into());
    // A datagram the policy allows makes no event.
    let send = file_call(
        Op::Send(ConnectTarget {
            family: Family::Ipv4,
            address: IpAddr::from([203, 0, 113, 9]),
            port: 53,
        }),
        CallOutcome::Denied,
        rule(Verdict::Deny, "default", 7),
    );
    vec![
        rename.into(),
        link.into(),
        truncate.into(),
        mount.into(),
        io_uring.into(),
        via_ring.into(),
        send.into(),
        file_call(
            Op::UnixConnect(UnixTarget {
                family: UnixFamily::Unix,
                path: Some("/run/docker.sock".into()),
                path_error: None,
                path_truncated: false,
                is_abstract: false,
            }),
            CallOutcome::Denied,
            rule(Verdict::Deny, "unix:/run/docker.sock", 11),
        )
        .into(),
        file_call(
            Op::UnixSend(UnixTarget {
                family: UnixFamily::Unix,
                path: Some("@syslog".into()),
                path_error: None,
                path_truncated: false,
                is_abstract: true,
            }),
            CallOutcome::Audited,
            rule(Verdict::Deny, "default", 7),
        )
        .into(),
    ]
}

/// What on-call sees beside the held delete: the agent's shell under its
/// first process, its last minutes, and the scopes on offer.
pub(super) fn hold_context() -> HoldContext {
    HoldContext {
        ancestry: vec![
            Ancestor {
                pid: 31300,
                comm: "sh".into(),
                cmdline: vec!["sh".into(), "-c".into(), "rm claim-17.pdf".into()],
                cmdline_truncated: false,
            },
            Ancestor {
                pid: 31200,
                comm: "python3".into(),
                cmdline: vec!["python3".into(), "bot.py".into()],
                cmdline_truncated: false,
            },
        ],
        ancestry_truncated: false,
        recent: RecentCalls {
            window_secs: 300,
            calls: BTreeMap::from([
                (
                    "file.unlink".into(),
                    BTreeMap::from([("allowed".into(), 12), ("denied".into(), 1)]),
                ),
                (
                    "net.connect".into(),
                    BTreeMap::from([("allowed".into(), 3)]),
                ),
            ]),
            last: vec![RecentCall {
                time: "2026-11-24T07:00:41Z".into(),
                kind: "file.unlink".into(),
                outcome: "allowed".into(),
                target: "/srv/claims/tmp/upload.part".into(),
            }],
        },
        scopes: vec![
            ScopeOffer::Once {
                grants: "this call only".into(),
            },
            ScopeOffer::Subtree {
                path: "/srv/claims".into(),
                grants: "deletes under /srv/claims (narrow it with --path)".into(),
            },
            ScopeOffer::Agent {
                agent: Some("claims-bot".into()),
                grants: "every call of agent claims-bot that would be held".into(),
            },
        ],
    }
}
