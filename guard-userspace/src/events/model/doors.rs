//! The targets of the side doors beside unlink and connect: a rename or a
//! link (two paths), a mount-family call, io_uring_setup refused to a
//! supervised run, and a unix socket peer. Both backends fill the same
//! types: the kernel from its records (decode.rs), the seccomp supervisor
//! from what it resolved (daemon attribution).
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why the kernel gave no path (its record's path state was unknown).
pub const PATH_UNNAMED: &str = "the kernel could not name it from the caller's root (a detached \
                                mount, another namespace, or a path deeper than it walks)";

/// The two paths of a rename or a link. Each is absolute as the process
/// sees it; absent when it could not be named (see `*_error`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
pub struct PathPair {
    /// A rename's source; a link's existing file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The argument as the process passed it (seccomp backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_error: Option<String>,
    /// The kernel's path buffer cut `path`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    /// A rename's destination; a link's new name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_new_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_path_error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_path_truncated: bool,
}

/// `file.rename`'s target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
pub struct RenameTarget {
    #[serde(flatten)]
    pub paths: PathPair,
    /// RENAME_EXCHANGE: both objects move.
    pub exchange: bool,
    /// The destination existed and is replaced (or exchanged).
    pub replaces: bool,
    /// The source is a directory: everything below it moves with it.
    pub directory: bool,
    /// Whose verdict decided: the stricter of the two.
    pub decided_by: Side,
}

impl RenameTarget {
    /// The path whose rule decided (what a grant must cover).
    pub fn decided_path(&self) -> Option<&str> {
        match self.decided_by {
            Side::Source => self.paths.path.as_deref(),
            Side::Destination => self.paths.new_path.as_deref(),
        }
    }
}

/// Which path of a rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Source,
    Destination,
}

/// `file.mount`'s target: which call, and where it would have mounted (or
/// the new root) when the hook gives one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
pub struct MountTarget {
    pub operation: MountOperation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
}

/// The mount-family calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountOperation {
    /// mount(2): new mounts, bind mounts, remounts, moves.
    Mount,
    /// move_mount(2): attaching a detached tree, or moving a mount.
    MoveMount,
    PivotRoot,
    Chroot,
    /// A new user namespace (clone, unshare).
    UserNamespace,
    /// A new mount namespace.
    MountNamespace,
    OpenTree,
    Fsmount,
    MountSetattr,
}

impl MountOperation {
    pub fn name(self) -> &'static str {
        match self {
            MountOperation::Mount => "mount",
            MountOperation::MoveMount => "move_mount",
            MountOperation::PivotRoot => "pivot_root",
            MountOperation::Chroot => "chroot",
            MountOperation::UserNamespace => "user_namespace",
            MountOperation::MountNamespace => "mount_namespace",
            MountOperation::OpenTree => "open_tree",
            MountOperation::Fsmount => "fsmount",
            MountOperation::MountSetattr => "mount_setattr",
        }
    }
}

/// `file.io_uring`'s target: the one call it reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
pub struct IoUringTarget {
    pub operation: IoUringOperation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoUringOperation {
    IoUringSetup,
}

/// A unix socket peer (`net.unix_connect`, `net.unix_send`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
pub struct UnixTarget {
    pub family: UnixFamily,
    /// The socket's path; an abstract name as `@name`, as `unix:@name`
    /// rules write it. Absent when the kernel could not name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    /// An abstract socket (no file).
    #[serde(
        rename = "abstract",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub is_abstract: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnixFamily {
    Unix,
}

/// How a call reached the guard, when not as a plain system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallVia {
    /// An io_uring worker performed it: a hold cannot rewind it, so an
    /// `ask` is refused (see `reason`).
    IoUring,
}

/// What an io_uring call's event says when an `ask` became a denial.
pub const IO_URING_REASON: &str = "an io_uring operation cannot be held (it completes into the \
                                   ring, not a system call a signal could restart); refused \
                                   instead";
