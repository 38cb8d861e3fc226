//! Process details the kernel record does not carry (exe, cmdline, ppid,
//! user and group names), read from /proc once per process and cached by
//! pid *and* start time, so a reused pid is never attributed to the
//! previous owner. exe, cmdline and names are read once per process image.
//! Kernel records carry the task's exec count, so an exec that keeps the
//! comm (a shell exec'ing another shell, or an agent exec'ing its own
//! binary under a trusted name) is read anew; supervised calls (no
//! record) are checked by comm only. Entries of processes that are gone are evicted by
//! [`Enricher::sweep`] (on run exits and periodically) and when a lookup
//! finds the pid gone or reused.
//!
//! Two ways to check an entry:
//! - [`Enricher::details`] reads /proc/PID/stat (the start time, and the
//!   comm, which an exec changes) on every lookup;
//! - [`Enricher::details_at`], for kernel records, touches no /proc on a
//!   hit. Each cached process has a pidfd in an epoll set, which becomes
//!   readable when the process exits (before its pid can be reused). The
//!   set is polled at most once per record stamped after the last poll: a
//!   record stamped before a poll that found its process alive was made by
//!   that process, since its pid was not free in between. The record's
//!   comm (the calling thread's) must be one seen for this process before;
//!   a new comm (an exec, a renamed thread) is checked against /proc.
use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use guard_host::proc;

use super::model::Cmdline;

/// What /proc says about a process. The command line is capped when it is
/// read, so neither the cache nor any event carries more.
#[derive(Clone, Debug, Default)]
pub struct ProcessDetails {
    pub ppid: Option<u32>,
    pub exe: Option<String>,
    pub cmdline: Option<Cmdline>,
}

struct Cached {
    start_time: u64,
    comm: String,
    details: ProcessDetails,
    /// A pidfd of exactly this process, in [`Enricher::exits`]; None when
    /// none could be opened (then every lookup reads /proc).
    pidfd: Option<OwnedFd>,
    /// Its exit was seen (the pid may be reused).
    exited: bool,
    /// Comms of its threads that kernel records carried and /proc
    /// confirmed (a few; a process with more threads names checks more).
    comms: Vec<String>,
    /// The exec count of the kernel record that last confirmed the entry
    /// (0: none has yet).
    exec_id: u64,
}

/// Thread names remembered per process.
const MAX_COMMS: usize = 8;

/// Entries beyond this are dropped wholesale; re-reading /proc is cheap
/// compared with unbounded growth on a host with pid churn.
const MAX_CACHED: usize = 8192;

#[derive(Default)]
pub struct Enricher {
    cache: HashMap<u32, Cached>,
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
    /// /proc reads of exe+cmdline, for tests of the cache.
    misses: u64,
    /// /proc/PID/stat reads, for tests of the cache.
    stat_reads: u64,
    /// The epoll set of the cached processes' pidfds (None: not made yet,
    /// or the kernel refused one).
    exits: Option<OwnedFd>,
    /// CLOCK_BOOTTIME (ns) taken just before `exits` was last polled.
    polled_at: u64,
}

impl Enricher {
    /// Details for the process `pid` that made a kernel record stamped
    /// `ktime_ns` (CLOCK_BOOTTIME) from a thread named `comm` with exec
    /// count `exec_id` (0: unknown): from the cache without touching /proc
    /// when the process is known to have been alive since (see the
    /// module's doc) and has not exec'd, else as [`Self::details`].
    pub fn details_at(
        &mut self,
        pid: u32,
        comm: &str,
        exec_id: u64,
        ktime_ns: u64,
    ) -> ProcessDetails {
        let known = |c: &Cached| c.pidfd.is_some() && !c.exited;
        if self.cache.get(&pid).is_some_and(known) && ktime_ns >= self.polled_at {
            self.poll_exits();
        }
        if let Some(c) = self.cache.get(&pid) {
            if exec_id != 0 && c.exec_id != exec_id {
                // Another image (or not yet confirmed against a record):
                // /proc/PID/stat alone cannot tell an exec that kept the
                // name, so read exe and cmdline again.
                self.cache.remove(&pid);
            } else if known(c) && ktime_ns < self.polled_at && c.comms.iter().any(|k| k == comm) {
                return c.details.clone();
            }
        }
        let details = self.details(pid);
        // Confirmed by /proc just now: this comm is one of the process's.
        if let Some(c) = self.cache.get_mut(&pid) {
            if c.comms.len() < MAX_COMMS && !c.comms.iter().any(|k| k == comm) {
                c.comms.push(comm.to_owned());
            }
            c.exec_id = exec_id;
        }
        details
    }

