//! The ECS rendering of an event (`format = "ecs"`): Elastic Common Schema
//! fields for what ECS has words for, with ECS's types and categorization
//! values; the agent under `gen_ai.agent` and `labels`; the whole native
//! event under `agent_guard`. No member is ever null. A mapping of the
//! typed [`Event`]; the table is in docs/events.md, and the privileged
//! suite checks every line against ECS's published field definitions.
use std::{collections::BTreeMap, net::IpAddr};

use schemars::JsonSchema;
use serde::{Serialize, Serializer, ser::SerializeMap as _};

use super::model::{
    AgentRef, CallKind, CallOutcome, DaemonEvent, Decision, Event, Family, Lifecycle, Op, Process,
    Rule,
};

pub const VERSION: &str = "9.4.0";

/// One ECS document (without its chain link).
#[derive(Serialize, JsonSchema)]
pub struct Ecs<'a> {
    #[serde(rename = "@timestamp")]
    pub timestamp: &'a str,
    pub ecs: EcsVersion,
    pub event: EcsEvent<'a>,
    pub host: Host<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<EcsProcess<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<File<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<EcsRule<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gen_ai: Option<GenAi<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels<'a>>,
    /// The native event, whole.
    pub agent_guard: super::Native<'a>,
}

#[derive(Serialize, JsonSchema)]
pub struct EcsVersion {
    pub version: &'static str,
}

#[derive(Serialize, JsonSchema)]
pub struct EcsEvent<'a> {
    pub kind: &'static str,
    pub category: Vec<&'static str>,
    #[serde(rename = "type")]
    pub types: Vec<&'static str>,
    /// The native kind.
    pub action: &'a str,
    pub outcome: &'static str,
    pub sequence: u64,
    pub module: &'static str,
    pub dataset: &'static str,
    pub provider: &'static str,
}

#[derive(Serialize, JsonSchema)]
pub struct Host<'a> {
    pub name: &'a str,
    pub hostname: &'a str,
}

#[derive(Serialize, JsonSchema)]
pub struct EcsProcess<'a> {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<Thread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
}

#[derive(Serialize, JsonSchema)]
pub struct Thread {
    pub id: u32,
}

#[derive(Serialize, JsonSchema)]
pub struct Parent {
    pub pid: u32,
}

#[derive(Serialize, JsonSchema)]
pub struct User<'a> {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub group: Group<'a>,
}

#[derive(Serialize, JsonSchema)]
pub struct Group<'a> {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
}

#[derive(Serialize, JsonSchema)]
pub struct File<'a> {
    pub path: &'a str,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<&'a str>,
    #[serde(rename = "type")]
    pub file_type: &'static str,
}

#[derive(Serialize, JsonSchema)]
pub struct Destination<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A unix socket's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<&'a str>,
}

#[derive(Serialize, JsonSchema)]
pub struct Network {
    /// `ipv4` or `ipv6`; absent for unix sockets.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub network_type: Option<&'static str>,
    pub direction: &'static str,
}

#[derive(Serialize, JsonSchema)]
pub struct EcsRule<'a> {
    /// The rule as written (`default` for the agent's default).
    pub name: &'a str,
    /// FILE:LINE of the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
}

#[derive(Serialize, JsonSchema)]
pub struct GenAi<'a> {
    pub agent: GenAiAgent<'a>,
}

#[derive(Serialize, JsonSchema)]
pub struct GenAiAgent<'a> {
    pub name: &'a str,
    /// The agent's cgroup id.
    pub id: String,
    /// Its purpose.
    pub description: &'a str,
}

/// `labels`: `agent_name` and each agent label as `agent_<label>`.
pub struct Labels<'a>(&'a AgentRef);

impl Serialize for Labels<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.labels.len() + 1))?;
        map.serialize_entry("agent_name", &self.0.name)?;
        for (k, v) in &self.0.labels {
            map.serialize_entry(&format_args!("agent_{k}").to_string(), v)?;
        }
        map.end()
    }
}

impl JsonSchema for Labels<'_> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EcsLabels".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        BTreeMap::<String, String>::json_schema(generator)
    }
}

