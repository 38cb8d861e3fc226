//! One event of each kind, as the docs show them: docs/events.md carries
//! these, rendered by the emitter's own code, and a test fails when the
//! docs and the rendering differ. `agent-guard events examples` prints
//! them (sample data for a SIEM's parser, in either format).
use std::{collections::BTreeMap, net::IpAddr, time::SystemTime};

mod budget;
mod doors;

use doors::{hold_context, side_doors};

use super::{
    Stamp,
    chain::{Alg, Chain},
    model::*,
    render_ecs, render_native,
};

fn agent() -> AgentRef {
    AgentRef {
        name: "claims-bot".into(),
        owner: "claims-team@example.com".into(),
        purpose: "files insurance claims".into(),
        labels: BTreeMap::from([("env".into(), "prod".into())]),
        cgroup: "agent-guard/claims-bot".into(),
        cgroup_id: 4242,
        session: Some("9f2c1e0a7b3d4c5e".into()),
        on_behalf_of: Some("alice@example.com".into()),
    }
}

fn process(comm: &str, exe: &str, argv: &[&str]) -> Process {
    Process {
        pid: 31337,
        tid: Some(31337),
        ppid: Some(31300),
        uid: 1001,
        gid: 1001,
        user: Some("claims".into()),
        group: Some("claims".into()),
        comm: Some(comm.into()),
        exe: Some(exe.into()),
        cmdline: Some(Cmdline::capped(
            argv.iter().map(|a| (*a).to_owned()).collect(),
        )),
    }
}

fn rule(verdict: Verdict, matched: &str, line: u32) -> Rule {
    Rule {
        verdict: Some(verdict),
        matched: Some(matched.into()),
        source: Some(format!("/etc/agent-guard/policy.toml:{line}")),
    }
}

fn connect(outcome: CallOutcome, port: u16, r: Rule) -> Call {
    Call {
        op: Op::Connect(ConnectTarget {
            family: Family::Ipv4,
            address: IpAddr::from([10, 0, 3, 7]),
            port,
        }),
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
    }
}

fn unlink(outcome: CallOutcome, path: &str) -> Call {
    Call {
        op: Op::Unlink(FileTarget::path(path.into())),
        outcome,
        agent: Agent::Known(agent()),
        process: process("rm", "/usr/bin/rm", &["rm", "-rf", "/srv/claims/2024"]),
        rule: rule(Verdict::Ask, "/srv/claims", 14),
        hold: None,
        grant: None,
        backend: None,
        via: None,
        reason: None,
        budget: None,
    }
}

/// A process of the agent reached past its cgroup or for the guard.
fn self_defense(op: Op) -> Call {
    Call {
        op,
        outcome: CallOutcome::Denied,
        agent: Agent::Known(agent()),
        process: process(
            "sh",
            "/usr/bin/dash",
            &["sh", "-c", "echo $$ > /sys/fs/cgroup/cgroup.procs"],
        ),
        rule: Rule {
            verdict: Some(Verdict::Deny),
            matched: Some("self-defense".into()),
            source: None,
        },
        hold: None,
        grant: None,
        backend: None,
        via: None,
        reason: None,
        budget: None,
    }
}

const HOLD: u64 = 1_732_421_234_567_890_123;

fn by_root() -> By {
    By {
        uid: Some(0),
        user: "root".into(),
    }
}

