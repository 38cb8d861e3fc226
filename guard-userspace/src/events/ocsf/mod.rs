//! The `ocsf` member of every line: the event as a complete OCSF event of
//! the version it declares ([`VERSION`], profiles [`PROFILES`]), so a
//! consumer that speaks OCSF can take that member alone. A mapping of the
//! typed [`Event`]: one match, no strings compared. The tables are in
//! docs/events.md; the privileged suite checks every event against the
//! published OCSF schema.
mod object;

pub use object::*;

use super::model::{
    Agent, AgentRef, Call, CallKind, CallOutcome, ConnectTarget, DaemonEvent, Decision, Event,
    Family, HoldDecision, Peer, Process, Rule, Via,
};

pub const VERSION: &str = "1.8.0";
/// `security_control` brings action and disposition, `host` the actor and
/// device on every class.
pub const PROFILES: [&str; 2] = ["host", "security_control"];
const PRODUCT: &str = "agent-guard";

/// An OCSF class with its category.
#[derive(Clone, Copy)]
struct Class {
    uid: u32,
    name: &'static str,
    category_uid: u32,
    category_name: &'static str,
}

const FILE_SYSTEM: Class = Class {
    uid: 1001,
    name: "File System Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const PROCESS: Class = Class {
    uid: 1007,
    name: "Process Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const NETWORK: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const APP_LIFECYCLE: Class = Class {
    uid: 6002,
    name: "Application Lifecycle",
    category_uid: 6,
    category_name: "Application Activity",
};
const API: Class = Class {
    uid: 6003,
    name: "API Activity",
    category_uid: 6,
    category_name: "Application Activity",
};
const BASE: Class = Class {
    uid: 0,
    name: "Base Event",
    category_uid: 0,
    category_name: "Uncategorized",
};

/// An activity of a class: its id, its caption, and the type's caption
/// ("<class>: <activity>").
#[derive(Clone, Copy)]
struct Activity {
    class: Class,
    id: u32,
    name: &'static str,
    type_name: &'static str,
}

macro_rules! activity {
    ($class:ident, $id:expr, $name:literal, $class_name:literal) => {
        Activity {
            class: $class,
            id: $id,
            name: $name,
            type_name: concat!($class_name, ": ", $name),
        }
    };
}

const FILE_CREATE: Activity = activity!(FILE_SYSTEM, 1, "Create", "File System Activity");
const FILE_UPDATE: Activity = activity!(FILE_SYSTEM, 3, "Update", "File System Activity");
const FILE_DELETE: Activity = activity!(FILE_SYSTEM, 4, "Delete", "File System Activity");
const FILE_RENAME: Activity = activity!(FILE_SYSTEM, 5, "Rename", "File System Activity");
const FILE_MOUNT: Activity = activity!(FILE_SYSTEM, 12, "Mount", "File System Activity");
const NET_OPEN: Activity = activity!(NETWORK, 1, "Open", "Network Activity");
const NET_REFUSE: Activity = activity!(NETWORK, 5, "Refuse", "Network Activity");
const NET_TRAFFIC: Activity = activity!(NETWORK, 6, "Traffic", "Network Activity");
const PROCESS_LAUNCH: Activity = activity!(PROCESS, 1, "Launch", "Process Activity");
const PROCESS_TERMINATE: Activity = activity!(PROCESS, 2, "Terminate", "Process Activity");
/// 99 Other: `activity_name` is the event's kind (agent.escape, guard.tamper).
const PROCESS_OTHER: Activity = activity!(PROCESS, 99, "Other", "Process Activity");
const APP_START: Activity = activity!(APP_LIFECYCLE, 3, "Start", "Application Lifecycle");
const APP_STOP: Activity = activity!(APP_LIFECYCLE, 4, "Stop", "Application Lifecycle");
const APP_UPDATE: Activity = activity!(APP_LIFECYCLE, 8, "Update", "Application Lifecycle");
/// An expired agent: held, not stopped, so disabled.
const APP_DISABLE: Activity = activity!(APP_LIFECYCLE, 7, "Disable", "Application Lifecycle");
/// 99 Other: what was asked is `api.operation`.
const API_OTHER: Activity = activity!(API, 99, "Other", "API Activity");
const APP_RESTART: Activity = activity!(APP_LIFECYCLE, 5, "Restart", "Application Lifecycle");
/// Activity 99 (Other): `activity_name` carries the event's own kind.
const BASE_OTHER: Activity = activity!(BASE, 99, "Other", "Base Event");

