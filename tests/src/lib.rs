//! Harness for the privileged black-box tests: each test starts a real
//! `agent-guard daemon` with its own policy, socket and cgroups, runs real
//! programs as agents, and reads the daemon's JSON event stream.
//!
//! Tests get the daemon binary from `AGENT_GUARD_BIN`, which `cargo xtask
//! test` sets after building it. They need root.
use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Output, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

mod conformance;
mod lines;
mod surfaces;
mod watchdog;
pub use conformance::*;
pub use lines::ChildLines;
pub use surfaces::*;

/// Generous bound for things that normally take milliseconds; only reached
/// when something is broken, so it is a liveness check, not a timing test.
pub const PATIENCE: Duration = Duration::from_secs(60);

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn agent_guard_bin() -> PathBuf {
    match std::env::var_os("AGENT_GUARD_BIN") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "AGENT_GUARD_BIN is not set: run the privileged tests with `cargo xtask test`, \
             which builds agent-guard and sets it"
        ),
    }
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the privileged tests need root (they load eBPF and create cgroups)"
    );
}

/// Where cgroup2 is mounted (the daemon's own discovery, from mountinfo).
pub fn cgroup2_root() -> PathBuf {
    guard_host::cgroup::Hierarchy::discover()
        .expect("a cgroup2 mount")
        .root()
        .to_path_buf()
}

/// A unique cgroup prefix for one test, removed (bottom-up) on drop.
pub struct TestCgroups {
    pub prefix: String,
    // Dropped after the cgroups are removed: the test is over then.
    _watchdog: watchdog::Watchdog,
}

/// Creates a directory `<stem>-<pid>-<n>` in `parent` that did not exist
/// before, and returns its name. Created, not just named: the name must be
/// free on the whole machine, not only in this process. Pids wrap at
/// pid_max and repeat across pid namespaces (CI can run in a container on
/// the kernel other work shares), and two tests that shared a cgroup would
/// each count and judge the other's calls (seen: a connects budget spent
/// by another test's runs).
pub fn claim_dir(parent: &Path, stem: &str) -> String {
    fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    for _ in 0..10_000 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{stem}-{}-{n}", std::process::id());
        match fs::create_dir(parent.join(&name)) {
            Ok(()) => return name,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", parent.join(&name).display()),
        }
    }
    panic!("no free name for {stem} in {}", parent.display());
}

impl TestCgroups {
    pub fn new(test: &str) -> Self {
        let name = claim_dir(&cgroup2_root().join("agent-guard-test"), test);
        let prefix = format!("agent-guard-test/{name}");
        let _watchdog = watchdog::Watchdog::arm(&cgroup2_root().join(&prefix));
        Self { prefix, _watchdog }
    }

    pub fn path(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.prefix)
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        remove_tree(&cgroup2_root().join(&self.prefix));
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    for _ in 0..50 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub mod browser;
mod doors;
mod net;
pub mod rogue;
mod stream;
pub use doors::*;
pub use net::*;
pub use rogue::{assert_connect_denied, assert_refused, cli_inside, placed};
pub use stream::*;

/// The event stream as read so far. Its lock is taken ignoring poison: a
/// test that fails an assertion while waiting on it must not turn the
/// daemon's clean-up into a second panic, which would abort the whole test
/// binary and hide the other tests' results.
#[derive(Default)]
pub(crate) struct Stream {
    pub(crate) events: Vec<Value>,
    pub(crate) closed: bool,
    /// Events counted, not kept (see [`Daemon::start_with`]), by kind.
    pub(crate) counted: std::collections::BTreeMap<String, u64>,
    /// Every event read, kept or counted, by kind.
    pub(crate) by_kind: std::collections::BTreeMap<String, u64>,
    /// Lines read.
    pub(crate) lines: u64,
}

/// A running daemon; SIGTERM and reaped on drop.
pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub policy_path: PathBuf,
    pub(crate) stream: Arc<(Mutex<Stream>, Condvar)>,
    // Dropped after the daemon, so cgroups are removed last.
    pub(crate) cgroups: Option<TestCgroups>,
    pub(crate) keep_dir: bool,
    validated: bool,
}

impl Daemon {
    /// Starts a daemon with `policy` (TOML) and waits for `daemon.start`.
    pub fn start(policy: &str, cgroups: TestCgroups) -> Self {
        Self::start_in(policy, cgroups, Self::fresh_dir())
    }

    /// Starts a daemon whose socket and state live in `dir` (for example the
    /// directory a crashed daemon left, see [`Daemon::crash`]).
    pub fn start_in(policy: &str, cgroups: TestCgroups, dir: PathBuf) -> Self {
        Self::start_with(policy, cgroups, dir, Options::default())
    }