/// One event of each kind (and of each call outcome).
pub fn all() -> Vec<Event> {
    let mut held = unlink(CallOutcome::Held, "/srv/claims/2024/claim-17.pdf");
    held.hold = Some(HoldRef {
        id: HoldId(HOLD),
        timeout_secs: Some(300),
        context: Some(Box::new(hold_context())),
    });
    let mut rmdir = unlink(CallOutcome::Denied, "/srv/claims/2024");
    rmdir.op = Op::Rmdir(FileTarget::path("/srv/claims/2024".into()));
    rmdir.rule = rule(Verdict::Deny, "/srv", 12);
    let mut observed = unlink(CallOutcome::Observed, "/srv/claims/2024/claim-18.pdf");
    observed.op = Op::Unlink(FileTarget {
        path: Some("/srv/claims/2024/claim-18.pdf".into()),
        raw_path: Some("claim-18.pdf".into()),
        enforcement: Some(
            "none: this kernel has no BPF LSM and the process was not started by `agent-guard run`"
                .into(),
        ),
        ..FileTarget::default()
    });
    observed.agent = Agent::Known(AgentRef {
        session: None,
        on_behalf_of: None,
        ..agent()
    });
    let mut supervised = unlink(CallOutcome::Allowed, "/srv/claims/tmp/upload.part");
    supervised.rule = rule(Verdict::Allow, "/srv/claims/tmp", 13);
    supervised.backend = Some(Backend::Seccomp);
    supervised.process.comm = None;
    let decided = HoldDecision::new(
        held.clone(),
        Decided {
            id: HoldId(HOLD),
            call: CallKind::Unlink,
            decision: Decision::Approved,
            by: By {
                uid: Some(1002),
                user: "alice".into(),
            },
            reason: Some(Text::message("ticket OPS-42")),
            waited_ms: 48_213,
            scope: Scope::Grant(Grant {
                id: 3,
                agent: "claims-bot".into(),
                scope: GrantScope::Subtree {
                    path: "/srv/claims".into(),
                },
                expires: "2026-11-24T07:10:48Z".into(),
                left_secs: 600,
                by: "alice".into(),
                reason: Some(Text::message("ticket OPS-42")),
            }),
        },
    );
    let refusal = Refusal::new(
        "approve",
        Peer {
            uid: Some(1003),
            pid: Some(40001),
            user: Some("mallory".into()),
            agent: Some("claims-bot".into()),
            ..Peer::default()
        },
        "the caller is inside agent claims-bot: agents have no say in the control plane",
    )
    .about(Some(Subject::Hold(HOLD.to_string())));
    let (over_budget, budget_spent) = budget::spent();
    let mut loss = Loss::new(LossReason::SinkSlow, 12);
    loss.loss.sink = Some("siem".into());
    loss.loss.total = Some(12);
    vec![
        connect(
            CallOutcome::Allowed,
            443,
            rule(Verdict::Allow, "10.0.3.0/24:443", 9),
        )
        .into(),
        connect(CallOutcome::Denied, 5432, rule(Verdict::Deny, "default", 7)).into(),
        held.into(),
        decided_event(decided),
        rmdir.into(),
        supervised.into(),
        observed.into(),
    ]
    .into_iter()
    .chain(side_doors())
    .chain([
        over_budget.into(),
        self_defense(Op::Escape(EscapeTarget {
            how: EscapeHow::CgroupWrite,
            action: GuardAction::Killed,
            pid: 31337,
            cgroup_id: 1,
            cgroup: Some("/".into()),
            call: None,
            path: None,
        }))
        .into(),
        self_defense(Op::Tamper(TamperTarget::Signal {
            action: GuardAction::Refused,
            pid: 812,
            signal: 9,
            call: None,
        }))
        .into(),
        DaemonEvent::TamperSuppressed(TamperSuppressed {
            outcome: Refused::Denied,
            agent: Agent::Known(agent()),
            rule: Rule {
                verdict: Some(Verdict::Deny),
                matched: Some("self-defense".into()),
                source: None,
            },
            target: SuppressedTarget {
                what: SuppressedWhat::Suppressed,
                action: GuardAction::Refused,
                of: "signal",
                count: 240,
                reason: "240 more refused signal attempts by this agent, not reported one by \
                         one (at most 10 at once, then one a second)"
                    .into(),
            },
        })
        .into(),
        DaemonEvent::AgentStart(AgentStart {
            outcome: Success::Success,
            agent: Some(agent()),
            process: Process {
                pid: 31300,
                tid: None,
                ppid: Some(31299),
                uid: 1001,
                gid: 1001,
                user: Some("claims".into()),
                group: Some("claims".into()),
                comm: None,
                exe: None,
                cmdline: Some(Cmdline::capped(vec!["python3".into(), "bot.py".into()])),
            },
            session: RunStarted {
                id: "9f2c1e0a7b3d4c5e".into(),
                started_by: Launcher {
                    pid: 31299,
                    uid: 1001,
                },
            },
        })
        .into(),
        DaemonEvent::AgentExit(AgentExit {
            outcome: Success::Success,
            agent: Some(agent()),
            session: RunEnded {
                id: "9f2c1e0a7b3d4c5e".into(),
                exit_code: Some(0),
                signal: None,
                reason: "the command exited".into(),
            },
        })
        .into(),
        DaemonEvent::AgentKill(AgentKill {
            outcome: Success::Success,
            control: Killed {
                target: format!("hold {HOLD}"),
                cgroup: "/sys/fs/cgroup/agent-guard/claims-bot/run-9f2c1e0a7b3d4c5e".into(),
                by: by_root(),
            },
        })
        .into(),
        DaemonEvent::AgentMode(AgentMode {
            outcome: Success::Success,
            agent: Some(AgentRef {
                session: None,
                on_behalf_of: None,
                ..agent()
            }),
            mode: ModeChange {
                from: Mode::Enforce,
                to: Mode::Freeze,
            },
            by: by_root(),
            reason: Some(Text::message("incident INC-7")),
        })
        .into(),
        budget_spent.into(),
        DaemonEvent::AgentExpired(AgentExpired {
            outcome: Success::Success,
            agent: Some(AgentRef {
                session: None,
                on_behalf_of: None,
                ..agent()
            }),
            expiry: Expiry {
                expires: "2026-11-24T07:00:00Z".into(),
                processes: 2,
                mode: ModeChange {
                    from: Mode::Enforce,
                    to: Mode::Freeze,
                },
                warning: None,
            },
        })
        .into(),
        DaemonEvent::PolicyReload(PolicyReload {
            outcome: Lifecycle::Success,
            policy: Reloaded {
                path: Some("/etc/agent-guard/policy.toml".into()),
                digest: Some(format!("sha256:{}", "5e".repeat(32))),
                error: None,
                diff: Some(PolicyDiff {
                    added: vec![],
                    removed: vec![],
                    changed: vec!["claims-bot".into()],
                }),
            },
            by: By {
                uid: None,
                user: "SIGHUP".into(),
            },
        })
        .into(),
        DaemonEvent::ControlRefused(ControlRefused {
            outcome: Refused::Denied,
            control: refusal,
        })
        .into(),
        DaemonEvent::NotifyFailed(NotifyFailed {
            outcome: Failed::Failed,
            notify: NotifyFailure::Attempt {
                channel: Channel::Webhook,
                url: "https://pager.example.com/hooks/agent-guard".into(),
                event: NotifyWhat::Held,
                hold: Some(HoldId(HOLD)),
                attempt: 1,
                attempts_max: 6,
                will_retry: true,
                error: Text::message("HTTP 503 Service Unavailable"),
                failures: 1,
            },
        })
        .into(),
        DaemonEvent::Loss(loss).into(),
        DaemonEvent::DaemonStart(DaemonStart {
            outcome: Success::Success,
            daemon: Started {
                pid: 812,
                version: "0.1.0".into(),
                policy: "/etc/agent-guard/policy.toml".into(),
                socket: "/run/agent-guard/control.sock".into(),
                agents: vec!["claims-bot".into()],
                backends: Backends {
                    connect: "cgroup_sock_addr".into(),
                    delete: "bpf_lsm".into(),
                    unix: "bpf_lsm".into(),
                },
                sinks: vec!["stdout".into(), "siem".into()],
                chain: ChainSetup {
                    alg: "sha256".into(),
                    state: "/var/lib/agent-guard/chain.json".into(),
                },
                self_defense: SelfDefense {
                    escape: "in force".into(),
                    lsm: "in force".into(),
                    refusals: "reported by the BPF LSM hooks".into(),
                    run_confinement: "none (BPF LSM hooks)".into(),
                    protected: vec![
                        "/var/lib/agent-guard".into(),
                        "/etc/agent-guard/policy.toml".into(),
                    ],
                },
            },
        })
        .into(),
        DaemonEvent::DaemonTask(DaemonTask {
            outcome: Lifecycle::Failure,
            task: TaskFailure {
                name: "webhooks".into(),
                error: Text::message("panicked: connection pool poisoned"),
                failures: 1,
                restart_in_ms: 100,
            },
        })
        .into(),
        DaemonEvent::DaemonStop(DaemonStop {
            outcome: Success::Success,
            daemon: Stopped {
                pid: 812,
                enforcement: Released::Released,
            },
        })
        .into(),
    ])
    .collect()
}

