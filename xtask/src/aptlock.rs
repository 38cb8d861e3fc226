//! Waiting for the package manager's locks instead of failing on them.
//!
//! apt and dpkg take POSIX record locks (fcntl) on a few files while they
//! work; a second apt-get fails at once if it finds one taken. apt's own
//! `DPkg::Lock::Timeout` makes `install` wait for the dpkg locks, but not
//! `update` for the lists lock, and it says nothing until it gives up. So
//! setup asks the kernel who holds each lock (F_GETLK), says so, and polls
//! until they are all free; apt-get still gets the timeout option, for a
//! holder that slips in between the check and apt-get taking the lock.
use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

/// The locks apt-get and dpkg take (apt's `apt-get check`/`install` and
/// `update`, dpkg's frontend and database locks).
pub const APT_LOCKS: &[&str] = &[
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
];

/// How long setup waits for another package manager run (an unattended
/// upgrade, a second setup) before giving up and naming the holder.
pub const LOCK_WAIT: Duration = Duration::from_secs(15 * 60);

/// Who holds a lock: the holder's pid and command name, as the kernel
/// reports them. `pid` is None for an open-file-description lock, whose
/// owner is not a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub lock: PathBuf,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.lock.display())?;
        match (self.pid, &self.comm) {
            (Some(pid), Some(comm)) => write!(f, " (held by pid {pid}, {comm})"),
            (Some(pid), None) => write!(f, " (held by pid {pid})"),
            _ => write!(f, " (held)"),
        }
    }
}

/// The first of `locks` that some process holds, if any. A lock file that
/// does not exist is free (apt creates it when it first locks).
pub fn holder(locks: &[impl AsRef<Path>]) -> Option<Holder> {
    locks.iter().find_map(|lock| held_by(lock.as_ref()))
}

fn held_by(lock: &Path) -> Option<Holder> {
    let file = File::open(lock).ok()?;
    // SAFETY: flock is plain old data; all-zero is a valid value.
    let mut query: libc::flock = unsafe { std::mem::zeroed() };
    query.l_type = libc::F_WRLCK as libc::c_short;
    query.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_GETLK reads and writes only `query`, which outlives the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut query) };
    if rc != 0 || query.l_type == libc::F_UNLCK as libc::c_short {
        return None;
    }
    let pid = u32::try_from(query.l_pid).ok().filter(|p| *p > 0);
    let comm = pid.and_then(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm"))
            .ok()
            .map(|c| c.trim().to_owned())
    });
    Some(Holder {
        lock: lock.to_path_buf(),
        pid,
        comm,
    })
}

/// Waits until none of `locks` is held, telling `say` once when it starts
/// waiting (and who holds what), then every minute. Fails after `limit`,
/// naming the holder.
pub fn wait_free(
    locks: &[impl AsRef<Path>],
    limit: Duration,
    mut say: impl FnMut(&str),
) -> Result<()> {
    let started = Instant::now();
    let mut last_said: Option<(Instant, Holder)> = None;
    while let Some(h) = holder(locks) {
        let waited = started.elapsed();
        if waited >= limit {
            bail!(
                "gave up after {} s waiting for the package manager lock {h}; \
                 let that run finish, then run `cargo xtask setup` again",
                waited.as_secs()
            );
        }
        let due = match &last_said {
            None => true,
            Some((at, said)) => *said != h || at.elapsed() >= Duration::from_secs(60),
        };
        if due {
            say(&format!(
                "setup: waiting for the package manager lock {h}; waited {} s, giving up after {} s",
                waited.as_secs(),
                limit.as_secs()
            ));
            last_said = Some((Instant::now(), h));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if last_said.is_some() {
        say("setup: the package manager lock is free; going on");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader},
        process::{Child, Command, Stdio},
        sync::{Arc, Mutex},
    };

    use super::*;

    /// Another process holding a real fcntl lock, as apt and dpkg do
    /// (Python's `fcntl.lockf` is fcntl(F_SETLKW)), until dropped.
    struct LockHolder(Child);

    impl LockHolder {
        fn take(lock: &Path) -> Self {
            let mut child = Command::new("python3")
                .args([
                    "-c",
                    "import fcntl, sys\n\
                     f = open(sys.argv[1], 'w')\n\
                     fcntl.lockf(f, fcntl.LOCK_EX)\n\
                     print('locked', flush=True)\n\
                     sys.stdin.read()\n",
                ])
                .arg(lock)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("read");
            assert_eq!(line.trim(), "locked");
            Self(child)
        }

        /// Lets go: closing its stdin ends it, and its lock with it.
        fn release(mut self) {
            drop(self.0.stdin.take());
            self.0.wait().expect("wait");
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-aptlock-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn waits_for_a_lock_another_process_holds_and_names_it() {
        let dir = scratch("wait");
        let lock = dir.join("lock-frontend");
        let held = LockHolder::take(&lock);
        let pid = held.0.id();

        let found = holder(&[dir.join("absent"), lock.clone()]).expect("the lock is held");
        assert_eq!(found.pid, Some(pid));
        assert_eq!(found.comm.as_deref(), Some("python3"));

        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let waiter = {
            let said = said.clone();
            let lock = lock.clone();
            std::thread::spawn(move || {
                wait_free(&[lock], Duration::from_secs(600), |s| {
                    said.lock().expect("lock").push(s.to_owned())
                })
            })
        };
        // It says it is waiting, and keeps waiting, while the lock is held.
        while said.lock().expect("lock").is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!waiter.is_finished(), "returned while the lock was held");
        let first = said.lock().expect("lock")[0].clone();
        assert!(
            first.contains("waiting for the package manager lock"),
            "{first}"
        );
        assert!(
            first.contains(&format!("held by pid {pid}, python3")),
            "{first}"
        );

        held.release();
        waiter
            .join()
            .expect("thread")
            .expect("the wait ends once free");
        let said = said.lock().expect("lock").clone();
        assert_eq!(
            said.last().map(String::as_str),
            Some("setup: the package manager lock is free; going on")
        );
        assert!(holder(&[&lock]).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gives_up_after_the_limit_naming_the_holder() {
        let dir = scratch("limit");
        let lock = dir.join("lock");
        let held = LockHolder::take(&lock);
        let err = wait_free(&[&lock], Duration::ZERO, |_| {}).expect_err("held: gives up");
        let text = err.to_string();
        assert!(text.contains("gave up"), "{text}");
        assert!(
            text.contains(&format!("held by pid {}", held.0.id())),
            "{text}"
        );
        held.release();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn free_locks_do_not_wait_or_talk() {
        let dir = scratch("free");
        std::fs::write(dir.join("lock"), "").expect("lock file");
        let mut said = Vec::new();
        wait_free(
            &[dir.join("lock"), dir.join("missing")],
            Duration::ZERO,
            |s| said.push(s.to_owned()),
        )
        .expect("nothing held");
        assert!(said.is_empty(), "{said:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
