//! Stable numbers that cross the kernel/user boundary and appear in events.
//!
//! Numbers are grouped in ranges and are never renumbered or reused: a SIEM
//! rule written against one release keeps meaning the same thing.

macro_rules! stable_enum {
    ($(#[$m:meta])* $name:ident : $repr:ty { $($(#[$vm:meta])* $var:ident = $val:expr),+ $(,)? }) => {
        $(#[$m])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vm])* $var = $val),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// Decodes a number read from the kernel; `None` for a number this
            /// build does not know (a newer kernel object, or corruption).
            pub const fn from_raw(raw: $repr) -> Option<Self> {
                match raw { $($val => Some($name::$var),)+ _ => None }
            }

            pub const fn raw(self) -> $repr { self as $repr }
        }
    };
}
pub(crate) use stable_enum;

stable_enum! {
    /// What an event record describes. 1xx network, 2xx files, 3xx the
    /// guard defending itself, 9xx bookkeeping.
    EventKind: u16 {
        NetConnect = 100,
        /// A datagram sent to an address (UDP sendmsg/sendto with a
        /// destination; a connected socket's were judged at connect).
        NetSend = 101,
        /// A connect to a unix socket (stream or seqpacket).
        NetUnixConnect = 102,
        /// A datagram to a unix socket.
        NetUnixSend = 103,
        FileUnlink = 200,
        FileRmdir = 201,
        /// rename/renameat/renameat2, RENAME_EXCHANGE included: see
        /// [`crate::RenameRecord`].
        FileRename = 202,
        /// truncate, ftruncate, or an open with O_TRUNC of an existing file.
        FileTruncate = 203,
        /// A hard link: a second name for an existing file.
        FileLink = 204,
        /// A mount, bind mount, move_mount, pivot_root, chroot or new
        /// namespace: see [`crate::MountRecord`].
        FileMount = 205,
        /// io_uring_setup refused to a run the seccomp backend supervises
        /// (it cannot see io_uring operations). Reported by the supervisor.
        FileIoUring = 206,
        /// An unlink/unlinkat/rmdir seen at syscall entry (sys_enter) by a
        /// process no backend can block: see [`crate::ObservedDeleteRecord`].
        FileObserved = 210,
        /// An agent process left, or tried to leave, its agent's cgroup
        /// tree: see [`crate::EscapeRecord`].
        AgentEscape = 300,
        /// An agent process reached for the guard's processes, files or
        /// kernel objects: see [`crate::TamperRecord`].
        GuardTamper = 301,
        /// An agent's path call that the kernel refused, seen at system
        /// call exit where the BPF LSM hooks are not in force: see
        /// [`crate::RefusedPathRecord`]. The daemon reports it as
        /// `guard.tamper` or `agent.escape` when the path is the guard's
        /// or a cgroup file, and drops it otherwise; never an event kind
        /// of its own.
        GuardRefusedPath = 302,
    }
}

stable_enum! {
    /// A policy verdict. Ordered by severity so that, on an exact tie between
    /// rules, the larger number wins (deny > ask > allow).
    Verdict: u8 {
        Allow = 1,
        Ask = 2,
        Deny = 3,
    }
}

stable_enum! {
    /// What actually happened to the call.
    Outcome: u8 {
        Allowed = 1,
        Denied = 2,
        Held = 3,
        /// Audit (shadow) mode: the call was allowed; the verdict field holds
        /// what enforce mode would have done.
        Audited = 4,
        /// Seen but not judged: no backend could block this process's call
        /// (kernel without BPF LSM, process not started by `run`). The
        /// verdict is the one the policy gives.
        Observed = 5,
    }
}

stable_enum! {
    /// Per-agent enforcement mode.
    Mode: u8 {
        Enforce = 1,
        Audit = 2,
        /// Enforce, and hold every call no explicit rule allows (see
        /// [`crate::applied_verdict`]).
        Freeze = 3,
    }
}

stable_enum! {
    /// State of a call held in the kernel (LSM or connect hook).
    HoldState: u8 {
        /// Waiting for a human; the thread is stopped.
        Pending = 1,
        /// Decided: the restarted call proceeds.
        Allow = 2,
        /// Decided: the restarted call fails with EPERM.
        Deny = 3,
    }
}

stable_enum! {
    /// Why an event could not be delivered from the kernel. Index into the
    /// per-CPU loss counter array.
    LossReason: u32 {
        /// The ring buffer had no room for the record.
        RingbufFull = 0,
        /// A call to hold could not be held (hold table full, or the stop
        /// signal could not be sent): it was denied instead.
        HoldFailed = 1,
        /// Self-defense could not do its part: an agent process could not
        /// be tracked (table full) or an escaping one could not be killed.
        GuardFailed = 2,
    }
}

stable_enum! {
    /// Which mount-family call a [`crate::MountRecord`] reports.
    MountOp: u8 {
        /// mount(2): new mounts, bind mounts, remounts, moves.
        Mount = 1,
        /// move_mount(2): attaching a detached tree, or moving a mount.
        MoveMount = 2,
        PivotRoot = 3,
        Chroot = 4,
        /// A new user namespace (clone, unshare).
        UserNamespace = 5,
        /// A new mount namespace (clone, unshare) or joining one (setns).
        MountNamespace = 6,
        /// open_tree(2) with OPEN_TREE_CLONE: a detached copy of a tree.
        OpenTree = 7,
        /// fsopen/fsconfig/fsmount/fspick: the new mount API.
        FsMount = 8,
        /// mount_setattr(2).
        MountSetattr = 9,
    }
}

/// Number of slots in the loss counter array (one per [`LossReason`]).
pub const LOSS_REASONS: u32 = 4;

/// Rule id 0 means "no rule matched; the agent's default applied".
pub const RULE_DEFAULT: u32 = 0;

/// Rule ids from this one up are no policy rule: the guard refused the
/// call to defend itself, whatever the policy says. `RULE_GUARD + N` names
/// what was protected (N: [`crate::SURFACE_WEB`], [`crate::SURFACE_METRICS`]).
/// Policy rule ids count up from 1 and never get here.
pub const RULE_GUARD: u32 = 0xFFFF_FF00;

/// Deepest cgroup level (0 = the cgroup2 root) at which an agent cgroup may
/// sit. The kernel checks ancestors at the levels flagged in
/// [`crate::Config::agent_levels`], which is a 64-bit mask.
pub const MAX_CGROUP_LEVEL: u32 = 63;
