//! `cargo xtask bench`: what the guard costs, measured against no guard in
//! one run. Every figure is a median over rounds, and the cases of a round
//! run one after another (no guard, then the guarded cases, then no guard
//! again in the next round), so drift of a shared machine hits all alike.
mod approver;
mod budget;
mod cases;
mod daemon;
mod load;
mod report;
pub mod worker;

use std::{
    net::TcpListener,
    os::fd::FromRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::{build::workspace_root, setup};
use daemon::BenchDaemon;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Rounds per latency case; each figure is the median over rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Calls per latency case and round.
    #[arg(long, default_value_t = 20_000)]
    pub calls: u32,
    /// Calls per round for supervised (seccomp) deletes and renames, which
    /// cost about a hundred times more.
    #[arg(long, default_value_t = 2_000)]
    pub seccomp_calls: u32,
    /// Held connects approved in the round-trip case.
    #[arg(long, default_value_t = 200)]
    pub holds: u32,
    /// Events the daemon carries before its memory is measured again.
    #[arg(long, default_value_t = 1_000_000)]
    pub rss_events: u64,
    /// Only these operations in the latency phase (repeatable; all by
    /// default). `--op unlink --latency-only` measures supervised deletes
    /// against the bare call and nothing else.
    #[arg(long = "op", value_parser = clap::builder::PossibleValuesParser::new(cases::OPS))]
    pub ops: Vec<String>,
    /// Only the latency phase: no budget accounting, approval round trip,
    /// event throughput or memory phase (their rows and results are left
    /// out).
    #[arg(long)]
    pub latency_only: bool,
    /// Only the budget phase (what budget accounting costs per counted
    /// call): no latency, approval, throughput or memory phase.
    /// `--budget-only --daemon OLD` measures an older build's cost.
    #[arg(long, conflicts_with = "latency_only")]
    pub budget_only: bool,
    /// Only the event phases: the throughput ladder and the two bursts,
    /// kernel path and under `run` (the daemon's CPU per event and its
    /// loss), nothing else.
    #[arg(long, conflicts_with_all = ["latency_only", "budget_only"])]
    pub events_only: bool,
    /// Unlinks the burst phase makes, one agent process as fast as it can.
    #[arg(long, default_value_t = 1_000_000)]
    pub burst: u64,
    /// Unlinks the burst under `agent-guard run` makes (each one a
    /// supervised call; about a minute or two per million); 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    pub run_burst: u32,
    /// Measure this agent-guard binary (for example a release build of an
    /// older commit, to compare) instead of the one built from this tree;
    /// the workloads still come from this tree.
    #[arg(long, value_name = "PATH")]
    pub daemon: Option<PathBuf>,
}

/// Where a workload runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Outside every agent (the guard may or may not be loaded).
    Outside,
    /// In a cgroup below the agent's: the kernel programs judge it.
    Agent,
    /// Started by `agent-guard run`: deletes go through seccomp supervision.
    Run,
}

/// What every phase needs.
pub struct Ctx {
    pub daemon_bin: PathBuf,
    pub worker_bin: PathBuf,
    /// Scratch directory on tmpfs.
    pub scratch: PathBuf,
    /// Cgroup prefix (relative to the cgroup2 mount) for this run's agents.
    pub cgroups: String,
    pub cgroup_root: PathBuf,
}