fn decided_event(d: HoldDecision) -> Event {
    DaemonEvent::HoldDecision(Box::new(d)).into()
}

/// When every example happened.
pub fn time() -> SystemTime {
    humantime::parse_rfc3339("2026-11-24T07:00:00.123456789Z").unwrap_or(SystemTime::UNIX_EPOCH)
}

pub const HOST: &str = "db-7";

/// Every example as the daemon writes it (native, or ECS documents), each
/// line with its newline, chained from the first.
pub fn lines(ecs: bool) -> Vec<String> {
    let mut chain = Chain::new(Alg::Sha256, None);
    let time = time();
    let text = humantime::format_rfc3339_nanos(time).to_string();
    let mut buf = Vec::new();
    all()
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let stamp = Stamp {
                seq: i as u64 + 1,
                time,
                time_text: &text,
                host: HOST,
            };
            let bytes = if ecs {
                render_ecs(&mut buf, event, &stamp, Some(&mut chain))
            } else {
                render_native(&mut buf, event, &stamp, Some(&mut chain))
            };
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .collect()
}

/// `line` (compact JSON) indented for reading, members in the order
/// written: only whitespace is added, outside strings.
pub fn pretty(line: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    let mut chars = line.trim_end().chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c => out.push(c),
        }
    }
    out
}
