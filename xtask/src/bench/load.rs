//! Event throughput and the daemon's memory.
//!
//! The event source is the cheapest call that makes one: an agent process
//! unlinking a path that does not exist. On a kernel without BPF LSM the
//! delete observer (tp_btf/sys_enter) reports every such call, so the
//! source costs about a microsecond per event and the daemon's side is what
//! is measured.
use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    Ctx, Place,
    cases::{DAEMON_TOML, agent_toml, hook_rows, hooks_json},
    daemon::BenchDaemon,
    report::Row,
};

/// Seconds each paced trial runs: long enough that a reader slower than
/// the source overflows the 4 MiB ring buffer rather than hiding in it.
const TRIAL_SECS: f64 = 3.0;
/// How long a quiet stream counts as drained.
const QUIET: Duration = Duration::from_millis(700);

#[derive(Clone, Copy)]
struct Trial {
    target: f64,
    achieved: f64,
    generated: u64,
    delivered: u64,
    /// What the daemon itself reported in `loss` events.
    reported_lost: u64,
    /// The daemon's CPU time from the start of the flood until its events
    /// were written (or the stream went quiet).
    cpu_ns: u64,
}

impl Trial {
    fn lost(&self) -> u64 {
        self.generated.saturating_sub(self.delivered)
    }

    /// The daemon's CPU per event it wrote, in ns.
    fn cpu_per_event(&self) -> f64 {
        self.cpu_ns as f64 / self.delivered.max(1) as f64
    }

    fn json(&self) -> Value {
        json!({ "target_per_s": self.target, "achieved_per_s": self.achieved,
                "generated": self.generated, "delivered": self.delivered,
                "lost": self.lost(), "reported_lost": self.reported_lost,
                "daemon_cpu_ns": self.cpu_ns,
                "daemon_cpu_ns_per_event": self.cpu_per_event() })
    }
}

fn flood(
    ctx: &Ctx,
    d: &BenchDaemon,
    agent: &str,
    rate: f64,
    secs: f64,
    count: u64,
) -> Result<Trial> {
    let seen = d.counts.observed.load(Ordering::SeqCst);
    let lost = d.counts.lost.load(Ordering::SeqCst);
    let cpu = d.cpu_ns()?;
    let mut job = vec![
        "flood".to_owned(),
        "--rate".into(),
        (rate as u64).to_string(),
    ];
    if secs > 0.0 {
        job.extend(["--secs".into(), secs.to_string()]);
    }
    if count != u64::MAX {
        job.extend(["--count".into(), count.to_string()]);
    }
    let out = ctx.work(Place::Agent, Some(d), agent, &job)?;
    let generated = out["calls"].as_u64().context("flood result")?;
    let delivered = d.wait_observed(seen + generated, QUIET) - seen;
    let cpu_ns = d.cpu_ns()?.saturating_sub(cpu);
    // The loss poller reports every 500 ms.
    std::thread::sleep(Duration::from_millis(600));
    Ok(Trial {
        target: rate,
        achieved: out["rate"].as_f64().unwrap_or(0.0),
        generated,
        delivered,
        reported_lost: d.counts.lost.load(Ordering::SeqCst) - lost,
        cpu_ns,
    })
}

pub fn throughput(ctx: &Ctx, rows: &mut Vec<Row>) -> Result<Value> {
    let policy = format!(
        "{DAEMON_TOML}{}",
        agent_toml(ctx, "bench", "default = \"allow\"")
    );
    let d = BenchDaemon::start(&ctx.daemon_bin, &ctx.daemon_dir("throughput"), &policy)?;
    ctx.make_direct("bench")?;
    let result = ladder(ctx, &d);
    let mut hooks = BTreeMap::new();
    if let Ok(stats) = d.prog_stats() {
        hooks = stats;
    }
    ctx.remove_direct("bench");
    d.stop()?;
    let (trials, best, double) = result?;
    let sustained = best.as_ref().map_or(0.0, |t| t.achieved);
    rows.push(
        Row::new(
            "events: highest sustained rate with zero loss",
            format!("{:.0}/s", sustained),
        )
        .target(">= 500000/s", sustained >= 500_000.0),
    );
    let zero_at_100k = trials
        .iter()
        .filter(|t| (t.target - 100_000.0).abs() < 1.0)
        .all(|t| t.lost() == 0 && t.achieved >= 0.95 * t.target)
        && trials.iter().any(|t| (t.target - 100_000.0).abs() < 1.0);
    rows.push(
        Row::new(
            "events: loss at 100000/s",
            trials
                .iter()
                .find(|t| (t.target - 100_000.0).abs() < 1.0)
                .map_or("not reached".into(), |t| {
                    format!("{} of {}", t.lost(), t.generated)
                }),
        )
        .target("0", zero_at_100k),
    );
    if let Some(t) = &best {
        rows.push(
            Row::new(
                format!("events: daemon CPU per event at {:.0}/s", t.achieved),
                super::report::us(t.cpu_per_event()),
            )
            .target("<= 3 µs", t.cpu_per_event() <= 3000.0),
        );
    }
    if let Some(t) = &double {
        rows.push(Row::new(
            format!("events: loss rate at 2x ({:.0}/s offered)", t.achieved),
            format!(
                "{:.1}%",
                100.0 * t.lost() as f64 / t.generated.max(1) as f64
            ),
        ));
    }
    hook_rows("event flood", &hooks, rows);
    Ok(json!({
        "sustained_events_per_s": sustained,
        "trial_secs": TRIAL_SECS,
        "trials": trials.iter().map(Trial::json).collect::<Vec<_>>(),
        "at_2x": double.as_ref().map(Trial::json),
        "hooks": hooks_json(&hooks),
    }))
}