    /// Marks the cached processes whose exit the epoll set reports.
    fn poll_exits(&mut self) {
        let Some(epoll) = &self.exits else { return };
        let before = boot_ns();
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: `ready` is valid for its length; timeout 0 never blocks.
            let n = unsafe {
                libc::epoll_wait(epoll.as_raw_fd(), ready.as_mut_ptr(), ready.len() as i32, 0)
            };
            if n < 0 {
                // Unreliable from now on: every lookup reads /proc again.
                self.exits = None;
                for c in self.cache.values_mut() {
                    c.pidfd = None;
                }
                return;
            }
            for e in &ready[..n as usize] {
                let pid = e.u64 as u32;
                if let Some(c) = self.cache.get_mut(&pid) {
                    c.exited = true;
                }
            }
            if (n as usize) < ready.len() {
                break;
            }
        }
        self.polled_at = before;
    }

    /// A pidfd of `pid`, watched for its exit; None if the kernel has no
    /// pidfds or epoll refuses it.
    fn watch(&mut self, pid: u32) -> Option<OwnedFd> {
        // Each watched process holds an fd: an agent that forks without end
        // must not take the fds the control socket and the sinks need.
        // Past the cap, lookups read /proc as they did before.
        let cap = max_watched();
        if self.cache.len() >= cap
            && self.cache.values().filter(|c| c.pidfd.is_some()).count() >= cap
        {
            return None;
        }
        if self.exits.is_none() {
            // SAFETY: plain syscall; the fd is owned right after.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return None;
            }
            // SAFETY: the kernel just gave us this fd.
            self.exits = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let epoll = self.exits.as_ref()?;
        let pidfd = guard_host::peer::pidfd_open(pid).ok()?;
        // One-shot: an exit is reported once, then the entry is checked
        // against /proc like any other.
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
            u64: u64::from(pid),
        };
        // SAFETY: both fds are open; `ev` outlives the call.
        let rc = unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                pidfd.as_raw_fd(),
                &raw mut ev,
            )
        };
        (rc == 0).then_some(pidfd)
    }

    /// Details for `pid`, or empty ones if it has already exited.
    pub fn details(&mut self, pid: u32) -> ProcessDetails {
        self.stat_reads += 1;
        let Some(proc::Stat {
            comm,
            ppid,
            start_time,
            ..
        }) = proc::stat(pid)
        else {
            // Gone: whatever we cached may still be right only if it was the
            // same process, which we can no longer check.
            return self
                .cache
                .remove(&pid)
                .map(|c| c.details)
                .unwrap_or_default();
        };
        if let Some(c) = self.cache.get_mut(&pid) {
            if c.start_time == start_time && c.comm == comm {
                if c.exited {
                    // Exited but not reaped yet (a zombie keeps its stat):
                    // from now on only /proc can tell.
                    c.pidfd = None;
                }
                return c.details.clone();
            }
        }
        self.misses += 1;
        // Opened before the reads, and kept only if the process is still
        // the one read when they are done.
        let pidfd = self.watch(pid);
        let details = ProcessDetails {
            ppid: Some(ppid),
            exe: proc::exe(pid).map(|p| p.to_string_lossy().into_owned()),
            cmdline: proc::cmdline(pid).map(Cmdline::capped),
        };
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        let pidfd = pidfd.filter(|fd| {
            use std::os::fd::AsFd as _;
            guard_host::peer::pidfd_alive(fd.as_fd())
                && proc::stat(pid).is_some_and(|s| s.start_time == start_time)
        });
        self.cache.insert(
            pid,
            Cached {
                start_time,
                comm: comm.clone(),
                details: details.clone(),
                pidfd,
                exited: false,
                comms: vec![comm],
                exec_id: 0,
            },
        );
        details
    }

    /// The user name of `uid`, looked up once.
    pub fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    /// The group name of `gid`, looked up once.
    pub fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }

    /// Drops entries whose process is gone or whose pid now belongs to
    /// another process. Names are dropped too: /etc/passwd may change.
    pub fn sweep(&mut self) {
        self.cache
            .retain(|pid, c| proc::stat(*pid).is_some_and(|s| s.start_time == c.start_time));
        self.users.clear();
        self.groups.clear();
    }

    #[cfg(test)]
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// Pidfds the cache holds at most: a quarter of the soft RLIMIT_NOFILE
/// (raised to the hard limit at start), and no more than 2048.
fn max_watched() -> usize {
    static CAP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        usize::try_from(soft / 4).unwrap_or(usize::MAX).min(2048)
    })
}

