//! Kernel records, read: the one place that reads the repr(C) types out of
//! the ring buffer. serde never touches them; each is copied out and
//! mapped field by field into a [`Record`]. Who the agent is, which run,
//! which rule — attribution — happens above this layer, in the daemon.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use guard_common::{
    AF_INET, AF_INET6, AT_REMOVEDIR, CALL_ABSTRACT, CALL_IO_URING, ConnectRecord, EventHeader,
    EventKind, FileRecord, MountOp, MountRecord, NR_RMDIR, ObservedDeleteRecord, PATH_TRUNCATED,
    PATH_UNKNOWN, RENAME_DEST_DECIDED, RENAME_DIR, RENAME_EXCHANGES, RENAME_REPLACES, RULE_DEFAULT,
    RecordPath, RenameRecord, Verdict,
};
use thiserror::Error;

use guard_common::{
    ACTION_KILL_PENDING, ACTION_KILLED, ACTION_REFUSED, Call, ESCAPE_ATTACH, ESCAPE_CLONE,
    ESCAPE_OPEN, EscapeRecord, InodeKey, RefusedPathRecord, TAMPER_BPF, TAMPER_FILE, TAMPER_PTRACE,
    TAMPER_SIGNAL, TamperRecord,
};

use super::model::{
    CallOutcome, ConnectTarget, EscapeHow, EscapeTarget, Family, FileTarget, GuardAction,
    MountOperation, MountTarget, PATH_UNNAMED, PathPair, RenameTarget, Side, TamperTarget,
    UnixFamily, UnixTarget,
};

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {need}-byte layout")]
    Short { len: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
    #[error("unknown outcome {0}")]
    UnknownOutcome(u8),
    #[error("connect record of unknown address family {0}")]
    UnknownFamily(u16),
    #[error("self-defense record with unknown {what} {value}")]
    UnknownGuard { what: &'static str, value: u32 },
    #[error("mount record of unknown operation {0}")]
    UnknownMount(u8),
}

/// Converts CLOCK_BOOTTIME (what the kernel stamps) to wall-clock time.
pub struct BootClock {
    /// realtime - boottime, in ns, sampled at start.
    offset_ns: i128,
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

impl BootClock {
    pub fn new() -> Self {
        use nix::time::{ClockId, clock_gettime};
        let ns = |id| {
            clock_gettime(id)
                .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
                .unwrap_or(0)
        };
        let boot = ns(ClockId::CLOCK_BOOTTIME);
        let real = ns(ClockId::CLOCK_REALTIME);
        Self {
            offset_ns: real - boot,
        }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let ns = self.offset_ns + ktime_ns as i128;
        if ns <= 0 {
            return SystemTime::UNIX_EPOCH;
        }
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

/// Copies a `T` out of a record slice (the ring buffer gives no alignment
/// guarantee beyond 8 bytes and may hand us a shorter record).
fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked; T is a plain repr(C) record (all bit patterns
    // valid), read unaligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// What every record says about the call: who made it and what the kernel
/// decided.
#[derive(Clone, Debug)]
pub struct Header {
    pub outcome: CallOutcome,
    /// The policy's verdict (None: a number this build does not know).
    pub verdict: Option<Verdict>,
    /// The kernel-side agent id the call was judged under.
    pub agent_id: u32,
    /// The calling task's own cgroup (a run's session cgroup, or nested).
    pub cgroup_id: u64,
    /// The agent cgroup the call was attributed to.
    pub agent_cgroup_id: u64,
    /// When it happened.
    pub time: SystemTime,
    /// The same, as the kernel stamped it (CLOCK_BOOTTIME, ns).
    pub ktime_ns: u64,
    /// The hold, for `held` outcomes.
    pub hold_id: Option<u64>,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The matched rule's id; None for the agent's default.
    pub rule_id: Option<u32>,
    /// The grant that let an `ask` through.
    pub grant_id: Option<u32>,
    pub comm: String,
    /// The calling task's exec count (`EventHeader::exec_id`; 0: unknown).
    pub exec_id: u64,
}

/// One kernel record.
#[derive(Clone, Debug)]
pub struct Record {
    pub header: Header,
    pub call: RecordCall,
    /// An io_uring worker made the call (a hold could not rewind it).
    pub io_uring: bool,
    /// The record's CALL_BUDGET bits: its agent's budget stopped it.
    pub budget: u8,
}

/// What the record says was called.
#[derive(Clone, Debug)]
pub enum RecordCall {
    Connect(ConnectTarget),
    /// A datagram to an address.
    Send(ConnectTarget),
    /// A connect to a unix socket, or a datagram to one (`send`).
    Unix {
        send: bool,
        target: UnixTarget,
    },
    /// A delete the kernel judged (BPF LSM): the path as it resolved it.
    Delete {
        rmdir: bool,
        target: FileTarget,
    },
    Truncate(FileTarget),
    Rename(RenameTarget),
    Link(PathPair),
    /// A mount-family call: the agent's `allow_mounts` decided.
    Mount(MountTarget),
    /// A delete seen at syscall entry and not blocked: the raw argument,
    /// resolved against the process's cwd or dirfd by the daemon.
    Observed {
        rmdir: bool,
        raw_path: String,
        dirfd: i32,
    },
    /// A path call refused by Landlock or the seccomp filter, seen at
    /// system call exit: an event only if it reached for the guard.
    Refused(Box<RefusedPathRecord>),
    /// An agent process left its agent's cgroup.
    Escape(EscapeTarget),
    /// An agent process reached for the guard; for a file, `protected`
    /// is the kernel's key of the protected path (named by attribution).
    Tamper {
        target: TamperTarget,
        protected: Option<InodeKey>,
    },
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8], clock: &BootClock) -> Result<Record, DecodeError> {
    let raw: EventHeader = read(bytes)?;
    let kind = EventKind::from_raw(raw.kind).ok_or(DecodeError::UnknownKind(raw.kind))?;
    let header = header(&raw, clock)?;
    let mut io_uring = false;
    let mut flags = 0u8;
    let call = match kind {
        // Classified by attribution: only a reach for the guard is an event.
        EventKind::GuardRefusedPath => RecordCall::Refused(Box::new(read(bytes)?)),
        EventKind::NetConnect | EventKind::NetSend => {
            let rec: ConnectRecord = read(bytes)?;
            flags = rec.flags as u8;
            io_uring = flags & CALL_IO_URING != 0;
            let target = connect_target(&rec)?;
            if kind == EventKind::NetSend {
                RecordCall::Send(target)
            } else {
                RecordCall::Connect(target)
            }
        }
        EventKind::FileUnlink | EventKind::FileRmdir | EventKind::FileTruncate => {
            let rec: FileRecord = read(bytes)?;
            flags = rec.path.flags;
            io_uring = flags & CALL_IO_URING != 0;
            let target = file_target(&rec.path);
            if kind == EventKind::FileTruncate {
                RecordCall::Truncate(target)
            } else {
                RecordCall::Delete {
                    rmdir: kind == EventKind::FileRmdir,
                    target,
                }
            }
        }
        EventKind::NetUnixConnect | EventKind::NetUnixSend => {
            let rec: FileRecord = read(bytes)?;
            flags = rec.path.flags;
            io_uring = flags & CALL_IO_URING != 0;
            RecordCall::Unix {
                send: kind == EventKind::NetUnixSend,
                target: unix_target(&rec.path),
            }
        }
        EventKind::FileRename | EventKind::FileLink => {
            let rec: RenameRecord = read(bytes)?;
            flags = rec.path.flags;
            io_uring = flags & CALL_IO_URING != 0;
            let paths = path_pair(&rec.path, &rec.new_path);
            if kind == EventKind::FileLink {
                RecordCall::Link(paths)
            } else {
                let flag = |bit: u8| rec.rename_flags & bit != 0;
                RecordCall::Rename(RenameTarget {
                    paths,
                    exchange: flag(RENAME_EXCHANGES),
                    replaces: flag(RENAME_REPLACES),
                    directory: flag(RENAME_DIR),
                    decided_by: if flag(RENAME_DEST_DECIDED) {
                        Side::Destination
                    } else {
                        Side::Source
                    },
                })
            }
        }
        EventKind::FileMount => RecordCall::Mount(mount_target(&read(bytes)?)?),
        // Only the seccomp supervisor reports these, never the kernel.
        EventKind::FileIoUring => return Err(DecodeError::UnknownKind(raw.kind)),
        EventKind::AgentEscape => RecordCall::Escape(escape_target(&read(bytes)?)?),
        EventKind::GuardTamper => {
            let rec: TamperRecord = read(bytes)?;
            let target = tamper_target(&rec)?;
            let protected = matches!(target, TamperTarget::File { .. }).then_some(rec.protected);
            RecordCall::Tamper { target, protected }
        }
        EventKind::FileObserved => {
            let rec: ObservedDeleteRecord = read(bytes)?;
            let len = (rec.path_len as usize).min(rec.path.len());
            RecordCall::Observed {
                rmdir: rec.nr == NR_RMDIR as u32 || rec.flags & AT_REMOVEDIR != 0,
                raw_path: String::from_utf8_lossy(&rec.path[..len]).into_owned(),
                dirfd: rec.dirfd,
            }
        }
    };
    Ok(Record {
        header,
        call,
        io_uring,
        budget: flags & (guard_common::CALL_BUDGET | guard_common::CALL_BUDGET_EXHAUSTED),
    })
}

fn header(h: &EventHeader, clock: &BootClock) -> Result<Header, DecodeError> {
    let end = h.comm.iter().position(|b| *b == 0).unwrap_or(h.comm.len());
    Ok(Header {
        outcome: CallOutcome::from_kernel(h.outcome)
            .ok_or(DecodeError::UnknownOutcome(h.outcome))?,
        verdict: Verdict::from_raw(h.verdict),
        agent_id: h.agent_id,
        cgroup_id: h.cgroup_id,
        agent_cgroup_id: h.agent_cgroup_id,
        time: clock.wall(h.ktime_ns),
        ktime_ns: h.ktime_ns,
        hold_id: (h.hold_id != 0).then_some(h.hold_id),
        pid: h.pid,
        tid: h.tid,
        uid: h.uid,
        gid: h.gid,
        rule_id: (h.rule_id != RULE_DEFAULT).then_some(h.rule_id),
        grant_id: (h.grant_id != 0).then_some(h.grant_id),
        comm: String::from_utf8_lossy(&h.comm[..end]).into_owned(),
        exec_id: h.exec_id,
    })
}

/// A record's path: (path, error, truncated).
fn record_path(p: &RecordPath) -> (Option<String>, Option<String>, bool) {
    if p.state == PATH_UNKNOWN {
        return (None, Some(PATH_UNNAMED.into()), false);
    }
    let len = usize::from(p.len).min(p.bytes.len());
    (
        Some(String::from_utf8_lossy(&p.bytes[..len]).into_owned()),
        None,
        p.state == PATH_TRUNCATED,
    )
}

fn file_target(p: &RecordPath) -> FileTarget {
    let (path, path_error, path_truncated) = record_path(p);
    FileTarget {
        path,
        path_error,
        path_truncated,
        ..FileTarget::default()
    }
}

fn path_pair(from: &RecordPath, to: &RecordPath) -> PathPair {
    let (path, path_error, path_truncated) = record_path(from);
    let (new_path, new_path_error, new_path_truncated) = record_path(to);
    PathPair {
        path,
        path_error,
        path_truncated,
        new_path,
        new_path_error,
        new_path_truncated,
        ..PathPair::default()
    }
}

/// A unix socket's peer: its path, or an abstract socket's name (which
/// the kernel writes as `@name`, as `unix:@name` rules do).
fn unix_target(p: &RecordPath) -> UnixTarget {
    let (path, path_error, path_truncated) = record_path(p);
    UnixTarget {
        family: UnixFamily::Unix,
        is_abstract: path.is_some() && p.flags & CALL_ABSTRACT != 0,
        path,
        path_error,
        path_truncated,
    }
}

pub fn mount_operation(op: MountOp) -> MountOperation {
    match op {
        MountOp::Mount => MountOperation::Mount,
        MountOp::MoveMount => MountOperation::MoveMount,
        MountOp::PivotRoot => MountOperation::PivotRoot,
        MountOp::Chroot => MountOperation::Chroot,
        MountOp::UserNamespace => MountOperation::UserNamespace,
        MountOp::MountNamespace => MountOperation::MountNamespace,
        MountOp::OpenTree => MountOperation::OpenTree,
        MountOp::FsMount => MountOperation::Fsmount,
        MountOp::MountSetattr => MountOperation::MountSetattr,
    }
}

fn mount_target(rec: &MountRecord) -> Result<MountTarget, DecodeError> {
    let operation = MountOp::from_raw(rec.op).ok_or(DecodeError::UnknownMount(rec.op))?;
    // No path at all: the hook gives none (a new namespace).
    let (path, path_error, path_truncated) = if rec.path.state == PATH_UNKNOWN && rec.path.len == 0
    {
        (None, None, false)
    } else {
        record_path(&rec.path)
    };
    Ok(MountTarget {
        operation: mount_operation(operation),
        path,
        raw_path: None,
        path_error,
        path_truncated,
    })
}

fn connect_target(rec: &ConnectRecord) -> Result<ConnectTarget, DecodeError> {
    let (family, address) = match rec.family {
        AF_INET => (
            Family::Ipv4,
            IpAddr::V4(Ipv4Addr::new(
                rec.addr[0],
                rec.addr[1],
                rec.addr[2],
                rec.addr[3],
            )),
        ),
        AF_INET6 => (Family::Ipv6, IpAddr::V6(Ipv6Addr::from(rec.addr))),
        other => return Err(DecodeError::UnknownFamily(other)),
    };
    Ok(ConnectTarget {
        family,
        address,
        port: rec.port,
    })
}

fn guard_action(raw: u32) -> Result<GuardAction, DecodeError> {
    Ok(match raw {
        ACTION_REFUSED => GuardAction::Refused,
        ACTION_KILLED => GuardAction::Killed,
        ACTION_KILL_PENDING => GuardAction::KillPending,
        value => {
            return Err(DecodeError::UnknownGuard {
                what: "action",
                value,
            });
        }
    })
}

fn escape_target(rec: &EscapeRecord) -> Result<EscapeTarget, DecodeError> {
    let how = match rec.how {
        ESCAPE_ATTACH => EscapeHow::CgroupWrite,
        ESCAPE_CLONE => EscapeHow::CloneIntoCgroup,
        ESCAPE_OPEN => EscapeHow::CgroupOpen,
        value => return Err(DecodeError::UnknownGuard { what: "how", value }),
    };
    let len = (rec.path_len as usize).min(rec.path.len());
    let action = guard_action(rec.action)?;
    Ok(EscapeTarget {
        how,
        action,
        pid: rec.moved_pid,
        cgroup_id: rec.dst_cgroup_id,
        cgroup: (len > 0).then(|| String::from_utf8_lossy(&rec.path[..len]).into_owned()),
        // Only the seccomp filter refuses clone3 (seen at system call
        // exit); the fork hook lets it happen and kills.
        call: (how == EscapeHow::CloneIntoCgroup && action == GuardAction::Refused)
            .then(|| "clone3".to_owned()),
        path: None,
    })
}

fn tamper_target(rec: &TamperRecord) -> Result<TamperTarget, DecodeError> {
    let action = guard_action(rec.action)?;
    // Known where the refusal was seen at system call exit; the BPF LSM
    // hooks see the operation, not the call.
    let call = u16::try_from(rec.call).ok().and_then(Call::from_raw);
    let name = call.map(|c| c.name().to_owned());
    Ok(match rec.what {
        TAMPER_SIGNAL => TamperTarget::Signal {
            action,
            pid: rec.target_pid,
            signal: rec.arg,
            call: name,
        },
        TAMPER_PTRACE => TamperTarget::Ptrace {
            action,
            pid: rec.target_pid,
            mode: call.is_none().then_some(rec.arg),
            request: (call == Some(Call::Ptrace)).then_some(rec.arg),
            fd: (call == Some(Call::PidfdGetfd)).then_some(rec.arg),
            call: name,
            path: None,
        },
        TAMPER_BPF => TamperTarget::Bpf {
            action,
            command: rec.arg,
            call: name,
        },
        TAMPER_FILE => TamperTarget::File {
            action,
            protected: None,
            // FMODE_WRITE.
            write: rec.arg & 2 != 0,
            call: name,
            path: None,
        },
        value => {
            return Err(DecodeError::UnknownGuard {
                what: "what",
                value,
            });
        }
    })
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
