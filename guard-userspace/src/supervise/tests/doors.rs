//! The side doors beside unlink: renames, links, truncation, opens that
//! truncate, and the calls that are refused outright. Unprivileged, real
//! seccomp (they pass as root too).
use std::fs;

use super::harness::{Policy, TestDir, python, results, run_guarded, stderr};
use crate::supervise::Op;

fn content(p: &std::path::Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_that_remove_or_replace_a_protected_object_are_refused() {
    let dir = TestDir::new("rename");
    let secret = dir.make("keep/secret");
    for f in [
        "work/a",
        "work/b",
        "work/junk",
        "work/junk2",
        "top/keep/x",
        "top/other",
    ] {
        dir.make(f);
    }
    let policy = Policy::deny(&[dir.join("keep"), dir.join("top/keep")]);
    let script = r#"
P = lambda p: os.path.join(D, p)
t("allowed", lambda: os.rename(P("work/a"), P("work/a2")))
t("away", lambda: os.rename(P("keep/secret"), P("work/stolen")))
t("replace", lambda: os.rename(P("work/junk"), P("keep/secret")))
t("into", lambda: os.rename(P("work/junk2"), P("keep/new")))
t("parent", lambda: os.rename(P("top"), P("top2")))
os.chdir(P("work"))
t("relative", lambda: os.rename("b", "b2"))
# renameat2(AT_FDCWD, ..., RENAME_EXCHANGE)
t("exchange", lambda: sys_(316, -100, P("work/b2").encode(), -100, P("keep/secret").encode(), 2))
"#;
    let out = run_guarded(python(script, dir.path()), policy.clone()).await;
    let r = results(&out);
    assert_eq!(r.get("allowed"), Some(&0), "{}", stderr(&out));
    assert_eq!(r.get("away"), Some(&libc::EPERM));
    assert_eq!(r.get("replace"), Some(&libc::EPERM));
    assert_eq!(
        r.get("into"),
        Some(&0),
        "moving something into a protected tree removes nothing"
    );
    assert_eq!(
        r.get("parent"),
        Some(&libc::EPERM),
        "a protected object below it would move"
    );
    assert_eq!(r.get("relative"), Some(&0));
    assert_eq!(r.get("exchange"), Some(&libc::EPERM));
    assert_eq!(content(&secret), "x", "the protected file is untouched");
    assert!(dir.join("work/a2").exists() && dir.join("keep/new").exists());
    assert!(dir.join("top/keep/x").exists());
    let rename = policy
        .seen
        .lock()
        .expect("lock")
        .iter()
        .find(|q| q.object.path.ends_with("/keep/secret"))
        .cloned()
        .expect("the rename away was asked about");
    assert_eq!(rename.op, Op::Rename { exchange: false });
    let second = rename.second.expect("destination");
    assert!(second.path.ends_with("/work/stolen") && !second.exists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_truncations_of_a_protected_file_are_refused() {
    let dir = TestDir::new("trunc");
    let secret = dir.make("keep/secret");
    let other = dir.make("keep/other");
    let fine = dir.make("work/fine");
    dir.make("work/b");
    std::os::unix::fs::symlink(&other, dir.join("work/link")).expect("symlink");
    let policy = Policy::deny(&[dir.join("keep")]);
    let script = r#"
P = lambda p: os.path.join(D, p)
t("link", lambda: os.link(P("keep/secret"), P("work/alias")))
t("link-ok", lambda: os.link(P("work/b"), P("work/b2")))
t("truncate", lambda: os.truncate(P("keep/secret"), 0))
t("o_trunc", lambda: open(P("keep/secret"), "w").close())
t("through-symlink", lambda: open(P("work/link"), "w").close())
def ftrunc():
    fd = os.open(P("keep/secret"), os.O_WRONLY)   # not supervised: no O_TRUNC
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
t("ftruncate", ftrunc)
def write_ok():
    with open(P("work/fine"), "w") as f:     # O_TRUNC of an allowed file
        f.write("new")
t("o_trunc-ok", write_ok)
def create():
    with open(P("work/created"), "w") as f:  # nothing to truncate: created
        f.write("c")
t("create", create)
t("truncate-ok", lambda: os.truncate(P("work/b"), 0))
"#;
    let out = run_guarded(python(script, dir.path()), policy.clone()).await;
    let r = results(&out);
    assert_eq!(r.get("link"), Some(&libc::EPERM), "{}", stderr(&out));
    assert_eq!(r.get("link-ok"), Some(&0));
    assert_eq!(r.get("truncate"), Some(&libc::EPERM));
    assert_eq!(r.get("o_trunc"), Some(&libc::EPERM));
    assert_eq!(
        r.get("through-symlink"),
        Some(&libc::EPERM),
        "the real path is judged"
    );
    assert_eq!(r.get("ftruncate"), Some(&libc::EPERM));
    assert_eq!(r.get("o_trunc-ok"), Some(&0));
    assert_eq!(r.get("create"), Some(&0));
    assert_eq!(r.get("truncate-ok"), Some(&0));
    assert_eq!(content(&secret), "x");
    assert_eq!(content(&other), "x");
    assert_eq!(
        content(&fine),
        "new",
        "the allowed O_TRUNC open truncated and wrote"
    );
    assert_eq!(content(&dir.join("work/created")), "c");
    assert!(!dir.join("work/alias").exists() && dir.join("work/b2").exists());
    let asked: Vec<String> = policy.seen_paths();
    assert!(
        !asked.iter().any(|p| p.ends_with("/work/created")),
        "creating a file truncates nothing and is not asked about: {asked:?}"
    );
}

/// openat2 always reaches the supervisor (its flags are in memory): an
/// ordinary one still works, with the fd the supervisor installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openat2_is_performed_for_the_caller() {
    let dir = TestDir::new("openat2");
    let secret = dir.make("keep/secret");
    dir.make("work/r");
    let policy = Policy::deny(&[dir.join("keep")]);
    let script = r#"
class How(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]
P = lambda p: os.path.join(D, p).encode()
def read_via_openat2():
    how = How(os.O_RDONLY | os.O_CLOEXEC, 0, 0)
    fd = sys_(437, -100, P("work/r"), ctypes.byref(how), 24)
    assert os.read(fd, 10) == b"x"
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    os.close(fd)
import fcntl
t("read", read_via_openat2)
def trunc_via_openat2():
    how = How(os.O_WRONLY | os.O_TRUNC, 0, 0)
    sys_(437, -100, P("keep/secret"), ctypes.byref(how), 24)
t("trunc", trunc_via_openat2)
def bad_size():
    how = How(os.O_RDONLY, 0, 0)
    sys_(437, -100, P("work/r"), ctypes.byref(how), 8)
t("small", bad_size)
"#;
    let out = run_guarded(python(script, dir.path()), policy).await;
    let r = results(&out);
    assert_eq!(r.get("read"), Some(&0), "{}", stderr(&out));
    assert_eq!(r.get("trunc"), Some(&libc::EPERM));
    assert_eq!(r.get("small"), Some(&libc::EINVAL));
    assert_eq!(content(&secret), "x");
}

/// Mounts, new namespaces, chroot and io_uring_setup are refused (EPERM,
/// reported to the decider); clone3 gets ENOSYS, and threads still start
/// (libc falls back to clone, whose flags the filter reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mount_family_and_io_uring_are_refused() {
    let dir = TestDir::new("refuse");
    let policy = Policy::deny(&[]);
    let script = r#"
t("unshare-mnt", lambda: sys_(272, 0x20000))
t("unshare-user", lambda: sys_(272, 0x10000000))
t("chroot", lambda: sys_(161, b"/"))
t("mount", lambda: sys_(165, b"none", D.encode(), b"tmpfs", 0, None))
params = ctypes.create_string_buffer(120)
t("io_uring", lambda: sys_(425, 8, params))
t("clone3", lambda: sys_(435, None, 0))
def thread():
    out = []
    th = threading.Thread(target=lambda: out.append(1))
    th.start(); th.join()
    assert out == [1]
t("thread", thread)
"#;
    let out = run_guarded(python(script, dir.path()), policy.clone()).await;
    let r = results(&out);
    for label in ["unshare-mnt", "unshare-user", "chroot", "mount", "io_uring"] {
        assert_eq!(
            r.get(label),
            Some(&libc::EPERM),
            "{label}: {}",
            stderr(&out)
        );
    }
    assert_eq!(r.get("clone3"), Some(&libc::ENOSYS));
    assert_eq!(r.get("thread"), Some(&0));
    let ops: Vec<Op> = policy
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|q| q.op)
        .collect();
    use guard_common::MountOp::*;
    for want in [
        Op::Mount(MountNamespace),
        Op::Mount(UserNamespace),
        Op::Mount(Chroot),
        Op::Mount(Mount),
        Op::IoUringSetup,
    ] {
        assert!(ops.contains(&want), "{want:?} reported: {ops:?}");
    }
}
