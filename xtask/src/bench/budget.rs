//! What a budget costs in the kernel: the same agent calls by an agent
//! with and without an `[agent.budget]` (one that never runs out), each
//! hook's time per call from bpf_stats, paired per round in one run.
use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    BenchArgs, Ctx, Place,
    cases::{DAEMON_TOML, Ports, add_stats, agent_toml, job},
    daemon::BenchDaemon,
    report::{Row, median},
};

/// Calls the budget counts on every kernel (connect4, sendmsg4), and
/// unlink where BPF LSM sees it.
const OPS: [&str; 3] = ["connect", "udp", "unlink"];

pub fn budget(ctx: &Ctx, args: &BenchArgs, ports: Ports, rows: &mut Vec<Row>) -> Result<Value> {
    let plain = format!(
        "{DAEMON_TOML}{}",
        agent_toml(ctx, "bench", "default = \"allow\"")
    );
    // Counted on every call, never spent: more than a bench run makes.
    let budgeted =
        format!("{plain}\n[agent.budget]\ndeletes = \"1000000/h\"\nconnects = \"1000000/h\"\n");
    // (hook, case) -> ns per call, one per round.
    let mut per: BTreeMap<(String, &str), Vec<f64>> = BTreeMap::new();
    for round in 0..args.rounds {
        eprintln!("bench:   budget round {}/{}", round + 1, args.rounds);
        for (case, policy) in [("without", &plain), ("with", &budgeted)] {
            let d = BenchDaemon::start(&ctx.daemon_bin, &ctx.daemon_dir("budget"), policy)?;
            ctx.make_direct("bench")?;
            for op in OPS {
                ctx.work(
                    Place::Agent,
                    Some(&d),
                    "bench",
                    &job(ctx, op, case, round, ports, args.calls),
                )?;
            }
            let mut hooks = BTreeMap::new();
            add_stats(&mut hooks, &d)?;
            ctx.remove_direct("bench");
            d.stop()?;
            for (hook, (cnt, ns)) in hooks {
                if cnt >= u64::from(args.calls) {
                    per.entry((hook, case))
                        .or_default()
                        .push(ns as f64 / cnt as f64);
                }
            }
        }
    }
    let mut out = serde_json::Map::new();
    let mut hooks: Vec<String> = per.keys().map(|(h, _)| h.clone()).collect();
    hooks.dedup();
    for hook in &hooks {
        let (Some(without), Some(with)) = (
            per.get(&(hook.clone(), "without")),
            per.get(&(hook.clone(), "with")),
        ) else {
            continue;
        };
        // Paired per round, so drift between rounds cancels.
        let diffs: Vec<f64> = with.iter().zip(without).map(|(a, b)| a - b).collect();
        let cost = median(&diffs);
        rows.push(
            Row::new(
                format!("budget accounting in {hook}"),
                format!("{cost:+.0} ns/call"),
            )
            .target("<= 100 ns", cost <= 100.0),
        );
        out.insert(
            hook.clone(),
            json!({ "ns_per_call_without": without, "ns_per_call_with": with,
                    "cost_ns_rounds": diffs, "cost_ns_median": cost }),
        );
    }
    Ok(out.into())
}