/// (id, caption) pairs of OCSF enums.
type Enum = (u32, &'static str);

const ACTION_ALLOWED: Enum = (1, "Allowed");
const ACTION_DENIED: Enum = (2, "Denied");
const ACTION_OBSERVED: Enum = (3, "Observed");
/// 99 Other: the caption is ours.
const ACTION_HELD: Enum = (99, "Held");

const DISPOSITION_ALLOWED: Enum = (1, "Allowed");
const DISPOSITION_BLOCKED: Enum = (2, "Blocked");
const DISPOSITION_APPROVED: Enum = (8, "Approved");
const DISPOSITION_DELAYED: Enum = (14, "Delayed");
const DISPOSITION_NO_ACTION: Enum = (16, "No Action");
const DISPOSITION_LOGGED: Enum = (17, "Logged");
const DISPOSITION_REJECTED: Enum = (25, "Rejected");
const DISPOSITION_UNAUTHORIZED: Enum = (26, "Unauthorized");

const SEVERITY_INFO: Enum = (1, "Informational");
const SEVERITY_LOW: Enum = (2, "Low");
const SEVERITY_MEDIUM: Enum = (3, "Medium");
const SEVERITY_HIGH: Enum = (4, "High");

const STATUS_UNKNOWN: Enum = (0, "Unknown");
const STATUS_SUCCESS: Enum = (1, "Success");
const STATUS_FAILURE: Enum = (2, "Failure");

/// The `ocsf` member of `event`, number `seq` of `host`, at `time_ms`.
pub fn object<'a>(event: &'a Event, seq: u64, time_ms: i64, host: &'a str) -> Ocsf<'a> {
    let mut o = Ocsf::base(BASE_OTHER, event.kind(), seq, time_ms, host);
    o.metadata.is_truncated = event.truncated();
    match event {
        Event::Call(call) => o.call(call),
        Event::Daemon(d) => o.daemon(d, host),
    }
    o
}

impl<'a> Ocsf<'a> {
    fn base(activity: Activity, kind: &'a str, seq: u64, time: i64, host: &'a str) -> Self {
        let Activity {
            class,
            id,
            name,
            type_name,
        } = activity;
        Self {
            kind,
            class_uid: class.uid,
            class_name: class.name,
            category_uid: class.category_uid,
            category_name: class.category_name,
            activity_id: id,
            // Activity 99 (Other) names the event's own kind.
            activity_name: if id == 99 { kind } else { name },
            type_uid: u64::from(class.uid) * 100 + u64::from(id),
            type_name,
            time,
            severity_id: SEVERITY_INFO.0,
            severity: SEVERITY_INFO.1,
            status_id: STATUS_SUCCESS.0,
            status: STATUS_SUCCESS.1,
            status_detail: None,
            count: None,
            action_id: None,
            action: None,
            disposition_id: None,
            disposition: None,
            metadata: Metadata {
                version: VERSION,
                product: product(),
                profiles: PROFILES,
                sequence: seq,
                log_provider: host,
                is_truncated: false,
            },
            device: Device {
                type_id: 0,
                type_name: "Unknown",
                hostname: host,
            },
            actor: None,
            process: None,
            file: None,
            file_result: None,
            dst_endpoint: None,
            src_endpoint: None,
            connection_info: None,
            app: None,
            api: None,
            policy: None,
            exit_code: None,
            unmapped: None,
        }
    }

    fn set_activity(&mut self, activity: Activity) {
        let kind = self.kind;
        let Activity {
            class,
            id,
            name,
            type_name,
        } = activity;
        self.class_uid = class.uid;
        self.class_name = class.name;
        self.category_uid = class.category_uid;
        self.category_name = class.category_name;
        self.activity_id = id;
        self.activity_name = if id == 99 { kind } else { name };
        self.type_uid = u64::from(class.uid) * 100 + u64::from(id);
        self.type_name = type_name;
    }

    fn set(&mut self, action: Enum, disposition: Enum, status: Enum, severity: Enum) {
        self.action_id = Some(action.0);
        self.action = Some(action.1);
        self.disposition_id = Some(disposition.0);
        self.disposition = Some(disposition.1);
        (self.status_id, self.status) = status;
        (self.severity_id, self.severity) = severity;
    }

    fn call(&mut self, call: &'a Call) {
        let refused = call.outcome == CallOutcome::Denied;
        self.target(&call.op, refused);
        let (action, disposition) = match call.outcome {
            // A call an earlier approval's grant let through was approved.
            CallOutcome::Allowed if call.grant.is_some() => (ACTION_ALLOWED, DISPOSITION_APPROVED),
            CallOutcome::Allowed => (ACTION_ALLOWED, DISPOSITION_ALLOWED),
            CallOutcome::Denied => (ACTION_DENIED, DISPOSITION_BLOCKED),
            CallOutcome::Held => (ACTION_HELD, DISPOSITION_DELAYED),
            CallOutcome::Audited => (ACTION_ALLOWED, DISPOSITION_LOGGED),
            CallOutcome::Observed => (ACTION_OBSERVED, DISPOSITION_NO_ACTION),
        };
        let (status, severity) = match call.outcome {
            CallOutcome::Denied => (STATUS_FAILURE, SEVERITY_MEDIUM),
            CallOutcome::Held => (STATUS_UNKNOWN, SEVERITY_LOW),
            _ => (STATUS_SUCCESS, SEVERITY_INFO),
        };
        self.set(action, disposition, status, severity);
        if let Some(p) = guarded_process(&call.op, &call.process) {
            // Process Activity's process: the one that left, or the guard
            // process aimed at (the caller itself for bpf and files).
            self.process = Some(p);
            (self.severity_id, self.severity) = SEVERITY_HIGH;
        } else if call.kind() == CallKind::IoUring {
            // Process Activity's process: the caller, which asked for it.
            self.process = Some(process(&call.process));
        }
        self.actor = Some(actor(&call.agent, Some(&call.process)));
        self.policy = policy(&call.rule);
        self.status_detail = call.reason.as_deref();
        self.unmapped = unmapped(call.agent.known());
    }

    /// Class, activity and target of a call (`refused`: a connect that
    /// did not happen).
    fn target(&mut self, op: &'a super::model::Op, refused: bool) {
        use super::model::Op;
        match op {
            Op::Connect(dst) | Op::Send(dst) => {
                self.set_activity(match (refused, op.kind()) {
                    (true, _) => NET_REFUSE,
                    (false, CallKind::Send) => NET_TRAFFIC,
                    (false, _) => NET_OPEN,
                });
                self.dst_endpoint = Some(endpoint(dst));
                self.connection_info = Some(connection_info(Some(dst.family)));
            }
            Op::UnixConnect(t) | Op::UnixSend(t) => {
                self.set_activity(match (refused, op.kind()) {
                    (true, _) => NET_REFUSE,
                    (false, CallKind::UnixSend) => NET_TRAFFIC,
                    (false, _) => NET_OPEN,
                });
                self.dst_endpoint = Some(Endpoint {
                    name: t.path.as_deref(),
                    ..Endpoint::default()
                });
                self.connection_info = Some(connection_info(None));
            }
            // Self-defense: an agent process acted on a process (itself
            // leaving, or a guard process) or on the guard's objects.
            // io_uring_setup: the process asked for a kernel facility the
            // supervisor cannot see into; no file is involved.
            Op::Escape(_) | Op::Tamper(_) | Op::IoUring(_) => self.set_activity(PROCESS_OTHER),
            Op::Unlink(_) | Op::Rmdir(_) | Op::Truncate(_) => {
                self.set_activity(if op.kind() == CallKind::Truncate {
                    FILE_UPDATE
                } else {
                    FILE_DELETE
                });
                let kind = if op.kind() == CallKind::Rmdir {
                    FOLDER
                } else {
                    REGULAR_FILE
                };
                // A path the kernel could not resolve has no name: OCSF's
                // required name is then empty.
                self.file = Some(File::at(op.path().unwrap_or_default(), kind));
            }
            Op::Rename(t) => {
                self.set_activity(FILE_RENAME);
                let kind = if t.directory { FOLDER } else { REGULAR_FILE };
                self.file = Some(File::at(op.path().unwrap_or_default(), kind));
                self.file_result = Some(File::at(op.new_path().unwrap_or_default(), kind));
            }
            Op::Link(_) => {
                // The file gains a name: the new name is what is created.
                self.set_activity(FILE_CREATE);
                self.file = Some(File::at(op.path().unwrap_or_default(), REGULAR_FILE));
                self.file_result = Some(File::at(op.new_path().unwrap_or_default(), REGULAR_FILE));
            }
            Op::Mount(_) => {
                // Where it would mount, or the new root (none for a new
                // namespace).
                self.set_activity(FILE_MOUNT);
                self.file = Some(File::at(op.path().unwrap_or_default(), FOLDER));
            }
        }
    }

    fn decision(&mut self, d: &'a HoldDecision) {
        let approved = d.hold.decision == Decision::Approved;
        self.target(&d.op, !approved);
        if approved {
            self.set(
                ACTION_ALLOWED,
                DISPOSITION_APPROVED,
                STATUS_SUCCESS,
                SEVERITY_INFO,
            );
        } else {
            self.set(
                ACTION_DENIED,
                DISPOSITION_REJECTED,
                STATUS_FAILURE,
                SEVERITY_MEDIUM,
            );
        }
        self.actor = Some(actor(&d.agent, Some(&d.process)));
        self.policy = policy(&d.rule);
        self.unmapped = unmapped(d.agent.known());
    }

    fn daemon(&mut self, event: &'a DaemonEvent, host: &'a str) {
        match event {
            DaemonEvent::HoldDecision(d) => self.decision(d),
            DaemonEvent::AgentStart(s) => {
                self.set_activity(PROCESS_LAUNCH);
                let mut a = agent_actor(s.agent.as_ref());
                a.process = Some(OcsfProcess {
                    pid: Some(s.session.started_by.pid),
                    user: Some(User {
                        uid: Some(s.session.started_by.uid.to_string()),
                        ..User::default()
                    }),
                    ..OcsfProcess::default()
                });
                a.session = Some(Session { uid: &s.session.id });
                self.actor = Some(a);
                self.process = Some(process(&s.process));
                self.unmapped = unmapped(s.agent.as_ref());
            }
            DaemonEvent::AgentExit(e) => {
                self.set_activity(PROCESS_TERMINATE);
                let mut a = agent_actor(e.agent.as_ref());
                a.session = Some(Session { uid: &e.session.id });
                self.actor = Some(a);
                self.process = Some(OcsfProcess {
                    uid: Some(&e.session.id),
                    ..OcsfProcess::default()
                });
                self.exit_code = e.session.exit_code;
                self.unmapped = unmapped(e.agent.as_ref());
            }
            DaemonEvent::AgentKill(k) => {
                self.set_activity(PROCESS_TERMINATE);
                self.actor = Some(Actor {
                    user: Some(by_user(&k.control.by)),
                    ..Actor::default()
                });
                self.process = Some(OcsfProcess {
                    uid: Some(&k.control.cgroup),
                    name: Some(&k.control.target),
                    ..OcsfProcess::default()
                });
            }
            DaemonEvent::AgentExpired(e) => {
                self.set_activity(APP_DISABLE);
                self.app = Some(product());
                self.unmapped = unmapped(e.agent.as_ref());
            }
            DaemonEvent::AgentMode(m) => {
                self.set_activity(APP_UPDATE);
                self.app = Some(product());
                self.actor = Some(Actor {
                    user: Some(by_user(&m.by)),
                    ..Actor::default()
                });
                self.unmapped = unmapped(m.agent.as_ref());
            }
            // A spent budget changes what the agent may do next; the
            // agent, with the process of the call that spent it, did it.
            DaemonEvent::AgentBudget(b) => {
                self.set_activity(APP_UPDATE);
                self.app = Some(product());
                let mut a = agent_actor(b.agent.as_ref());
                a.process = Some(process(&b.process));
                self.actor = Some(a);
                // The burst a budget exists for: worth a look.
                (self.severity_id, self.severity) = SEVERITY_MEDIUM;
                self.unmapped = unmapped(b.agent.as_ref());
            }
            DaemonEvent::PolicyReload(r) => {
                self.set_activity(APP_UPDATE);
                self.app = Some(product());
                self.actor = Some(Actor {
                    user: Some(by_user(&r.by)),
                    ..Actor::default()
                });
                if r.outcome == super::model::Lifecycle::Failure {
                    (self.status_id, self.status) = STATUS_FAILURE;
                    (self.severity_id, self.severity) = SEVERITY_MEDIUM;
                }
            }
            DaemonEvent::ControlRefused(r) => {
                self.set_activity(API_OTHER);
                self.api = Some(Api {
                    operation: r.control.op.as_str(),
                });
                self.actor = Some(peer_actor(&r.control.by));
                self.src_endpoint = Some(peer_endpoint(&r.control.by, host));
                self.set(
                    ACTION_DENIED,
                    DISPOSITION_UNAUTHORIZED,
                    STATUS_FAILURE,
                    SEVERITY_HIGH,
                );
            }
            DaemonEvent::TamperSuppressed(t) => {
                // A count of refused calls, not one call: no process made
                // it (Base Event, Other, with `count`).
                self.set(
                    ACTION_DENIED,
                    DISPOSITION_BLOCKED,
                    STATUS_FAILURE,
                    SEVERITY_HIGH,
                );
                self.count = Some(t.target.count);
                self.status_detail = Some(&t.target.reason);
                self.actor = Some(actor(&t.agent, None));
                self.policy = policy(&t.rule);
                self.unmapped = unmapped(t.agent.known());
            }
            DaemonEvent::NotifyFailed(_) => {
                (self.status_id, self.status) = STATUS_FAILURE;
                (self.severity_id, self.severity) = SEVERITY_MEDIUM;
            }
            DaemonEvent::Loss(_) => {
                (self.status_id, self.status) = STATUS_FAILURE;
                (self.severity_id, self.severity) = SEVERITY_HIGH;
            }
            DaemonEvent::DaemonStart(_) => {
                self.set_activity(APP_START);
                self.app = Some(product());
            }
            DaemonEvent::DaemonStop(_) => {
                self.set_activity(APP_STOP);
                self.app = Some(product());
            }
            DaemonEvent::DaemonTask(_) => {
                self.set_activity(APP_RESTART);
                self.app = Some(product());
                (self.status_id, self.status) = STATUS_FAILURE;
                (self.severity_id, self.severity) = SEVERITY_MEDIUM;
            }
        }
    }
}

/// The process a self-defense event is about, if it is one.
fn guarded_process<'a>(op: &super::model::Op, caller: &'a Process) -> Option<OcsfProcess<'a>> {
    use super::model::Op;
    let pid = match op {
        Op::Escape(t) => Some(t.pid),
        Op::Tamper(t) => t.pid(),
        Op::Connect(_)
        | Op::IoUring(_)
        | Op::Send(_)
        | Op::UnixConnect(_)
        | Op::UnixSend(_)
        | Op::Unlink(_)
        | Op::Rmdir(_)
        | Op::Rename(_)
        | Op::Truncate(_)
        | Op::Link(_)
        | Op::Mount(_) => return None,
    };
    Some(match pid {
        Some(pid) => OcsfProcess {
            pid: Some(pid),
            ..OcsfProcess::default()
        },
        None => process(caller),
    })
}