    /// A fresh per-test directory, as [`Daemon::start`] uses. Under /run,
    /// not /tmp: where BPF LSM is missing, runs are confined with Landlock,
    /// and a confined run cannot create entries directly in the directories
    /// on the way to the daemon's state (here `/run`), which must not be
    /// the /tmp the agents under test work in.
    pub fn fresh_dir() -> PathBuf {
        // Claimed, never cleared: a directory of that name may be another
        // test's, in use (see claim_dir).
        let run = PathBuf::from("/run");
        run.join(claim_dir(&run, "agent-guard-test"))
    }

    /// [`Daemon::start_in`] with [`Options`].
    pub fn start_with(policy: &str, cgroups: TestCgroups, dir: PathBuf, opts: Options) -> Self {
        require_root();
        let socket = dir.join("control.sock");
        let policy_path = dir.join("policy.toml");
        fs::write(&policy_path, policy).expect("write policy");
        let mut cmd = Command::new(agent_guard_bin());
        if let Some(soft) = opts.nofile_soft {
            // SAFETY: only setrlimit between fork and exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    let (_, hard) =
                        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        soft.min(hard),
                        hard,
                    )?;
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .arg("--socket")
            .arg(&socket)
            .arg("daemon")
            .arg("--policy")
            .arg(&policy_path)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(&opts.args)
            // Warnings and errors only, unless the caller asks for more.
            .env(
                "AGENT_GUARD_LOG",
                std::env::var("AGENT_GUARD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn agent-guard daemon");
        let stdout = child.stdout.take().expect("stdout");
        let stream = Arc::new((Mutex::new(Stream::default()), Condvar::new()));
        spawn_reader(stdout, stream.clone(), opts.count_only);
        let daemon = Self {
            child,
            socket,
            dir,
            policy_path,
            stream,
            cgroups: Some(cgroups),
            keep_dir: false,
            validated: false,
        };
        daemon.wait_event("daemon.start", |_| true);
        daemon
    }

    /// The `agent-guard` command aimed at this daemon.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(agent_guard_bin());
        cmd.arg("--socket").arg(&self.socket);
        cmd
    }

    /// Runs `agent-guard ARGS` against this daemon to completion, with no
    /// stdin, capturing its output.
    pub fn cli_output(&self, args: &[&str]) -> Output {
        self.cli()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("agent-guard")
    }