/// CLOCK_BOOTTIME in ns, the clock kernel records, holds and budgets use.
pub fn boot_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process_once() {
        let mut e = Enricher::default();
        let me = std::process::id();
        let d = e.details(me);
        assert!(d.exe.is_some());
        assert_eq!(d.ppid, Some(std::os::unix::process::parent_id()));
        e.details(me);
        e.details(me);
        assert_eq!(e.misses, 1, "exe and cmdline are read once per process");
        assert_eq!(e.user(0).as_deref(), Some("root"));
    }

    #[test]
    fn a_reused_pid_is_not_the_old_process() {
        let mut e = Enricher::default();
        let me = std::process::id();
        e.details(me);
        // As if the pid had belonged to an older process.
        if let Some(c) = e.cache.get_mut(&me) {
            c.start_time = c.start_time.wrapping_sub(1);
            c.details.exe = Some("/old/process".into());
        }
        assert_ne!(e.details(me).exe.as_deref(), Some("/old/process"));
        assert_eq!(e.misses, 2);
    }

    #[test]
    fn kernel_records_hit_without_proc() {
        let mut e = Enricher::default();
        let me = std::process::id();
        let comm = proc::stat(me).expect("own stat").comm;
        let d = e.details_at(me, &comm, 1, boot_ns());
        assert!(d.exe.is_some());
        let reads = e.stat_reads;
        // The process is alive: its records read no /proc at all.
        for _ in 0..10 {
            e.details_at(me, &comm, 1, boot_ns());
        }
        assert_eq!(e.stat_reads, reads, "a hit reads no /proc");
        // A thread name never seen is checked once, then known.
        e.details_at(me, "other-thread", 1, boot_ns());
        e.details_at(me, "other-thread", 1, boot_ns());
        assert_eq!(e.stat_reads, reads + 1);
        assert_eq!(e.misses, 1);
    }

    #[test]
    fn an_exit_is_seen_before_the_pid_is_trusted_again() {
        let mut e = Enricher::default();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let comm = proc::stat(pid).expect("child stat").comm;
        e.details_at(pid, &comm, 1, boot_ns());
        assert_eq!(e.cached(), 1);
        let _ = child.kill();
        let _ = child.wait();
        // A record made after the exit: the poll sees it, /proc says gone.
        let reads = e.stat_reads;
        e.details_at(pid, &comm, 1, boot_ns());
        assert_eq!(e.stat_reads, reads + 1);
        assert_eq!(e.cached(), 0);
    }

    #[test]
    fn an_exec_under_the_same_name_is_read_anew() {
        use std::io::Write as _;
        let mut e = Enricher::default();
        let mut child = std::process::Command::new("sh")
            // The shell joins the marker: the first command line lacks it.
            .args(["-c", "read _; exec sh -c 'read _' second-ima\"\"ge"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let pid = child.id();
        let cmdline = |d: &ProcessDetails| format!("{:?}", d.cmdline);
        let first = e.details_at(pid, "sh", 7, boot_ns());
        assert!(!cmdline(&first).contains("second-image"), "{first:?}");
        if let Some(stdin) = child.stdin.as_mut() {
            stdin.write_all(b"\n").expect("wake sh");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !proc::cmdline(pid).is_some_and(|c| c.iter().any(|a| a == "second-image")) {
            assert!(std::time::Instant::now() < deadline, "sh never exec'd");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Same pid, start time and comm: only the exec count tells.
        let misses = e.misses;
        let again = e.details_at(pid, "sh", 8, boot_ns());
        assert!(cmdline(&again).contains("second-image"), "{again:?}");
        assert_eq!(e.misses, misses + 1);
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn sweep_evicts_exited_processes() {
        let mut e = Enricher::default();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        e.details(child.id());
        e.details(std::process::id());
        assert_eq!(e.cached(), 2);
        let _ = child.kill();
        let _ = child.wait();
        e.sweep();
        assert_eq!(e.cached(), 1);
    }
}
