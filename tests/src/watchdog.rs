//! A bound on every privileged test. libtest has no per-test timeout, so a
//! wait that never returns (a held call nobody releases, a child that
//! never prints) would hang the whole run until CI's own limit kills it,
//! with nothing said about where. The watchdog turns that into a failure
//! within [`LIMIT`] that names the test and shows what its agent processes
//! were doing, then kills them and exits the test binary.
use std::{
    fs,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// Straight to the process's stderr: libtest captures `eprintln!` in the
/// test's threads, and the capture is lost when the binary exits.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Far above the slowest test (about 100 s in a loaded guest): only a hang
/// reaches it. `AGENT_GUARD_TEST_LIMIT_SECS` overrides it.
const LIMIT: Duration = Duration::from_secs(600);

fn limit() -> Duration {
    std::env::var("AGENT_GUARD_TEST_LIMIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(LIMIT, Duration::from_secs)
}

/// Armed for one test; disarmed on drop.
pub struct Watchdog {
    done: Arc<AtomicBool>,
    thread: thread::Thread,
}

impl Watchdog {
    /// Watches the test that owns `cgroup_dir` (its cgroup prefix); libtest
    /// names the thread after the test.
    pub fn arm(cgroup_dir: &Path) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let test = thread::current().name().unwrap_or("?").to_owned();
        let dir = cgroup_dir.to_path_buf();
        let handle = thread::spawn(move || {
            let deadline = Instant::now() + limit();
            loop {
                if flag.load(Ordering::Acquire) {
                    return;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                thread::park_timeout(deadline - now);
            }
            fire(&test, &dir);
        });
        Self {
            done,
            thread: handle.thread().clone(),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

fn fire(test: &str, dir: &Path) -> ! {
    say!(
        "watchdog: test {test} still running after {} s: something waits without a bound. \
         Its cgroups ({}) hold:",
        limit().as_secs(),
        dir.display()
    );
    describe(dir);
    // Stopped (held) agents would otherwise outlive the test binary, and so
    // would its daemons: SIGTERM lets a daemon detach and unpin.
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    for child in children() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    thread::sleep(Duration::from_secs(2));
    say!("watchdog: killed them and signalled this binary's daemons; ending this test binary");
    std::process::exit(101);
}

/// This test binary's child processes (daemons and helpers of every test
/// in it).
fn children() -> Vec<i32> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Every process under `dir`: its cgroup and command line, then each of
/// its threads as [`crate::tasks_report`] gives them.
fn describe(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|p| p.parse::<u32>().ok()) {
            say!(
                "watchdog:   pid {pid} in {} cmdline {:?}\n{}",
                dir.display(),
                guard_host::proc::cmdline(pid).unwrap_or_default(),
                crate::tasks_report(pid),
            );
        }
    }
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            describe(&e.path());
        }
    }
}
