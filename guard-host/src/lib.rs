//! Host facts shared by the daemon, the privileged tests and xtask: where
//! cgroup2 is mounted, cgroup ids and membership, and what /proc says about
//! a process. One copy, so that no caller re-parses mountinfo its own way.
pub mod cgroup;
pub mod peer;
pub mod proc;
