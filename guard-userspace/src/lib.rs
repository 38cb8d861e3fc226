//! agent-guard as a library: the daemon, its kernel side and its CLI verbs.
//!
//! The `agent-guard` binary is a thin `main` over this crate, so that the
//! privileged tests and xtask reuse its cgroup, /proc and policy code
//! instead of keeping copies of their own.
pub mod btf;
pub use guard_host::cgroup;
pub mod cli;
pub mod confine;
pub mod control;
pub mod daemon;
pub mod discover;
pub mod events;
pub mod governance;
pub mod kernel;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod rootfile;
pub mod statefile;
pub mod supervise;
pub mod unix_socket;
pub mod web;
