//! Latency of unlink and connect with and without the guard, and the
//! approval round trip.
use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    BenchArgs, Ctx, Place, approver,
    daemon::BenchDaemon,
    report::{Row, median, percentile, us},
};

/// One `[[agent]]` table; `connect` is the body of its [agent.connect].
pub fn agent_toml(ctx: &Ctx, name: &str, connect: &str) -> String {
    format!(
        r#"
[[agent]]
name = "{name}"
owner = "bench@localhost"
purpose = "agent-guard benchmark"
cgroup = "{prefix}/{name}"

[agent.connect]
{connect}

[agent.delete]
default = "allow"
"#,
        prefix = ctx.cgroups
    )
}

pub const DAEMON_TOML: &str = "[daemon]\napproval_timeout_secs = 60\n";

/// unlink and connect; open (ordinary: never supervised), rename (every
/// one supervised under seccomp, which cannot see paths), UDP datagrams
/// sent without connect (cgroup/sendmsg4), and `refused`: a call the
/// kernel refuses (EPERM), the worst case of the refusal observer for
/// processes outside agents.
pub const OPS: [&str; 6] = ["unlink", "connect", "open", "rename", "udp", "refused"];
/// (key, description, place, whether the guard is loaded)
const CASES: [(&str, &str, Place, bool); 4] = [
    ("none", "no guard", Place::Outside, false),
    (
        "outside",
        "guard loaded, not an agent",
        Place::Outside,
        true,
    ),
    ("agent_kernel", "agent, kernel path", Place::Agent, true),
    (
        "agent_seccomp",
        "agent, under `run` (seccomp)",
        Place::Run,
        true,
    ),
];

pub(super) fn job(
    ctx: &Ctx,
    op: &str,
    case: &str,
    round: u32,
    ports: Ports,
    calls: u32,
) -> Vec<String> {
    let dir = |what: &str| {
        ctx.work_dir()
            .join(format!("{what}-{case}-{round}"))
            .display()
            .to_string()
    };
    let (flag, value) = match op {
        "refused" => return vec!["refused".into(), "--count".into(), calls.to_string()],
        "unlink" | "open" | "rename" => ("--dir", dir(op)),
        "udp" => ("--port", ports.udp.to_string()),
        _ => ("--port", ports.tcp.to_string()),
    };
    vec![
        op.into(),
        flag.into(),
        value,
        "--count".into(),
        calls.to_string(),
    ]
}

/// The loopback listeners the workloads send to.
#[derive(Clone, Copy)]
pub struct Ports {
    pub tcp: u16,
    pub udp: u16,
}

pub(super) fn add_stats(total: &mut BTreeMap<String, (u64, u64)>, d: &BenchDaemon) -> Result<()> {
    for (name, (cnt, ns)) in d.prog_stats()? {
        let e = total.entry(name).or_insert((0, 0));
        e.0 += cnt;
        e.1 += ns;
    }
    Ok(())
}

