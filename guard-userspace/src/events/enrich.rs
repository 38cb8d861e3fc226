//! Process details the kernel record does not carry (exe, cmdline, ppid,
//! user and group names), read from /proc once per process and cached by
//! pid *and* start time, so a reused pid is never attributed to the
//! previous owner. Each lookup reads only /proc/PID/stat (to check the
//! start time, and the comm, which an exec changes); exe, cmdline and names
//! are read once per process image. An exec that keeps the comm (a shell
//! exec'ing another shell) keeps the cached details. Entries of processes
//! that are gone are evicted by [`Enricher::sweep`] (on run exits and
//! periodically) and when a lookup finds the pid gone or reused.
use std::collections::HashMap;

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
}

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
}

impl Enricher {
    /// Details for `pid`, or empty ones if it has already exited.
    pub fn details(&mut self, pid: u32) -> ProcessDetails {
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
        if let Some(c) = self.cache.get(&pid) {
            if c.start_time == start_time && c.comm == comm {
                return c.details.clone();
            }
        }
        self.misses += 1;
        let details = ProcessDetails {
            ppid: Some(ppid),
            exe: proc::exe(pid).map(|p| p.to_string_lossy().into_owned()),
            cmdline: proc::cmdline(pid).map(Cmdline::capped),
        };
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(
            pid,
            Cached {
                start_time,
                comm,
                details: details.clone(),
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
