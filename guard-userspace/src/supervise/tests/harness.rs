//! Test support: temporary directories, a prefix policy that can hold one
//! path, and spawning a command under the filter.
use std::{
    collections::HashMap,
    future::Future,
    io,
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::net::UnixStream as StdStream,
    },
    path::{Path, PathBuf},
    pin::Pin,
    process::{Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    net::UnixStream,
    process::{Child, Command},
    sync::{Notify, mpsc},
    time::timeout,
};

use crate::supervise::{
    Decide, Decision, FilterOptions, FilterProgram, Op, Request, recv_with_fds, send_with_fd,
    supervise,
};

/// Liveness bound for anything a test waits for; never a timing assertion.
pub const LIVENESS: Duration = Duration::from_secs(60);

/// A fresh directory (real path, symlinks resolved), removed on drop.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "agent-guard-supervise-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("create test dir");
        Self(std::fs::canonicalize(&path).expect("canonical test dir"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// Creates `rel` as a file (parents as needed), or as a directory if it
    /// ends in '/'.
    pub fn make(&self, rel: &str) -> PathBuf {
        let path = self.join(rel);
        if rel.ends_with('/') {
            std::fs::create_dir_all(&path).expect("mkdir");
        } else {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir parent");
            std::fs::write(&path, b"x").expect("write file");
        }
        path
    }

    pub fn str(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A call the policy holds until released.
pub struct Hold {
    path: String,
    called: mpsc::UnboundedSender<()>,
    release: Notify,
}

impl Hold {
    pub fn new(path: &Path) -> (Arc<Self>, mpsc::UnboundedReceiver<()>) {
        let (called, rx) = mpsc::unbounded_channel();
        let hold = Self {
            path: path.to_str().expect("utf-8").to_owned(),
            called,
            release: Notify::new(),
        };
        (Arc::new(hold), rx)
    }

    pub fn release(&self) {
        self.release.notify_one();
    }
}

/// A path and the outcome `performed` reported for it.
pub type Performed = (String, Result<(), i32>);

/// Denies everything at or under `denied` (and renames that would move
/// such a path or replace one); allows the rest. Records what it was asked
/// and what was performed.
#[derive(Default)]
pub struct Policy {
    denied: Vec<PathBuf>,
    hold: Option<Arc<Hold>>,
    pub seen: Arc<Mutex<Vec<Request>>>,
    pub performed: Arc<Mutex<Vec<Performed>>>,
}

impl Policy {
    pub fn deny(denied: &[PathBuf]) -> Arc<Self> {
        Arc::new(Self {
            denied: denied.to_vec(),
            ..Self::default()
        })
    }

    pub fn holding(hold: Arc<Hold>) -> Arc<Self> {
        Arc::new(Self {
            hold: Some(hold),
            ..Self::default()
        })
    }

    pub fn seen_paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.object.path.clone())
            .collect()
    }
}

impl Decide for Policy {
    fn decide(&self, req: Request) -> Pin<Box<dyn Future<Output = (Request, Decision)> + Send>> {
        let under = |p: &str| self.denied.iter().any(|d| Path::new(p).starts_with(d));
        if req.op == Op::Open {
            // Not a policy question (see Op::Open): not recorded; refused
            // only under a denied path, as the guard's files would be.
            let decision = if under(&req.object.path) {
                Decision::Deny
            } else {
                Decision::Allow
            };
            return Box::pin(async move { (req, decision) });
        }
        self.seen.lock().expect("lock").push(req.clone());
        let denied = match req.op {
            // Refused whatever the policy says.
            Op::Mount(_) | Op::IoUringSetup => true,
            // A moved directory takes what is below it along.
            Op::Rename { exchange } => {
                let holds = |p: &str| self.denied.iter().any(|d| d.starts_with(p));
                under(&req.object.path)
                    || holds(&req.object.path)
                    || req.second.as_ref().is_some_and(|s| {
                        s.exists && (under(&s.path) || (exchange && holds(&s.path)))
                    })
            }
            _ => under(&req.object.path),
        };
        let decision = if denied {
            Decision::Deny
        } else {
            Decision::Allow
        };
        let hold = self.hold.clone().filter(|h| h.path == req.object.path);
        Box::pin(async move {
            if let Some(hold) = hold {
                let _ = hold.called.send(());
                hold.release.notified().await;
            }
            (req, decision)
        })
    }

    fn performed(&self, req: &Request, result: Result<(), i32>) {
        self.performed
            .lock()
            .expect("lock")
            .push((req.object.path.clone(), result));
    }
}

/// Spawns `cmd` with the filter installed between fork and exec, and
/// receives its listener fd the way the daemon will.
pub async fn spawn_guarded(cmd: Command) -> (Child, OwnedFd) {
    spawn_guarded_with(cmd, FilterOptions::default()).await
}

/// [`spawn_guarded`] with a filter built with `options`.
pub async fn spawn_guarded_with(mut cmd: Command, options: FilterOptions) -> (Child, OwnedFd) {
    let (ours, theirs) = StdStream::pair().expect("socketpair");
    let theirs_fd = theirs.as_raw_fd();
    let program = FilterProgram::new(options);
    // SAFETY: the hook only makes system calls (prctl, seccomp, sendmsg,
    // close) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let listener = program.install().map_err(io::Error::from_raw_os_error)?;
            let sent = send_with_fd(theirs_fd, b"listener\n", listener);
            libc::close(listener);
            if sent {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::EPIPE))
            }
        });
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn guarded child");
    drop(theirs);
    ours.set_nonblocking(true).expect("nonblocking");
    let ours = UnixStream::from_std(ours).expect("tokio socket");
    let (line, mut fds) = timeout(LIVENESS, recv_with_fds(&ours, 64, 1))
        .await
        .expect("listener arrives")
        .expect("listener received");
    assert_eq!(line, b"listener\n");
    assert_eq!(fds.len(), 1, "exactly one fd");
    (child, fds.remove(0))
}