impl Ctx {
    /// Runs one workload and returns its JSON result line.
    pub fn work(
        &self,
        place: Place,
        daemon: Option<&BenchDaemon>,
        agent: &str,
        job: &[String],
    ) -> Result<serde_json::Value> {
        let mut cmd = match (place, daemon) {
            (Place::Run, Some(d)) => {
                let mut c = Command::new(&self.daemon_bin);
                c.arg("--socket")
                    .arg(&d.socket)
                    .args(["run", "--agent", agent, "--"])
                    .arg(&self.worker_bin);
                c
            }
            (Place::Run, None) => bail!("`run` needs a daemon"),
            _ => Command::new(&self.worker_bin),
        };
        cmd.arg("bench-worker").args(job);
        if place == Place::Agent {
            daemon::in_cgroup(&mut cmd, &self.direct_cgroup(agent))?;
        }
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("starting a bench workload")?;
        if !out.status.success() {
            bail!("bench workload {job:?} failed: {}", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("workload {job:?} printed no result: {text:?}"))?;
        Ok(serde_json::from_str(line)?)
    }

    /// A cgroup below `agent`'s, for workloads the kernel path judges.
    pub fn direct_cgroup(&self, agent: &str) -> PathBuf {
        self.cgroup_root
            .join(&self.cgroups)
            .join(agent)
            .join("direct")
    }

    pub fn make_direct(&self, agent: &str) -> Result<()> {
        let dir = self.direct_cgroup(agent);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))
    }

    pub fn remove_direct(&self, agent: &str) {
        let _ = std::fs::remove_dir(self.direct_cgroup(agent));
    }

    pub fn daemon_dir(&self, name: &str) -> PathBuf {
        self.scratch.join(format!("daemon-{name}"))
    }

    /// Where workloads make their files. Made before any daemon starts: a
    /// run's Landlock ruleset (self-defense) grants the entries beside the
    /// daemon's state dir that exist when the run starts, so a workload
    /// directory made later beside it would be refused.
    pub fn work_dir(&self) -> PathBuf {
        self.scratch.join("work")
    }
}

/// A loopback listener that accepts and drops connections on a thread.
pub fn listener() -> Result<u16> {
    // std's listen backlog is small; a full accept queue would make connects
    // wait for SYN retransmits and wreck the timing, so listen with 4096.
    // SAFETY: plain socket calls on a fresh fd, handed to std right after.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
            || libc::listen(fd, 4096) != 0
        {
            bail!("bind/listen: {}", std::io::Error::last_os_error());
        }
        TcpListener::from_raw_fd(fd)
    };
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    Ok(port)
}

/// Turns on kernel.bpf_stats_enabled for the run and restores it after.
struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let before =
            std::fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        std::fs::write(BPF_STATS, "1").with_context(|| format!("enabling {BPF_STATS}"))?;
        Ok(Self { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, self.before.trim());
    }
}

fn build_release() -> Result<(PathBuf, PathBuf)> {
    eprintln!("bench: building agent-guard and the workloads (release)");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root()).args([
        "build",
        "--release",
        "--bin",
        "agent-guard",
        "--bin",
        "xtask",
    ]);
    setup::run(&mut cmd)?;
    let dir = workspace_root().join("target/release");
    Ok((dir.join("agent-guard"), dir.join("xtask")))
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    setup::setup()?;
    let (built, worker_bin) = build_release()?;
    let daemon_bin = match &args.daemon {
        Some(path) => std::fs::canonicalize(path)
            .with_context(|| format!("the daemon to measure, {}", path.display()))?,
        None => built,
    };
    let tag = format!("agent-guard-bench-{}", std::process::id());
    let ctx = Ctx {
        daemon_bin,
        worker_bin,
        scratch: Path::new("/dev/shm").join(&tag),
        cgroups: tag,
        cgroup_root: daemon::cgroup2_root()?,
    };
    let _ = std::fs::remove_dir_all(&ctx.scratch);
    std::fs::create_dir_all(ctx.work_dir())?;
    let stats = BpfStats::enable()?;
    let result = run_phases(&ctx, args);
    drop(stats);
    let _ = std::fs::remove_dir_all(&ctx.scratch);
    let _ = std::fs::remove_dir(ctx.cgroup_root.join(&ctx.cgroups));
    let (results, rows) = result?;
    println!();
    report::print(&rows);
    let path = workspace_root().join("target/bench/results.json");
    report::write_json(&path, &results, &rows)?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

