//! What /proc says about a process: its stat line, cgroup, groups, exe and
//! command line. Readers return `None` when the process is gone.
use std::{
    fs,
    io::{self, Read as _},
    path::{Path, PathBuf},
};

/// The fields of /proc/PID/stat that agent-guard uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    /// The state letter: R, S, D, T (stopped), t, Z, ...
    pub state: char,
    pub ppid: u32,
    /// Clock ticks after boot; with the pid, it names one process.
    pub start_time: u64,
}

/// /proc/PID/stat of `pid`.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&read_small(format!("/proc/{pid}/stat")).ok()?)
}

/// A /proc file that the kernel renders whole on the first read (stat,
/// status, cgroup), in one read: `fs::read_to_string` makes a statx for a
/// size /proc does not report, then reads of 32 bytes and up, six or more
/// system calls for a stat line. Each is dear where tracing programs see
/// every system call, and the supervisor reads these files per call.
pub fn read_small(path: impl AsRef<Path>) -> io::Result<String> {
    read_small_file(fs::File::open(path)?)
}

/// [`read_small`] of a file already open.
pub fn read_small_file(mut file: fs::File) -> io::Result<String> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = file.read(&mut buf[len..])?;
        len += n;
        // Such a file is handed out from one rendering: a read that does
        // not fill the buffer has reached its end.
        if n == 0 || len < buf.len() {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Parses a stat line. The comm field may hold spaces and parentheses, so
/// fields are counted from the last ')'.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let close = stat.rfind(')')?;
    let comm = stat.get(stat.find('(')? + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // Fields from 3 (state) on: ppid is field 4, starttime field 22.
    Some(Stat {
        comm,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The state letter of `pid` (T: stopped, as a held call leaves it).
pub fn state(pid: u32) -> Option<char> {
    stat(pid).map(|s| s.state)
}

/// The cgroup v2 path of `pid` relative to the cgroup2 mount ("/a/b"),
/// from the "0::" line of /proc/PID/cgroup.
pub fn cgroup(pid: u32) -> Option<String> {
    parse_cgroup(&read_small(format!("/proc/{pid}/cgroup")).ok()?)
}

pub fn parse_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
}

/// The supplementary groups of `pid`, as the kernel sees them now.
pub fn groups(pid: u32) -> Option<Vec<u32>> {
    let status = read_small(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("Groups:").map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
    })
}

/// The executable of `pid`.
pub fn exe(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// The arguments of `pid` (empty for a kernel thread or a zombie).
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Every process on the host now (numeric entries of /proc).
pub fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The real uid of `pid` (the first field of "Uid:" in its status).
pub fn uid(pid: u32) -> Option<u32> {
    let status = read_small(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("Uid:")
            .and_then(|u| u.split_whitespace().next()?.parse().ok())
    })
}

/// The process (thread group) that thread or process `id` belongs to.
pub fn tgid(id: u32) -> Option<u32> {
    let status = read_small(format!("/proc/{id}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:").and_then(|t| t.trim().parse().ok()))
}

/// The threads of `pid`.
pub fn threads(pid: u32) -> Vec<u32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|t| t.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_proc_file_whole_in_one_go() {
        for name in ["stat", "status", "cgroup"] {
            let path = format!("/proc/self/{name}");
            let whole = fs::read_to_string(&path).expect("read_to_string");
            let small = read_small(&path).expect("read_small");
            // The same lines, up to the counters that moved in between.
            assert_eq!(small.lines().count(), whole.lines().count(), "{name}");
        }
        // Longer than the first buffer: read on until the end.
        let long = std::env::temp_dir().join(format!("read-small-{}", std::process::id()));
        fs::write(&long, "x".repeat(10_000)).expect("write");
        assert_eq!(read_small(&long).expect("read").len(), 10_000);
        let _ = fs::remove_file(&long);
        assert!(stat(std::process::id()).is_some());
    }

    #[test]
    fn parses_stat_with_hostile_comm() {
        let line = "1234 (a) b (c) S 77 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 555 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                comm: "a) b (c".into(),
                state: 'S',
                ppid: 77,
                start_time: 555
            })
        );
        assert_eq!(parse_stat("1234 (x"), None);
        assert_eq!(parse_stat("1234 (x) S"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let s = stat(me).expect("own stat");
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
        assert!(exe(me).is_some());
        assert!(!cmdline(me).unwrap_or_default().is_empty());
        assert!(threads(me).contains(&me));
        assert!(groups(me).is_some());
        assert!(pids().contains(&me));
        assert_eq!(uid(me), Some(nix::unistd::getuid().as_raw()));
    }

    #[test]
    fn cgroup_line() {
        assert_eq!(
            parse_cgroup("12:cpu:/x\n0::/agent-guard/a\n").as_deref(),
            Some("/agent-guard/a")
        );
        assert_eq!(parse_cgroup("12:cpu:/x\n"), None);
    }
}