fn endpoint(dst: &ConnectTarget) -> Endpoint<'_> {
    Endpoint {
        ip: Some(dst.address),
        port: Some(dst.port),
        ..Endpoint::default()
    }
}

/// Outbound, over IP of `family` (None: a unix socket).
fn connection_info(family: Option<Family>) -> ConnectionInfo {
    let version = family.map(|f| match f {
        Family::Ipv4 => (4, "Internet Protocol version 4 (IPv4)"),
        Family::Ipv6 => (6, "Internet Protocol version 6 (IPv6)"),
    });
    ConnectionInfo {
        direction_id: 2,
        direction: "Outbound",
        protocol_ver_id: version.map(|v| v.0),
        protocol_ver: version.map(|v| v.1),
    }
}

fn process(p: &Process) -> OcsfProcess<'_> {
    OcsfProcess {
        pid: Some(p.pid),
        ptid: p.tid,
        uid: None,
        name: p.comm.as_deref(),
        cmd_line: p.cmdline.as_ref().map(super::model::Cmdline::joined),
        file: p.exe.as_deref().map(|exe| File::at(exe, REGULAR_FILE)),
        user: Some(User {
            name: p.user.as_deref(),
            uid: Some(p.uid.to_string()),
        }),
        parent_process: p.ppid.map(|pid| Parent { pid }),
    }
}