/// Runs `cmd` under supervision to completion; the supervisor must end by
/// itself (POLLHUP) once the child is gone.
pub async fn run_guarded(cmd: Command, decider: Arc<dyn Decide>) -> Output {
    run_guarded_with(cmd, decider, FilterOptions::default()).await
}

/// [`run_guarded`] with a filter built with `options`.
pub async fn run_guarded_with(
    cmd: Command,
    decider: Arc<dyn Decide>,
    options: FilterOptions,
) -> Output {
    let (child, listener) = spawn_guarded_with(cmd, options).await;
    let supervisor = tokio::spawn(supervise(listener, decider));
    let out = timeout(LIVENESS, child.wait_with_output())
        .await
        .expect("child finished")
        .expect("child output");
    timeout(LIVENESS, supervisor)
        .await
        .expect("supervisor ended once the child was gone")
        .expect("supervisor did not panic")
        .expect("supervisor ended cleanly");
    out
}

pub fn cmd(program: &str, args: &[&str], cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    cmd
}

/// Python prelude: `t(label, fn)` prints "label errno" (0 on success).
pub const PY_PRELUDE: &str = r#"
import ctypes, os, shutil, sys, threading, time
def t(label, fn):
    try:
        fn()
        print(label, 0, flush=True)
    except OSError as e:
        print(label, e.errno, flush=True)
D = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sys_(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *args)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r
"#;

pub fn python(script: &str, dir: &Path) -> Command {
    let code = format!("{PY_PRELUDE}{script}");
    let dir = dir.to_str().expect("utf-8");
    cmd("python3", &["-c", &code, dir], Path::new(dir))
}

/// Parses "label errno" lines.
pub fn results(out: &Output) -> HashMap<String, i32> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (label, code) = line.rsplit_once(' ')?;
            Some((label.to_owned(), code.parse().ok()?))
        })
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
