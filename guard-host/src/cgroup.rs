//! cgroup v2: finding the mount, creating agent and session cgroups, moving
//! and killing processes. A cgroup's id (what bpf_get_current_cgroup_id
//! returns) is the inode number of its directory.
use std::{
    fs,
    io::{self, ErrorKind},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error(
        "no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo); agent-guard \
         needs cgroup v2: mount it with `mount -t cgroup2 none /sys/fs/cgroup` or boot \
         with systemd.unified_cgroup_hierarchy=1"
    )]
    NoCgroup2,
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The cgroup2 hierarchy this host uses.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    root: PathBuf,
}

impl Hierarchy {
    /// Finds the cgroup2 mount from /proc/self/mountinfo; the location differs
    /// between unified (/sys/fs/cgroup) and hybrid (/sys/fs/cgroup/unified)
    /// hosts, so it is never assumed.
    pub fn discover() -> Result<Self, CgroupError> {
        let info = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
        Self::from_mountinfo(&info)
    }

    fn from_mountinfo(info: &str) -> Result<Self, CgroupError> {
        for line in info.lines() {
            // "36 25 0:31 / /sys/fs/cgroup rw,... shared:9 - cgroup2 cgroup2 rw"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fstype = right.split_whitespace().next();
            let fields: Vec<&str> = left.split_whitespace().collect();
            // Only a mount of the hierarchy's root gives whole-tree paths.
            if fstype == Some("cgroup2") && fields.get(3) == Some(&"/") {
                if let Some(mount_point) = fields.get(4) {
                    return Ok(Self {
                        root: PathBuf::from(unescape_mountinfo(mount_point)),
                    });
                }
            }
        }
        Err(CgroupError::NoCgroup2)
    }

    /// Every cgroup filesystem mounted on this host (v2 and v1
    /// hierarchies): where an agent must not write.
    pub fn all_mounts() -> Result<Vec<PathBuf>, CgroupError> {
        let info = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
        Ok(info
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let fstype = right.split_whitespace().next()?;
                let mount_point = left.split_whitespace().nth(4)?;
                matches!(fstype, "cgroup" | "cgroup2")
                    .then(|| PathBuf::from(unescape_mountinfo(mount_point)))
            })
            .collect())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Absolute directory of a cgroup given relative to the mount.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative.trim_start_matches('/'))
    }

    /// Creates the cgroup (and parents) if missing. Returns whether this call
    /// created the leaf, so that only cgroups agent-guard made are removed.
    pub fn ensure(&self, relative: &str) -> Result<bool, CgroupError> {
        let path = self.path(relative);
        if path.is_dir() {
            return Ok(false);
        }
        fs::create_dir_all(&path).map_err(io_err("creating cgroup", &path))?;
        Ok(true)
    }
}

/// The id the kernel gives this cgroup: its directory's inode number.
pub fn id(path: &Path) -> Result<u64, CgroupError> {
    Ok(fs::metadata(path)
        .map_err(io_err("stat cgroup", path))?
        .ino())
}

/// Moves `pid` into the cgroup at `path`.
pub fn move_pid(path: &Path, pid: u32) -> Result<(), CgroupError> {
    let procs = path.join("cgroup.procs");
    fs::write(&procs, pid.to_string()).map_err(io_err("writing", &procs))
}

/// Kills every process in the cgroup and below it: cgroup.kill (5.14+),
/// else SIGKILL to each pid until the tree is empty.
pub fn kill_all(path: &Path) -> Result<(), CgroupError> {
    let knob = path.join("cgroup.kill");
    if knob.exists() {
        return fs::write(&knob, "1").map_err(io_err("writing", &knob));
    }
    for _ in 0..100 {
        if !populated(path)? {
            return Ok(());
        }
        kill_procs(path)?;
        thread::sleep(Duration::from_millis(20));
    }
    Err(io_err("killing the processes of", path)(
        io::Error::from_raw_os_error(libc::EBUSY),
    ))
}

fn kill_procs(dir: &Path) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    let text = fs::read_to_string(&procs).map_err(io_err("reading", &procs))?;
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                kill_procs(&entry.path())?;
            }
        }
    }
    Ok(())
}

/// Processes in the cgroup and below it (0 if it cannot be read).
pub fn count_procs(dir: &Path) -> usize {
    let own = fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    let below: usize = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| count_procs(&e.path()))
                .sum()
        })
        .unwrap_or(0);
    own + below
}

/// Whether any process lives in the cgroup or below it.
pub fn populated(path: &Path) -> Result<bool, CgroupError> {
    let events = path.join("cgroup.events");
    let text = fs::read_to_string(&events).map_err(io_err("reading", &events))?;
    Ok(text.lines().any(|l| l == "populated 1"))
}

/// Removes an empty cgroup, retrying briefly: the kernel reports a cgroup
/// busy for a moment after its last process exits.
pub fn remove(path: &Path) -> Result<(), CgroupError> {
    let mut last = None;
    for _ in 0..50 {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            Err(e) => return Err(io_err("removing cgroup", path)(e)),
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(io_err("removing cgroup", path)(last.unwrap_or_else(|| {
        io::Error::from_raw_os_error(libc::EBUSY)
    })))
}

/// Removes a cgroup tree bottom-up (only empty cgroups can be removed).
pub fn remove_tree(path: &Path) -> Result<(), CgroupError> {
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path())?;
            }
        }
    }
    remove(path)
}

/// Undoes the octal escapes mountinfo uses for spaces and the like.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_cgroup2_mount() {
        let info = "\
30 25 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
        let h = Hierarchy::from_mountinfo(info).expect("cgroup2 found");
        assert_eq!(h.root(), Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(h.path("a/b"), PathBuf::from("/sys/fs/cgroup/unified/a/b"));
    }

    #[test]
    fn ignores_bind_mounted_subtrees_and_reports_missing() {
        let info = "31 25 0:27 /sub /mnt/x rw - cgroup2 cgroup2 rw";
        assert!(matches!(
            Hierarchy::from_mountinfo(info),
            Err(CgroupError::NoCgroup2)
        ));
    }

    #[test]
    fn unescapes_spaces() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
    }
}
