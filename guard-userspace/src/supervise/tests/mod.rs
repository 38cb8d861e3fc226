//! End-to-end tests: real child processes under the real filter, supervised
//! by `supervise`, deleting in a real temporary directory. They need no
//! privilege (seccomp user notification works with no-new-privs); the
//! tests in `privileged.rs` run only as root and return early otherwise.
mod cases;
mod doors;
mod harness;
mod privileged;
mod resume;