    /// [`Daemon::cli_output`] that must succeed (else the test fails with
    /// the command's stderr); its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(
            out.status.success(),
            "agent-guard {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `argv` as `agent` to completion, capturing its output.
    pub fn run_agent(&self, agent: &str, argv: &[&str]) -> Output {
        self.cli()
            .args(["run", "--agent", agent, "--"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("agent-guard run")
    }

    /// Starts `argv` as `agent` with piped stdin/stdout; the caller decides
    /// when it ends (close stdin) so /proc enrichment is never racy.
    pub fn spawn_agent(&self, agent: &str, argv: &[&str]) -> Child {
        self.cli()
            .args(["run", "--agent", agent, "--"])
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agent-guard run")
    }

    /// The backend the daemon chose for `op` ("connect" or "delete"), from
    /// its own start-up probe (the same one `agent-guard doctor` runs).
    pub fn backend(&self, op: &str) -> String {
        let start = self.wait_event("daemon.start", |_| true);
        start["daemon"]["backends"][op]
            .as_str()
            .unwrap_or_else(|| panic!("daemon.start lacks backends.{op}: {start}"))
            .to_string()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All events so far.
    pub fn events(&self) -> Vec<Value> {
        self.stream
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .events
            .clone()
    }

    /// Waits until `n` events of `kind` have been emitted. Fails when the
    /// stream stalls (no line at all for [`PATIENCE`]), not while a busy
    /// daemon's backlog is still being read, with a hard bound of ten
    /// times that.
    pub fn wait_count(&self, kind: &str, n: usize) {
        let (lock, cvar) = &*self.stream;
        let started = Instant::now();
        let mut s = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut progress = (s.lines, started);
        loop {
            if s.by_kind.get(kind).copied().unwrap_or(0) >= n as u64 {
                return;
            }
            assert!(
                !s.closed,
                "daemon exited after fewer than {n} {kind} events"
            );
            let now = Instant::now();
            if s.lines > progress.0 {
                progress = (s.lines, now);
            }
            let deadline = (progress.1 + PATIENCE).min(started + 10 * PATIENCE);
            if now >= deadline {
                // What the stream and the daemon were doing, to tell a lost
                // line from a daemon that never got to it.
                let count = s.by_kind.get(kind).copied().unwrap_or(0);
                let total = s.events.len();
                let losses = s.by_kind.get("loss").copied().unwrap_or(0);
                let last: Vec<String> = s
                    .events
                    .iter()
                    .rev()
                    .take(5)
                    .map(|e| e["kind"].to_string())
                    .collect();
                drop(s);
                panic!(
                    "fewer than {n} {kind} events: the stream stalled for {PATIENCE:?} (or ran \
                     for {:?}) ({count} seen; {total} events in all, {losses} of them loss; the \
                     last: {last:?}); daemon threads:\n{}",
                    10 * PATIENCE,
                    thread_report(self.child.id())
                );
            }
            s = cvar
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Waits for the first event of `kind` matching `pred`.
    pub fn wait_event(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let (lock, cvar) = &*self.stream;
        let deadline = Instant::now() + PATIENCE;
        let mut s = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut seen = 0;
        loop {
            if let Some(e) = s.events[seen..]
                .iter()
                .find(|e| e["kind"] == kind && pred(e))
            {
                return e.clone();
            }
            seen = s.events.len();
            assert!(
                !s.closed,
                "daemon exited before emitting a {kind} event; events: {:#?}",
                s.events
            );
            let now = Instant::now();
            assert!(
                now < deadline,
                "no matching {kind} event within {PATIENCE:?}; events: {:#?}",
                s.events
            );
            s = cvar
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// SIGKILL, as a crash would: nothing is cleaned up. Returns the
    /// cgroups and directory, to start a successor in.
    pub fn crash(mut self) -> (TestCgroups, PathBuf) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        self.keep_dir = true;
        (self.cgroups.take().expect("cgroups"), self.dir.clone())
    }

    /// Like [`Daemon::stop`], but hands back the test's cgroups instead of
    /// removing them, to look at what the stop left behind.
    pub fn stop_keeping_cgroups(mut self) -> (Vec<Value>, TestCgroups) {
        self.terminate();
        let cgroups = self.cgroups.take().expect("cgroups");
        (self.events(), cgroups)
    }

    /// SIGTERM, wait, and return every event including daemon.stop.
    pub fn stop(mut self) -> Vec<Value> {
        self.terminate();
        self.events()
    }

    pub(crate) fn terminate(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            // Already reaped (a crash): its pid may belong to another process now.
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        // A daemon that does not stop must not hang the whole suite: say
        // where it is stuck, then kill it.
        let deadline = Instant::now() + PATIENCE;
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                eprintln!(
                    "agent-guard daemon {} ignored SIGTERM for {PATIENCE:?}; its threads:\n{}",
                    self.child.id(),
                    thread_report(self.child.id())
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
                // Still a failure: a daemon must stop on SIGTERM.
                assert!(
                    thread::panicking(),
                    "the agent-guard daemon did not stop on SIGTERM"
                );
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.wait();
        let (lock, cvar) = &*self.stream;
        let deadline = Instant::now() + PATIENCE;
        let mut s = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while !s.closed && Instant::now() < deadline {
            s = cvar
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        // Every event of every privileged test must match the written
        // schema and the published OCSF or ECS definitions (checked once,
        // when the daemon has stopped).
        if !thread::panicking() && !self.validated {
            self.validated = true;
            assert_schema(&s.events);
            assert_conformance(&s.events);
        }
    }
}

/// Every thread of `pid` (see [`tasks_report`]), and where gdb is
/// installed its user-space stacks, to say where a daemon is stuck.
fn thread_report(pid: u32) -> String {
    let mut out = tasks_report(pid);
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return out;
    }
    // The user-space side, where gdb is installed (not a test dependency:
    // only a failing test's report is richer with it).
    match Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-nx",
            "-ex",
            "thread apply all bt 30",
        ])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => out.push_str(&String::from_utf8_lossy(&o.stdout)),
        Err(e) => out.push_str(&format!("(no user-space stacks: gdb: {e})\n")),
    }
    out
}

/// Every thread of `pid`: name, state, wchan, the system call it is in,
/// and its kernel stack.
pub(crate) fn tasks_report(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return "(gone)".into();
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
        let state = read("status")
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("?")
            .to_owned();
        out.push_str(&format!(
            "- tid {} {} {state} wchan={} syscall={}\n{}",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan"),
            read("syscall").trim(),
            read("stack")
        ));
    }
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
        if !self.keep_dir {
            // A daemon that did not stop cleanly leaves its bpffs mounted.
            let _ = nix::mount::umount2(
                &self.dir.join("state/bpf"),
                nix::mount::MntFlags::MNT_DETACH,
            );
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn spawn_reader(
    stdout: ChildStdout,
    stream: Arc<(Mutex<Stream>, Condvar)>,
    count_only: Option<fn(&Value) -> bool>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("daemon stdout carried a non-JSON line {line:?}: {e}"));
            let (lock, cvar) = &*stream;
            let mut s = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let kind = value["kind"].as_str().unwrap_or("");
            s.lines += 1;
            match s.by_kind.get_mut(kind) {
                Some(n) => *n += 1,
                None => {
                    s.by_kind.insert(kind.to_owned(), 1);
                }
            }
            if count_only.is_some_and(|f| f(&value)) {
                let kind = kind.to_owned();
                *s.counted.entry(kind).or_default() += 1;
            } else {
                s.events.push(value);
            }
            drop(s);
            cvar.notify_all();
        }
        let (lock, cvar) = &*stream;
        lock.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .closed = true;
        cvar.notify_all();
    });
}

/// Whether this process runs chrooted (its root is not its mount
/// namespace's): the VM tier runs the suite in a chroot, where the kernel
/// itself refuses new user namespaces before any LSM hook sees them.
pub fn chrooted() -> bool {
    let id = |p: &str| {
        std::fs::metadata(p).map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            (m.dev(), m.ino())
        })
    };
    matches!((id("/"), id("/proc/1/root/")), (Ok(a), Ok(b)) if a != b)
}

