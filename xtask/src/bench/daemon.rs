//! A real `agent-guard daemon` for the bench: started with a policy in a
//! scratch directory, its event stream counted (not stored: a million
//! events must not cost the bench gigabytes), its memory and its programs'
//! kernel run-time statistics read from /proc.
use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{BufRead as _, BufReader},
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Bound for start-up and shutdown; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);

/// What the daemon's stdout has carried so far.
#[derive(Default)]
pub struct Counts {
    pub lines: AtomicU64,
    /// Delete-observer events (one per flood call).
    pub observed: AtomicU64,
    /// Supervised unlinks the policy allowed (one per call under `run`).
    pub supervised: AtomicU64,
    /// Sum of `loss.count` over `loss` events.
    pub lost: AtomicU64,
    started: (Mutex<bool>, Condvar),
}

pub struct BenchDaemon {
    child: Child,
    pub socket: PathBuf,
    dir: PathBuf,
    pub counts: Arc<Counts>,
}

impl BenchDaemon {
    pub fn start(bin: &Path, dir: &Path, policy: &str) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let socket = dir.join("control.sock");
        let policy_path = dir.join("policy.toml");
        std::fs::write(&policy_path, policy).context("writing the bench policy")?;
        let mut child = Command::new(bin)
            .arg("--socket")
            .arg(&socket)
            .arg("daemon")
            .arg("--policy")
            .arg(&policy_path)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("AGENT_GUARD_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("daemon stdout")?;
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        thread::spawn(move || count_lines(stdout, &c));
        let mut daemon = Self {
            child,
            socket,
            dir: dir.to_path_buf(),
            counts,
        };
        let deadline = Instant::now() + PATIENCE;
        let (lock, cvar) = &daemon.counts.started;
        let mut started = lock.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        while !*started {
            if let Some(status) = daemon.child.try_wait()? {
                bail!("the daemon exited during start-up ({status}); see its log above");
            }
            if Instant::now() > deadline {
                bail!("the daemon did not start within {PATIENCE:?}");
            }
            started = cvar
                .wait_timeout(started, Duration::from_millis(100))
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .0;
        }
        drop(started);
        // Start-up is done; drop what it allocated transiently from the count.
        daemon.counts.lines.store(0, Ordering::SeqCst);
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB (VmRSS).
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS missing from /proc/PID/status")
    }

    /// CPU time the daemon has used so far (all its threads, user and
    /// system, including threads that have ended), in ns. /proc/PID/stat
    /// counts it in clock ticks (10 ms), so measure over seconds of work.
    pub fn cpu_ns(&self) -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("/proc/PID/stat without a comm")?
            .1
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15; the list starts at field 3.
        let ticks = |i: usize| -> Result<u64> {
            Ok(fields
                .get(i)
                .context("/proc/PID/stat is short")?
                .parse::<u64>()?)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok((ticks(11)? + ticks(12)?) * 1_000_000_000 / hz)
    }

    /// (run count, run time ns) per program name, for the programs this
    /// daemon holds: prog fds in /proc/PID/fdinfo carry the kernel's own
    /// statistics (kernel.bpf_stats_enabled) and the program id, and the
    /// program's name comes from the kernel's program info.
    pub fn prog_stats(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        let mut by_id: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let dir = format!("/proc/{}/fdinfo", self.pid());
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let Ok(text) = std::fs::read_to_string(entry?.path()) else {
                continue;
            };
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if let (Some(id), Some(cnt), Some(ns)) =
                (field("prog_id:"), field("run_cnt:"), field("run_time_ns:"))
            {
                by_id.insert(id as u32, (cnt, ns));
            }
        }
        let mut out = BTreeMap::new();
        for info in aya::programs::loaded_programs().flatten() {
            if let Some(stats) = by_id.get(&info.id()) {
                let name = info.name_as_str().unwrap_or("?").to_owned();
                let e = out.entry(name).or_insert((0, 0));
                e.0 += stats.0;
                e.1 += stats.1;
            }
        }
        Ok(out)
    }

    /// Waits until the stream has carried `n` observed events, or has been
    /// quiet for `quiet`; returns how many it carried.
    pub fn wait_observed(&self, n: u64, quiet: Duration) -> u64 {
        self.wait_count(&self.counts.observed, n, quiet)
    }

    /// Waits until `count` reaches `n`, or the stream has been quiet for
    /// `quiet`; returns the count.
    pub fn wait_count(&self, count: &AtomicU64, n: u64, quiet: Duration) -> u64 {
        let mut last = self.counts.lines.load(Ordering::SeqCst);
        let mut since = Instant::now();
        loop {
            let seen = count.load(Ordering::SeqCst);
            if seen >= n {
                return seen;
            }
            thread::sleep(Duration::from_millis(20));
            let now = self.counts.lines.load(Ordering::SeqCst);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return count.load(Ordering::SeqCst);
            }
        }
    }

    /// SIGTERM, wait, unmount its bpffs and remove its directory.
    pub fn stop(mut self) -> Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the daemon ignored SIGTERM for {PATIENCE:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        if let Ok(state) = CString::new(self.dir.join("state/bpf").as_os_str().as_bytes()) {
            // SAFETY: NUL-terminated path; failure (not mounted) is fine.
            unsafe { libc::umount2(state.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

fn count_lines(stdout: std::process::ChildStdout, counts: &Counts) {
    let mut reader = BufReader::with_capacity(1 << 20, stdout);
    let mut line = Vec::with_capacity(4096);
    let has = |line: &[u8], needle: &[u8]| line.windows(needle.len()).any(|w| w == needle);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        counts.lines.fetch_add(1, Ordering::SeqCst);
        if has(&line, br#""outcome":"observed""#) {
            counts.observed.fetch_add(1, Ordering::SeqCst);
        } else if has(&line, br#""kind":"file.unlink""#) && has(&line, br#""outcome":"allowed""#) {
            counts.supervised.fetch_add(1, Ordering::SeqCst);
        } else if has(&line, br#""kind":"loss""#) {
            let n = serde_json::from_slice::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["loss"]["count"].as_u64())
                .unwrap_or(1);
            counts.lost.fetch_add(n, Ordering::SeqCst);
        } else if has(&line, br#""kind":"daemon.start""#) {
            let (lock, cvar) = &counts.started;
            if let Ok(mut s) = lock.lock() {
                *s = true;
                cvar.notify_all();
            }
        }
    }
}

/// Where cgroup2 is mounted (the daemon's own discovery: hybrid hosts
/// have it beside the v1 controllers, so it is never assumed).
pub fn cgroup2_root() -> Result<PathBuf> {
    Ok(guard_host::cgroup::Hierarchy::discover()?
        .root()
        .to_path_buf())
}

/// Makes `cmd` join cgroup `dir` before it execs, as agent-guard's own
/// launcher does (writing "0" to cgroup.procs moves the writer).
pub fn in_cgroup(cmd: &mut Command, dir: &Path) -> Result<()> {
    let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())?;
    // SAFETY: the hook only makes async-signal-safe calls (open, write,
    // close) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if ok { Ok(()) } else { Err(err) }
        });
    }
    Ok(())
}