fn run_phases(ctx: &Ctx, args: &BenchArgs) -> Result<(serde_json::Value, Vec<report::Row>)> {
    let mut rows = Vec::new();
    let port = listener()?;
    // A UDP socket nobody reads: datagrams past its buffer are dropped at
    // the receiver, which costs the sender nothing.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").context("udp listener")?;
    let ports = cases::Ports {
        tcp: port,
        udp: udp.local_addr()?.port(),
    };
    if args.budget_only {
        eprintln!("bench: budget accounting, {} rounds", args.rounds);
        let budget = budget::budget(ctx, args, ports, &mut rows)?;
        let results = json!({
            "machine": machine(),
            "args": { "rounds": args.rounds, "calls": args.calls, "budget_only": true, "daemon": daemon_arg(args) },
            "budget": budget,
        });
        return Ok((results, rows));
    }
    if args.events_only {
        eprintln!("bench: event throughput");
        let throughput = load::throughput(ctx, &mut rows)?;
        eprintln!("bench: event burst, {} unlinks", args.burst);
        let burst = load::burst(ctx, args.burst, &mut rows)?;
        let run_burst = run_burst(ctx, args, &mut rows)?;
        let results = json!({
            "machine": machine(),
            "args": { "burst": args.burst, "run_burst": args.run_burst, "events_only": true, "daemon": daemon_arg(args) },
            "throughput": throughput,
            "burst": burst,
            "run_burst": run_burst,
        });
        return Ok((results, rows));
    }
    eprintln!(
        "bench: latency, {} rounds x {} calls per case",
        args.rounds, args.calls
    );
    let latency = cases::latency(ctx, args, ports, &mut rows)?;
    if args.latency_only {
        let results = json!({
            "machine": machine(),
            "args": { "rounds": args.rounds, "calls": args.calls, "seccomp_calls": args.seccomp_calls, "ops": args.ops, "latency_only": true, "daemon": daemon_arg(args) },
            "latency": latency,
        });
        return Ok((results, rows));
    }
    eprintln!("bench: budget accounting, {} rounds", args.rounds);
    let budget = budget::budget(ctx, args, ports, &mut rows)?;
    eprintln!("bench: approval round trip, {} holds", args.holds);
    let approval = cases::approval(ctx, args, &mut rows)?;
    eprintln!("bench: event throughput");
    let throughput = load::throughput(ctx, &mut rows)?;
    let rate = throughput["sustained_events_per_s"].as_f64().unwrap_or(0.0);
    eprintln!("bench: event burst, {} unlinks", args.burst);
    let burst = load::burst(ctx, args.burst, &mut rows)?;
    let run_burst = run_burst(ctx, args, &mut rows)?;
    eprintln!(
        "bench: daemon memory, 100 agents, {} events",
        args.rss_events
    );
    let memory = load::memory(ctx, args, rate, &mut rows)?;
    let results = json!({
        "machine": machine(),
        "args": { "rounds": args.rounds, "calls": args.calls, "seccomp_calls": args.seccomp_calls, "holds": args.holds, "rss_events": args.rss_events, "burst": args.burst, "run_burst": args.run_burst, "daemon": daemon_arg(args) },
        "latency": latency,
        "budget": budget,
        "approval": approval,
        "throughput": throughput,
        "burst": burst,
        "run_burst": run_burst,
        "memory": memory,
    });
    Ok((results, rows))
}

/// The burst under `run`, unless `--run-burst 0`.
fn run_burst(
    ctx: &Ctx,
    args: &BenchArgs,
    rows: &mut Vec<report::Row>,
) -> Result<serde_json::Value> {
    if args.run_burst == 0 {
        return Ok(serde_json::Value::Null);
    }
    eprintln!("bench: event burst under `run`, {} unlinks", args.run_burst);
    load::run_burst(ctx, args.run_burst, rows)
}

/// The `--daemon` binary measured, if not this tree's.
fn daemon_arg(args: &BenchArgs) -> Option<String> {
    args.daemon.as_ref().map(|p| p.display().to_string())
}

fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned());
    json!({
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpu": model,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "bpf_lsm": read("/sys/kernel/security/lsm").contains("bpf"),
        // Other work on the machine shows here; ratios are paired per round
        // to cancel it, absolute times do not.
        "loadavg_at_end": read("/proc/loadavg").trim(),
    })
}