/// Which test tier this is: "vm" inside the QEMU guest, "host" otherwise.
pub fn tier() -> String {
    std::env::var("AGENT_GUARD_TIER").unwrap_or_else(|_| "host".into())
}

/// Skips a test whose kernel feature the daemon's probe found missing,
/// saying why. In the VM tier nothing may skip: that kernel is booted
/// precisely to have these features, so a skip there is a failure.
#[must_use]
pub fn skip_unless(available: bool, test: &str, feature: &str) -> bool {
    if available {
        return false;
    }
    assert!(
        tier() != "vm",
        "{test}: {feature} unavailable in the VM tier, whose kernel exists to provide it"
    );
    skip(
        test,
        &format!(
            "this kernel lacks {feature} (per the daemon's load probe; see `agent-guard doctor`)"
        ),
    );
    true
}

/// Records a skip where `cargo xtask test` collects them for its summary
/// (libtest hides a passing test's output), and on stderr.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    if let Some(log) = std::env::var_os("AGENT_GUARD_SKIP_LOG") {
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log) {
            // One write per line: tests skip in parallel, and writeln!
            // may split a line into several writes that interleave.
            let _ = f.write_all(format!("{test}: {why}\n").as_bytes());
        }
    }
}

/// A scratch directory tree for delete tests, removed on drop.
pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    pub fn new(test: &str) -> Self {
        let tmp = std::env::temp_dir();
        let root = tmp.join(claim_dir(&tmp, &format!("agtest-{test}")));
        Self { root }
    }

    /// Creates `rel` (and parents) as a file with some content.
    pub fn file(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, b"data").expect("write");
        p
    }

    pub fn dir(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(&p).expect("mkdir");
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn s(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Like [`run_in_cgroup`], but returns the running shell with piped stdin
/// and stdout: the caller ends it (closing stdin) once it has seen what it
/// needs, so /proc-based details are still there to read.
pub fn spawn_in_cgroup(cgroup: &str, script: &str) -> Child {
    let procs = cgroup2_root().join(cgroup).join("cgroup.procs");
    Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > '{}' && {script}", procs.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh")
}

/// Runs `script` with `sh -c` after the shell moves itself into `cgroup`
/// (relative to the cgroup2 mount) by writing cgroup.procs: an agent process
/// started with no launcher at all, as a systemd unit or container would be.
pub fn run_in_cgroup(cgroup: &str, script: &str) -> Output {
    let procs = cgroup2_root().join(cgroup).join("cgroup.procs");
    Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > '{}' && {script}", procs.display()))
        .stdin(Stdio::null())
        .output()
        .expect("sh")
}

/// The state letter of a process (R, S, T, ...), from /proc/PID/stat.
pub fn process_state(pid: u32) -> Option<char> {
    guard_host::proc::state(pid)
}

/// Waits until `pid` is stopped (state T): what a hold looks like.
pub fn wait_stopped(pid: u32, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while process_state(pid) != Some('T') {
        assert!(
            Instant::now() < deadline,
            "{what}: process {pid} never stopped"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a stray SIGCONT, as someone other than agent-guard might, and
/// checks the held call goes straight back on hold.
pub fn stray_sigcont_keeps_it_held(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .expect("SIGCONT");
    thread::sleep(Duration::from_millis(300));
    wait_stopped(pid, "after a stray SIGCONT");
}