pub fn hooks_json(total: &BTreeMap<String, (u64, u64)>) -> Value {
    total
        .iter()
        .map(|(name, (cnt, ns))| {
            let per = if *cnt > 0 {
                Some(*ns as f64 / *cnt as f64)
            } else {
                None
            };
            (
                name.clone(),
                json!({ "run_cnt": cnt, "run_time_ns": ns, "ns_per_call": per }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub fn hook_rows(phase: &str, total: &BTreeMap<String, (u64, u64)>, rows: &mut Vec<Row>) {
    for (name, (cnt, ns)) in total {
        if *cnt > 0 {
            rows.push(Row::new(
                format!("kernel cost of {name} ({phase}, {cnt} runs)"),
                format!("{:.0} ns/call", *ns as f64 / *cnt as f64),
            ));
        }
    }
}

/// The operations `args` asks for, in the table's order.
fn ops(args: &BenchArgs) -> impl Iterator<Item = &'static str> + '_ {
    OPS.into_iter()
        .filter(|op| args.ops.is_empty() || args.ops.iter().any(|o| o == op))
}

pub fn latency(ctx: &Ctx, args: &BenchArgs, ports: Ports, rows: &mut Vec<Row>) -> Result<Value> {
    let policy = format!(
        "{DAEMON_TOML}{}",
        agent_toml(ctx, "bench", "default = \"allow\"")
    );
    // (op, case) -> ns per call, one per round: mean, and typical call.
    let mut ns: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut typical: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut hooks = BTreeMap::new();
    for round in 0..args.rounds {
        eprintln!("bench:   round {}/{}", round + 1, args.rounds);
        let mut daemon: Option<BenchDaemon> = None;
        for (case, _, place, guarded) in CASES {
            if guarded && daemon.is_none() {
                let d = BenchDaemon::start(&ctx.daemon_bin, &ctx.daemon_dir("latency"), &policy)?;
                ctx.make_direct("bench")?;
                daemon = Some(d);
            }
            for op in ops(args) {
                let calls = if place == Place::Run && matches!(op, "unlink" | "rename") {
                    args.seccomp_calls
                } else {
                    args.calls
                };
                let out = ctx.work(
                    place,
                    daemon.as_ref(),
                    "bench",
                    &job(ctx, op, case, round, ports, calls),
                )?;
                let v = out["ns_per_op"]
                    .as_f64()
                    .context("workload result without ns_per_op")?;
                ns.entry((op, case)).or_default().push(v);
                let t = out["ns_per_op_typical"].as_f64().unwrap_or(f64::NAN);
                typical.entry((op, case)).or_default().push(t);
            }
        }
        if let Some(d) = daemon {
            add_stats(&mut hooks, &d)?;
            ctx.remove_direct("bench");
            d.stop()?;
        }
    }
    let mut out = serde_json::Map::new();
    for op in ops(args) {
        let base = ns.get(&(op, "none")).cloned().unwrap_or_default();
        let base_t = typical.get(&(op, "none")).cloned().unwrap_or_default();
        let mut cases = serde_json::Map::new();
        for (case, what, _, _) in CASES {
            let v = ns.get(&(op, case)).cloned().unwrap_or_default();
            let t = typical.get(&(op, case)).cloned().unwrap_or_default();
            // Paired per round, so drift between rounds cancels.
            let ratios: Vec<f64> = v.iter().zip(&base).map(|(a, b)| a / b).collect();
            let ratios_t: Vec<f64> = t.iter().zip(&base_t).map(|(a, b)| a / b).collect();
            let ratio = median(&ratios);
            let mut row = Row::new(format!("{op}: {what}"), us(median(&v)))
                .ratio(ratio)
                .typical(median(&ratios_t));
            match case {
                "outside" => row = row.target("<= 1.01 (no cost)", ratio <= 1.01),
                // Every rename under seccomp reaches the supervisor (a
                // filter cannot read paths): no 5% target there.
                "agent_seccomp" if op == "rename" => {}
                // A supervised delete is a round trip through the daemon,
                // which performs it: issue 15 asks at most 5x the bare call.
                "agent_seccomp" if op == "unlink" => {
                    row = row.target("<= 5", ratio <= 5.0);
                }
                "agent_kernel" | "agent_seccomp" => {
                    row = row.target("<= 1.05", ratio <= 1.05);
                }
                _ => {}
            }
            rows.push(row);
            cases.insert(
                case.into(),
                json!({ "what": what, "ns_per_call_rounds": v, "ns_per_call_median": median(&v),
                        "ratio_to_none_rounds": ratios, "ratio_to_none_median": ratio,
                        "typical_ns_per_call_rounds": t, "typical_ratio_to_none_rounds": ratios_t,
                        "typical_ratio_to_none_median": median(&ratios_t) }),
            );
        }
        out.insert(op.into(), cases.into());
    }
    hook_rows("latency cases", &hooks, rows);
    out.insert("hooks".into(), hooks_json(&hooks));
    Ok(out.into())
}

pub fn approval(ctx: &Ctx, args: &BenchArgs, rows: &mut Vec<Row>) -> Result<Value> {
    let port = super::listener()?;
    let connect = format!("default = \"allow\"\nask = [\"127.0.0.1/32:{port}\"]");
    let policy = format!("{DAEMON_TOML}{}", agent_toml(ctx, "bench", &connect));
    let d = BenchDaemon::start(&ctx.daemon_bin, &ctx.daemon_dir("approval"), &policy)?;
    ctx.make_direct("bench")?;
    let result = (|| {
        let approver = approver::spawn(&d.socket, "bench", args.holds as usize)?;
        let out = ctx.work(
            Place::Agent,
            Some(&d),
            "bench",
            &[
                "held-connect".into(),
                "--port".into(),
                port.to_string(),
                "--count".into(),
                args.holds.to_string(),
            ],
        )?;
        let approvals = approver
            .join()
            .map_err(|_| anyhow::anyhow!("the approver panicked"))??;
        let returned: Vec<u64> = serde_json::from_value(out["returned_boot_ns"].clone())?;
        if returned.len() != approvals.len() {
            bail!(
                "{} connects returned but {} holds were approved",
                returned.len(),
                approvals.len()
            );
        }
        let mut hooks = BTreeMap::new();
        add_stats(&mut hooks, &d)?;
        Ok((approvals, returned, hooks))
    })();
    ctx.remove_direct("bench");
    d.stop()?;
    let (approvals, returned, hooks) = result?;
    let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e6;
    let total: Vec<f64> = approvals
        .iter()
        .zip(&returned)
        .map(|(a, r)| ms(a.hold_ns, *r))
        .collect();
    let notify: Vec<f64> = approvals.iter().map(|a| ms(a.hold_ns, a.seen_ns)).collect();
    let after: Vec<f64> = approvals
        .iter()
        .zip(&returned)
        .map(|(a, r)| ms(a.decided_ns, *r))
        .collect();
    let fmt = |v: f64| format!("{v:.3} ms");
    for p in [50.0, 99.0] {
        let v = percentile(&total, p);
        rows.push(
            Row::new(format!("approval: hold -> call returned, p{p}"), fmt(v))
                .target("<= 2 ms", v <= 2.0),
        );
    }
    rows.push(Row::new(
        "approval: hold -> approver sees it, p50 / p99",
        format!(
            "{:.3} / {:.3} ms",
            percentile(&notify, 50.0),
            percentile(&notify, 99.0)
        ),
    ));
    rows.push(Row::new(
        "approval: decision sent -> call returned, p50 / p99",
        format!(
            "{:.3} / {:.3} ms",
            percentile(&after, 50.0),
            percentile(&after, 99.0)
        ),
    ));
    hook_rows("approval case", &hooks, rows);
    let dist = |v: &[f64]| json!({ "p50_ms": percentile(v, 50.0), "p99_ms": percentile(v, 99.0), "max_ms": percentile(v, 100.0) });
    Ok(json!({
        "holds": approvals.len(),
        "hold_to_return": dist(&total),
        "hold_to_approver": dist(&notify),
        "decision_to_return": dist(&after),
        "hooks": hooks_json(&hooks),
    }))
}