/// The ECS document of `native` (whose event is `native.event`).
pub fn document<'a>(native: super::Native<'a>, time: &'a str) -> Ecs<'a> {
    let event = native.event;
    let (category, types) = categories(event);
    let agent = event.agent();
    let mut doc = Ecs {
        timestamp: time,
        ecs: EcsVersion { version: VERSION },
        event: EcsEvent {
            kind: if matches!(event, Event::Daemon(DaemonEvent::Loss(_))) {
                "metric"
            } else {
                "event"
            },
            category,
            types,
            action: event.kind(),
            outcome: outcome(event),
            sequence: native.seq,
            module: "agent_guard",
            dataset: "agent_guard.events",
            provider: "agent-guard",
        },
        host: Host {
            name: native.host,
            hostname: native.host,
        },
        process: None,
        user: None,
        file: None,
        destination: None,
        network: None,
        rule: None,
        gen_ai: agent.map(|a| GenAi {
            agent: GenAiAgent {
                name: &a.name,
                id: a.cgroup_id.to_string(),
                description: &a.purpose,
            },
        }),
        labels: agent.map(Labels),
        agent_guard: native,
    };
    let (op, process, rule) = match event {
        Event::Call(c) => (Some(&c.op), Some(&c.process), Some(&c.rule)),
        Event::Daemon(DaemonEvent::HoldDecision(d)) => {
            (Some(&d.op), Some(&d.process), Some(&d.rule))
        }
        Event::Daemon(DaemonEvent::AgentStart(s)) => (None, Some(&s.process), None),
        Event::Daemon(DaemonEvent::AgentBudget(b)) => (None, Some(&b.process), None),
        Event::Daemon(_) => (None, None, None),
    };
    if let Some(p) = process {
        doc.process = Some(ecs_process(p));
        doc.user = Some(user(p));
    }
    doc.rule = rule.and_then(ecs_rule);
    match op {
        Some(
            op @ (Op::Unlink(_)
            | Op::Rmdir(_)
            | Op::Truncate(_)
            | Op::Rename(_)
            | Op::Link(_)
            | Op::Mount(_)),
        ) => {
            if let Some(path) = op.path() {
                let (dir, name) = match path.rsplit_once('/') {
                    Some(("", name)) => (Some("/"), name),
                    Some((dir, name)) => (Some(dir), name),
                    None => (None, path),
                };
                let is_dir = match op {
                    Op::Rmdir(_) | Op::Mount(_) => true,
                    Op::Rename(t) => t.directory,
                    _ => false,
                };
                doc.file = Some(File {
                    path,
                    name,
                    directory: dir,
                    file_type: if is_dir { "dir" } else { "file" },
                });
            }
        }
        Some(Op::Connect(dst) | Op::Send(dst)) => {
            doc.destination = Some(Destination {
                ip: Some(dst.address),
                port: Some(dst.port),
                address: None,
            });
            doc.network = Some(Network {
                network_type: Some(match dst.family {
                    Family::Ipv4 => "ipv4",
                    Family::Ipv6 => "ipv6",
                }),
                direction: "egress",
            });
        }
        Some(Op::UnixConnect(t) | Op::UnixSend(t)) => {
            // ECS's address holds what is neither an IP nor a domain.
            doc.destination = t.path.as_deref().map(|path| Destination {
                ip: None,
                port: None,
                address: Some(path),
            });
            doc.network = Some(Network {
                network_type: None,
                direction: "egress",
            });
        }
        Some(Op::Escape(_) | Op::Tamper(_) | Op::IoUring(_)) | None => {}
    }
    doc
}