type Ladder = (Vec<Trial>, Option<Trial>, Option<Trial>);

/// Doubles the offered rate until events are lost (or the source cannot
/// offer more), bisects twice between the last good and the first bad
/// rate, then offers twice the best.
fn ladder(ctx: &Ctx, d: &BenchDaemon) -> Result<Ladder> {
    let mut trials: Vec<Trial> = Vec::new();
    let mut good: Option<usize> = None;
    let mut bad: Option<f64> = None;
    let ok = |t: &Trial| t.lost() == 0 && t.achieved >= 0.95 * t.target;
    let mut rate = 5_000.0;
    while rate <= 1_600_000.0 {
        let t = flood(ctx, d, "bench", rate, TRIAL_SECS, u64::MAX)?;
        eprintln!(
            "bench:   offered {:.0}/s (achieved {:.0}/s): {} of {} delivered",
            t.target, t.achieved, t.delivered, t.generated
        );
        let fine = ok(&t);
        trials.push(t);
        if !fine {
            bad = Some(rate);
            break;
        }
        good = Some(trials.len() - 1);
        // Make sure the 100k point of the target is measured exactly.
        rate = if rate < 100_000.0 && rate * 2.0 > 100_000.0 {
            100_000.0
        } else {
            rate * 2.0
        };
    }
    if let (Some(hi), Some(lo)) = (bad, good.map(|i| trials[i].target)) {
        let (mut lo, mut hi) = (lo, hi);
        for _ in 0..2 {
            let mid = (lo + hi) / 2.0;
            let t = flood(ctx, d, "bench", mid, TRIAL_SECS, u64::MAX)?;
            eprintln!(
                "bench:   offered {:.0}/s (achieved {:.0}/s): {} of {} delivered",
                t.target, t.achieved, t.delivered, t.generated
            );
            if ok(&t) {
                lo = mid;
                trials.push(t);
                good = Some(trials.len() - 1);
            } else {
                hi = mid;
                trials.push(t);
            }
        }
    }
    let double = match good {
        Some(i) => {
            let t = flood(
                ctx,
                d,
                "bench",
                trials[i].achieved * 2.0,
                TRIAL_SECS,
                u64::MAX,
            )?;
            eprintln!(
                "bench:   2x: offered {:.0}/s (achieved {:.0}/s): {} of {} delivered",
                t.target, t.achieved, t.delivered, t.generated
            );
            Some(t)
        }
        None => None,
    };
    let best = good.map(|i| trials[i]);
    Ok((trials, best, double))
}

/// One agent process unlinks `count` times as fast as it can (the
/// wiped-drive incident): every call should become an event, and whatever
/// is lost must be reported exactly. Also the daemon's CPU per event it
/// wrote, the measure of the event path's cost.
pub fn burst(ctx: &Ctx, count: u64, rows: &mut Vec<Row>) -> Result<Value> {
    let policy = format!(
        "{DAEMON_TOML}{}",
        agent_toml(ctx, "burst", "default = \"allow\"")
    );
    let d = BenchDaemon::start(&ctx.daemon_bin, &ctx.daemon_dir("burst"), &policy)?;
    ctx.make_direct("burst")?;
    let result = flood(ctx, &d, "burst", 0.0, 0.0, count);
    ctx.remove_direct("burst");
    d.stop()?;
    let t = result?;
    loss_rows(&t, "", rows);
    rows.push(
        Row::new(
            "events: daemon CPU per event written (burst)",
            super::report::us(t.cpu_per_event()),
        )
        .target("<= 3 µs", t.cpu_per_event() <= 3000.0),
    );
    Ok(t.json())
}