/// The agent as the actor: its name and cgroup id as the application, its
/// run as the session, whom it acts for as the user.
fn agent_actor(agent: Option<&AgentRef>) -> Actor<'_> {
    let Some(a) = agent else {
        return Actor::default();
    };
    Actor {
        app_name: Some(&a.name),
        app_uid: Some(a.cgroup_id.to_string()),
        session: a.session.as_deref().map(|uid| Session { uid }),
        user: a.on_behalf_of.as_deref().map(|name| User {
            name: Some(name),
            uid: None,
        }),
        process: None,
    }
}

fn actor<'a>(agent: &'a Agent, p: Option<&'a Process>) -> Actor<'a> {
    let mut a = match agent {
        Agent::Known(a) => agent_actor(Some(a)),
        Agent::Unattributed { cgroup_id } => Actor {
            app_uid: Some(cgroup_id.to_string()),
            ..Actor::default()
        },
    };
    a.process = p.map(process);
    a
}

fn by_user(by: &super::model::By) -> User<'_> {
    User {
        name: Some(&by.user),
        uid: by.uid.map(|u| u.to_string()),
    }
}

fn peer_actor(peer: &Peer) -> Actor<'_> {
    let surface = match peer.via {
        Some(Via::Web) => "agent-guard web page",
        None => "agent-guard control socket",
    };
    Actor {
        app_name: Some(surface),
        user: (peer.user.is_some() || peer.uid.is_some()).then(|| User {
            name: peer.user.as_deref(),
            uid: peer.uid.map(|u| u.to_string()),
        }),
        process: peer.pid.map(|pid| OcsfProcess {
            pid: Some(pid),
            ..OcsfProcess::default()
        }),
        ..Actor::default()
    }
}

/// Where a request came from: the web client, or this host (the control
/// socket is local).
fn peer_endpoint<'a>(peer: &Peer, host: &'a str) -> Endpoint<'a> {
    match peer
        .remote
        .as_deref()
        .and_then(|r| r.parse::<std::net::SocketAddr>().ok())
    {
        Some(addr) => Endpoint {
            ip: Some(addr.ip()),
            port: Some(addr.port()),
            ..Endpoint::default()
        },
        None => Endpoint {
            hostname: Some(host),
            ..Endpoint::default()
        },
    }
}

fn policy(rule: &Rule) -> Option<Policy<'_>> {
    Some(Policy {
        name: rule.matched.as_deref()?,
        desc: rule.source.as_deref(),
    })
}

fn unmapped(agent: Option<&AgentRef>) -> Option<Unmapped<'_>> {
    agent.map(|a| Unmapped {
        agent: UnmappedAgent {
            owner: &a.owner,
            purpose: &a.purpose,
            cgroup: &a.cgroup,
            labels: &a.labels,
        },
    })
}