/// event.category and event.type, with ECS's allowed values only, each
/// type one its categories expect.
fn categories(event: &Event) -> (Vec<&'static str>, Vec<&'static str>) {
    let call = |kind: CallKind| -> (&'static [&'static str], &'static [&'static str]) {
        match kind {
            CallKind::Connect | CallKind::UnixConnect => (&["network"], &["connection", "start"]),
            CallKind::Send | CallKind::UnixSend => (&["network"], &["protocol"]),
            CallKind::Unlink | CallKind::Rmdir => (&["file"], &["deletion"]),
            CallKind::Rename | CallKind::Truncate => (&["file"], &["change"]),
            CallKind::Link => (&["file"], &["creation"]),
            CallKind::Mount => (&["file", "configuration"], &["change"]),
            CallKind::IoUring => (&["process"], &["change"]),
            // Always refused: `denied` comes with intrusion_detection.
            CallKind::Escape | CallKind::Tamper => (&["process"], &[]),
        }
    };
    // A call the policy or a person decided on is also an
    // intrusion-detection event, which is where ECS puts allowed/denied.
    let decided = |(categories, types): (&'static [&'static str], &'static [&'static str]),
                   verdict| {
        let mut c = categories.to_vec();
        let mut t = types.to_vec();
        if let Some(v) = verdict {
            c.push("intrusion_detection");
            t.push(v);
        }
        (c, t)
    };
    match event {
        Event::Call(c) => decided(
            call(c.op.kind()),
            (c.outcome == CallOutcome::Denied).then_some("denied"),
        ),
        Event::Daemon(d) => match d {
            DaemonEvent::HoldDecision(h) => decided(
                call(h.op.kind()),
                Some(if h.hold.decision == Decision::Approved {
                    "allowed"
                } else {
                    "denied"
                }),
            ),
            DaemonEvent::AgentStart(_) => (vec!["process"], vec!["start"]),
            DaemonEvent::AgentExit(_) | DaemonEvent::AgentKill(_) => (vec!["process"], vec!["end"]),
            DaemonEvent::DaemonStart(_) => (vec!["process"], vec!["start"]),
            DaemonEvent::DaemonStop(_) => (vec!["process"], vec!["end"]),
            DaemonEvent::DaemonTask(_) => (vec!["process"], vec!["change"]),
            DaemonEvent::PolicyReload(_)
            | DaemonEvent::AgentMode(_)
            | DaemonEvent::AgentExpired(_) => (vec!["configuration"], vec!["change"]),
            // What the agent may do next changed: a spent budget.
            DaemonEvent::AgentBudget(_) => (vec!["process", "intrusion_detection"], vec!["change"]),
            DaemonEvent::ControlRefused(_) => (vec!["api"], vec!["denied"]),
            DaemonEvent::NotifyFailed(_) | DaemonEvent::Loss(_) => (vec!["host"], vec!["info"]),
            DaemonEvent::TamperSuppressed(_) => (vec!["intrusion_detection"], vec!["denied"]),
        },
    }
}

/// event.outcome: success, failure or unknown.
fn outcome(event: &Event) -> &'static str {
    match event {
        Event::Call(c) => match c.outcome {
            CallOutcome::Allowed | CallOutcome::Audited | CallOutcome::Observed => "success",
            CallOutcome::Denied => "failure",
            CallOutcome::Held => "unknown",
        },
        Event::Daemon(d) => match d {
            DaemonEvent::HoldDecision(h) if h.hold.decision == Decision::Approved => "success",
            DaemonEvent::PolicyReload(r) if r.outcome == Lifecycle::Success => "success",
            DaemonEvent::DaemonTask(t) if t.outcome == Lifecycle::Success => "success",
            DaemonEvent::HoldDecision(_)
            | DaemonEvent::PolicyReload(_)
            | DaemonEvent::DaemonTask(_)
            | DaemonEvent::ControlRefused(_)
            | DaemonEvent::TamperSuppressed(_)
            | DaemonEvent::AgentBudget(_)
            | DaemonEvent::NotifyFailed(_)
            | DaemonEvent::Loss(_) => "failure",
            DaemonEvent::AgentStart(_)
            | DaemonEvent::AgentExit(_)
            | DaemonEvent::AgentKill(_)
            | DaemonEvent::AgentMode(_)
            | DaemonEvent::AgentExpired(_)
            | DaemonEvent::DaemonStart(_)
            | DaemonEvent::DaemonStop(_) => "success",
        },
    }
}

fn ecs_process(p: &Process) -> EcsProcess<'_> {
    EcsProcess {
        pid: p.pid,
        thread: p.tid.map(|id| Thread { id }),
        parent: p.ppid.map(|pid| Parent { pid }),
        name: p.comm.as_deref(),
        executable: p.exe.as_deref(),
        args: p.cmdline.as_ref().map(|c| c.args()),
        args_count: p.cmdline.as_ref().map(|c| c.args().len()),
        command_line: p.cmdline.as_ref().map(super::model::Cmdline::joined),
    }
}

fn user(p: &Process) -> User<'_> {
    User {
        id: p.uid.to_string(),
        name: p.user.as_deref(),
        group: Group {
            id: p.gid.to_string(),
            name: p.group.as_deref(),
        },
    }
}

fn ecs_rule(r: &Rule) -> Option<EcsRule<'_>> {
    Some(EcsRule {
        name: r.matched.as_deref()?,
        id: r.source.as_deref(),
    })
}