/// The same burst through `agent-guard run`: one process under `run`
/// unlinks `count` files it made (a missing file is refused before the
/// policy is asked, so it would make no event), each one a supervised call
/// answered by the daemon. The caller waits for each answer, so the source
/// cannot outrun the supervisor; what could still be lost is lines the
/// sinks drop, which the daemon reports.
pub fn run_burst(ctx: &Ctx, count: u32, rows: &mut Vec<Row>) -> Result<Value> {
    let policy = format!(
        "{DAEMON_TOML}{}",
        agent_toml(ctx, "runburst", "default = \"allow\"")
    );
    let d = BenchDaemon::start(&ctx.daemon_bin, &ctx.daemon_dir("run-burst"), &policy)?;
    let dir = ctx.work_dir().join("run-burst");
    let job = [
        "unlink".to_owned(),
        "--dir".into(),
        dir.display().to_string(),
        "--count".into(),
        count.to_string(),
    ];
    let result = (|| {
        let seen = d.counts.supervised.load(Ordering::SeqCst);
        let lost = d.counts.lost.load(Ordering::SeqCst);
        let cpu = d.cpu_ns()?;
        let out = ctx.work(Place::Run, Some(&d), "runburst", &job)?;
        let delivered = d.wait_count(&d.counts.supervised, seen + u64::from(count), QUIET) - seen;
        let cpu_ns = d.cpu_ns()?.saturating_sub(cpu);
        std::thread::sleep(Duration::from_millis(600));
        let ns_per_op = out["ns_per_op"].as_f64().unwrap_or(0.0);
        Ok::<_, anyhow::Error>(Trial {
            target: 0.0,
            achieved: if ns_per_op > 0.0 {
                1e9 / ns_per_op
            } else {
                0.0
            },
            generated: u64::from(count),
            delivered,
            reported_lost: d.counts.lost.load(Ordering::SeqCst) - lost,
            cpu_ns,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    d.stop()?;
    let t = result?;
    loss_rows(&t, " under `run`", rows);
    rows.push(Row::new(
        "events: daemon CPU per supervised unlink (burst under `run`)",
        super::report::us(t.cpu_per_event()),
    ));
    Ok(t.json())
}

/// Prints a burst's result and adds its two loss rows: nothing lost, and
/// what was lost equals what the daemon reported. `place` follows "burst"
/// in their names ("" or " under `run`").
fn loss_rows(t: &Trial, place: &str, rows: &mut Vec<Row>) {
    eprintln!(
        "bench:   burst{place} at {:.0}/s: {} of {} delivered, {} reported lost, daemon CPU {:.2} µs per event",
        t.achieved,
        t.delivered,
        t.generated,
        t.reported_lost,
        t.cpu_per_event() / 1000.0
    );
    rows.push(
        Row::new(
            format!(
                "events: burst of {} unlinks{place} ({:.0}/s), lost",
                t.generated, t.achieved
            ),
            format!("{} ({} reported)", t.lost(), t.reported_lost),
        )
        .target("0", t.lost() == 0),
    );
    rows.push(
        Row::new(
            format!("events: burst{place}, lost = reported lost"),
            format!("{} = {}", t.lost(), t.reported_lost),
        )
        .target("exact", t.lost() == t.reported_lost),
    );
}

pub fn memory(ctx: &Ctx, args: &super::BenchArgs, rate: f64, rows: &mut Vec<Row>) -> Result<Value> {
    let connect = "default = \"deny\"\nallow = [\"127.0.0.1/32:*\", \"10.0.0.0/8:443\"]\nask = [\"10.1.0.0/16:22\"]";
    let mut policy = DAEMON_TOML.to_owned();
    for i in 0..100 {
        policy.push_str(&agent_toml(ctx, &format!("a{i:03}"), connect));
    }
    let d = BenchDaemon::start(&ctx.daemon_bin, &ctx.daemon_dir("memory"), &policy)?;
    ctx.make_direct("a000")?;
    let result = (|| {
        std::thread::sleep(Duration::from_millis(500));
        let start = d.rss_kib()?;
        // Paced a little below the sustained rate so the count is reached
        // without losses inflating the run.
        let pace = if rate > 0.0 { rate * 0.9 } else { 20_000.0 };
        let mut delivered = 0;
        let mut generated = 0;
        while delivered < args.rss_events {
            let t = flood(ctx, &d, "a000", pace, 0.0, args.rss_events - delivered)?;
            if t.delivered == 0 {
                anyhow::bail!("the daemon stopped delivering events after {delivered}");
            }
            delivered += t.delivered;
            generated += t.generated;
        }
        let after = d.rss_kib()?;
        Ok((start, after, generated, delivered))
    })();
    ctx.remove_direct("a000");
    d.stop()?;
    let (start, after, generated, delivered) = result?;
    let mb = |kib: u64| kib as f64 / 1024.0;
    rows.push(
        Row::new(
            "daemon RSS, 100 agents, at start",
            format!("{:.1} MiB", mb(start)),
        )
        .target("<= 30 MB", (start as f64) * 1024.0 <= 30e6),
    );
    rows.push(
        Row::new(
            format!("daemon RSS, 100 agents, after {delivered} events"),
            format!("{:.1} MiB", mb(after)),
        )
        .target("<= 30 MB", (after as f64) * 1024.0 <= 30e6),
    );
    let growth = after.saturating_sub(start);
    rows.push(
        Row::new(
            format!("daemon RSS growth over {delivered} events"),
            format!("{:.1} MiB", mb(growth)),
        )
        .target("<= 5 MB", (growth as f64) * 1024.0 <= 5e6),
    );
    Ok(json!({
        "agents": 100,
        "rss_kib_start": start,
        "rss_kib_after": after,
        "events_generated": generated,
        "events_delivered": delivered,
    }))
}
