//! Unprivileged end-to-end cases (they pass as root too).
use std::{io::Write as _, os::unix::fs::symlink};

use tokio::{io::AsyncWriteExt as _, time::timeout};

use super::harness::{
    Hold, LIVENESS, Policy, TestDir, cmd, python, results, run_guarded, spawn_guarded, stderr,
};
use crate::supervise::supervise;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_of_allowed_file_succeeds_and_of_denied_file_fails() {
    let dir = TestDir::new("rm");
    let allowed = dir.make("allowed.txt");
    let secret = dir.make("denied/secret.txt");
    let policy = Policy::deny(&[dir.join("denied")]);

    let out = run_guarded(cmd("rm", &["allowed.txt"], dir.path()), policy.clone()).await;
    assert!(out.status.success(), "rm failed: {}", stderr(&out));
    assert!(!allowed.exists());

    let out = run_guarded(
        cmd("rm", &["denied/secret.txt"], dir.path()),
        policy.clone(),
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    assert!(secret.exists());

    // The decider saw real absolute paths, and performed() only the allowed one.
    assert_eq!(
        policy.seen_paths(),
        [
            allowed.to_str().expect("utf-8"),
            secret.to_str().expect("utf-8")
        ]
    );
    let performed = policy.performed.lock().expect("lock").clone();
    assert_eq!(
        performed,
        [(allowed.to_str().expect("utf-8").to_owned(), Ok(()))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_rf_removes_exactly_the_allowed_part() {
    let dir = TestDir::new("rmrf");
    dir.make("top/a.txt");
    dir.make("top/sub/b.txt");
    dir.make("top/sub/deeper/c.txt");
    dir.make("top/keep/d.txt");
    dir.make("top/keep/inner/e.txt");
    dir.make("top/empty/");
    let policy = Policy::deny(&[dir.join("top/keep")]);

    let out = run_guarded(cmd("rm", &["-rf", "top"], dir.path()), policy).await;
    assert!(
        !out.status.success(),
        "rm -rf cannot remove a denied subtree"
    );
    for gone in ["top/a.txt", "top/sub", "top/empty"] {
        assert!(!dir.join(gone).exists(), "{gone} should be gone");
    }
    for kept in ["top/keep/d.txt", "top/keep/inner/e.txt"] {
        assert!(dir.join(kept).exists(), "{kept} should stay");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_relative_unlink_and_rmtree() {
    let dir = TestDir::new("py");
    dir.make("work/a.txt");
    dir.make("work/denied/b.txt");
    dir.make("work/tree/x/y.txt");
    dir.make("work/tree/z.txt");
    dir.make("work/denied/tree/w.txt");
    let policy = Policy::deny(&[dir.join("work/denied")]);
    let script = r#"
os.chdir(os.path.join(D, "work"))
t("rel", lambda: os.unlink("a.txt"))
t("rel_denied", lambda: os.unlink("denied/b.txt"))
t("dotdot", lambda: os.unlink("tree/x/../z.txt"))
t("rmtree", lambda: shutil.rmtree("tree"))
t("rmtree_denied", lambda: shutil.rmtree("denied/tree"))
"#;
    let out = run_guarded(python(script, dir.path()), policy).await;
    let r = results(&out);
    assert_eq!(r.get("rel"), Some(&0), "{}", stderr(&out));
    assert_eq!(r.get("rel_denied"), Some(&libc::EPERM));
    assert_eq!(r.get("dotdot"), Some(&0));
    assert_eq!(r.get("rmtree"), Some(&0));
    assert_eq!(r.get("rmtree_denied"), Some(&libc::EPERM));
    assert!(!dir.join("work/a.txt").exists() && !dir.join("work/tree").exists());
    assert!(dir.join("work/denied/b.txt").exists());
    assert!(dir.join("work/denied/tree/w.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinkat_with_dirfd_and_rmdir() {
    let dir = TestDir::new("dirfd");
    dir.make("x.txt");
    dir.make("empty/");
    dir.make("empty2/");
    dir.make("denied/empty/");
    dir.make("denied/y.txt");
    let policy = Policy::deny(&[dir.join("denied")]);
    let script = r#"
d = os.open(D, os.O_RDONLY | os.O_DIRECTORY)
t("unlinkat", lambda: os.unlink("x.txt", dir_fd=d))
t("rmdirat", lambda: os.rmdir("empty", dir_fd=d))
t("rmdir", lambda: os.rmdir(os.path.join(D, "empty2")))
t("rmdir_denied", lambda: os.rmdir(os.path.join(D, "denied", "empty")))
dd = os.open(os.path.join(D, "denied"), os.O_RDONLY)
t("unlinkat_denied", lambda: os.unlink("y.txt", dir_fd=dd))
"#;
    let out = run_guarded(python(script, dir.path()), policy.clone()).await;
    let r = results(&out);
    for (label, want) in [
        ("unlinkat", 0),
        ("rmdirat", 0),
        ("rmdir", 0),
        ("rmdir_denied", libc::EPERM),
        ("unlinkat_denied", libc::EPERM),
    ] {
        assert_eq!(r.get(label), Some(&want), "{label}: {}", stderr(&out));
    }
    assert!(
        !dir.join("x.txt").exists() && !dir.join("empty").exists() && !dir.join("empty2").exists()
    );
    assert!(dir.join("denied/empty").exists() && dir.join("denied/y.txt").exists());
    let rmdirs: Vec<_> = policy
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.op)
        .collect();
    assert_eq!(
        rmdirs
            .iter()
            .filter(|op| **op == crate::supervise::Op::Rmdir)
            .count(),
        3
    );
}

/// The same operations, unsupervised and supervised (allow-all), must give
/// the same errnos: the supervisor answers as the kernel would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errnos_match_the_kernel() {
    let script = r#"
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def raw(label, *args):
    r = libc.syscall(*args)
    print(label, 0 if r == 0 else ctypes.get_errno(), flush=True)
os.chdir(D)
t("missing", lambda: os.unlink("missing"))
t("missing_denied", lambda: os.unlink("denied/missing"))
t("missing_parent", lambda: os.unlink("nodir/x"))
t("file_as_parent", lambda: os.unlink("afile/x"))
t("unlink_dir", lambda: os.unlink("adir"))
t("rmdir_file", lambda: os.rmdir("afile"))
t("rmdir_dot", lambda: os.rmdir("adir/."))
t("rmdir_dotdot", lambda: os.rmdir("adir/.."))
t("unlink_dot", lambda: os.unlink("."))
t("rmdir_root", lambda: os.rmdir("/"))
t("unlink_root", lambda: os.unlink("/"))
t("empty", lambda: os.unlink(""))
t("not_empty", lambda: os.rmdir("full"))
t("slash_file", lambda: os.unlink("afile/"))
t("slash_dir", lambda: os.unlink("adir/"))
t("slash_missing", lambda: os.unlink("nothing/"))
t("rmdir_slash", lambda: os.rmdir("adir2/"))
t("long_path", lambda: os.unlink("a" * 5000))
t("long_name", lambda: os.unlink("a" * 300))
t("bad_dirfd", lambda: os.unlink("afile", dir_fd=987))
fd = os.open("afile", os.O_RDONLY)
t("file_dirfd", lambda: os.unlink("x", dir_fd=fd))
t("abs_ignores_dirfd", lambda: os.unlink(os.path.join(D, "gone1"), dir_fd=987))
raw("bad_flags", ctypes.c_long(263), ctypes.c_long(-100), b"afile", ctypes.c_long(0x8000))
raw("bad_pointer", ctypes.c_long(87), ctypes.c_void_p(8))
os.symlink("adir", "dirlink")
t("rmdir_symlink", lambda: os.rmdir("dirlink"))
t("unlink_symlink", lambda: os.unlink("dirlink"))
"#;
    let layout = |dir: &TestDir| {
        for f in ["afile", "full/f", "gone1", "denied/keep"] {
            dir.make(f);
        }
        dir.make("adir/");
        dir.make("adir2/");
    };
    let plain_dir = TestDir::new("errno-plain");
    layout(&plain_dir);
    let plain = python(script, plain_dir.path())
        .output()
        .await
        .expect("unsupervised run");
    let guarded_dir = TestDir::new("errno-guarded");
    layout(&guarded_dir);
    let guarded = run_guarded(python(script, guarded_dir.path()), Policy::deny(&[])).await;

    let (want, got) = (results(&plain), results(&guarded));
    assert_eq!(
        want.len(),
        26,
        "every case ran: {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert_eq!(got, want, "stderr: {}", stderr(&guarded));
    // Not vacuous: the interesting answers are what we think they are.
    for (label, errno) in [
        ("missing", libc::ENOENT),
        ("unlink_dir", libc::EISDIR),
        ("rmdir_dot", libc::EINVAL),
        ("long_path", libc::ENAMETOOLONG),
        ("bad_dirfd", libc::EBADF),
        ("bad_pointer", libc::EFAULT),
        ("bad_flags", libc::EINVAL),
        ("rmdir_slash", 0),
        ("abs_ignores_dirfd", 0),
        ("unlink_symlink", 0),
    ] {
        assert_eq!(got.get(label), Some(&errno), "{label}");
    }
}

/// The key TOCTOU property: policy sees the directory actually acted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_judged_by_the_real_parent() {
    let dir = TestDir::new("symlink");
    let secret = dir.make("denied/secret.txt");
    dir.make("allowed/");
    let link = dir.join("allowed/link");
    symlink(&secret, &link).expect("file symlink");
    symlink(dir.join("denied"), dir.join("alias")).expect("dir symlink");
    let policy = Policy::deny(&[dir.join("denied")]);

    // Removes the link itself, judged by where the link lives.
    let out = run_guarded(cmd("rm", &["allowed/link"], dir.path()), policy.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(link.symlink_metadata().is_err() && secret.exists());

    // The parent "alias" really is denied/: denied.
    let out = run_guarded(cmd("rm", &["alias/secret.txt"], dir.path()), policy.clone()).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    assert!(secret.exists());
    assert_eq!(
        policy.seen_paths(),
        [
            link.to_str().expect("utf-8"),
            secret.to_str().expect("utf-8")
        ]
    );
    let raw: Vec<_> = policy
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.object.raw_path.clone())
        .collect();
    assert_eq!(raw, ["allowed/link", "alias/secret.txt"]);
}

/// One thread held by the decider; the process's other threads keep
/// running, and another thread's deletion is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_blocks_only_its_thread() {
    let dir = TestDir::new("threads");
    let held = dir.make("held.txt");
    let other = dir.make("other.txt");
    let ticks = dir.join("ticks");
    let (hold, mut called) = Hold::new(&held);
    let script = r#"
ticks = os.open(os.path.join(D, "ticks"), os.O_WRONLY | os.O_CREAT, 0o644)
def ticker():
    n = 0
    while True:
        n += 1
        os.pwrite(ticks, b"%20d" % n, 0)
        time.sleep(0.005)
def other():
    while not os.path.exists(os.path.join(D, "go")):
        time.sleep(0.005)
    t("other", lambda: os.unlink(os.path.join(D, "other.txt")))
threading.Thread(target=ticker, daemon=True).start()
o = threading.Thread(target=other, daemon=True)
o.start()
t("held", lambda: os.unlink(os.path.join(D, "held.txt")))
# Its unlink is done when the test releases the hold, but its line may not
# be printed yet: exiting now would lose it.
o.join()
"#;
    let (child, listener) = spawn_guarded(python(script, dir.path())).await;
    let supervisor = tokio::spawn(supervise(listener, Policy::holding(hold.clone())));
    timeout(LIVENESS, called.recv())
        .await
        .expect("held call reached the decider");

    let read_ticks = || -> u64 {
        std::fs::read_to_string(&ticks)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let start = read_ticks();
    timeout(LIVENESS, async {
        while read_ticks() < start + 3 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the ticker thread kept running while the main thread was held");

    std::fs::File::create(dir.join("go"))
        .expect("go")
        .flush()
        .expect("flush");
    timeout(LIVENESS, async {
        while other.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("another thread's unlink was answered while one was held");
    assert!(held.exists(), "still held");

    hold.release();
    let out = timeout(LIVENESS, child.wait_with_output())
        .await
        .expect("exit")
        .expect("output");
    let r = results(&out);
    assert_eq!(r.get("held"), Some(&0), "{}", stderr(&out));
    assert_eq!(r.get("other"), Some(&0));
    assert!(!held.exists());
    timeout(LIVENESS, supervisor)
        .await
        .expect("ends")
        .expect("no panic")
        .expect("clean");
}

/// `int 0x80` reaches the i386 syscall table; it must not bypass the guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i386_int80_unlink_is_supervised() {
    let dir = TestDir::new("i386");
    let allowed = dir.make("allowed.txt");
    let secret = dir.make("denied/secret.txt");
    let script = r#"
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
# PROT_READ|WRITE|EXEC, MAP_PRIVATE|ANONYMOUS|32BIT: int 0x80 takes 32-bit pointers.
page = libc.mmap(None, 4096, 7, 0x02 | 0x20 | 0x40, -1, 0)
def int80_unlink(path):
    data = path.encode() + b"\0"
    ctypes.memmove(page + 1024, data, len(data))
    # push rbx; mov eax, 10 (i386 unlink); mov ebx, path; int 0x80; pop rbx; ret
    code = (b"\x53\xb8" + (10).to_bytes(4, "little") + b"\xbb"
            + (page + 1024).to_bytes(4, "little") + b"\xcd\x80\x5b\xc3")
    ctypes.memmove(page, code, len(code))
    return ctypes.CFUNCTYPE(ctypes.c_int)(page)()
print("allowed", -int80_unlink(os.path.join(D, "allowed.txt")), flush=True)
print("denied", -int80_unlink(os.path.join(D, "denied", "secret.txt")), flush=True)
"#;
    let policy = Policy::deny(&[dir.join("denied")]);
    let out = run_guarded(python(script, dir.path()), policy.clone()).await;
    let r = results(&out);
    assert_eq!(r.get("allowed"), Some(&0), "{}", stderr(&out));
    assert_eq!(r.get("denied"), Some(&libc::EPERM));
    assert!(!allowed.exists() && secret.exists());
    assert_eq!(policy.seen_paths().len(), 2);
}

/// The daemon dies (the supervisor is dropped): the held call and every
/// later one fail with ENOSYS, and nothing is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_supervisor_fails_calls_with_enosys() {
    let dir = TestDir::new("enosys");
    let held = dir.make("held.txt");
    let after = dir.make("after.txt");
    let (hold, mut called) = Hold::new(&held);
    let script = r#"
t("held", lambda: os.unlink(os.path.join(D, "held.txt")))
sys.stdin.readline()
t("after", lambda: os.unlink(os.path.join(D, "after.txt")))
"#;
    let mut command = python(script, dir.path());
    command.stdin(std::process::Stdio::piped());
    let (mut child, listener) = spawn_guarded(command).await;
    let supervisor = tokio::spawn(supervise(listener, Policy::holding(hold)));
    timeout(LIVENESS, called.recv())
        .await
        .expect("held call reached the decider");
    supervisor.abort();
    assert!(supervisor.await.expect_err("aborted").is_cancelled());

    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").await.expect("write");
    drop(stdin);
    let out = timeout(LIVENESS, child.wait_with_output())
        .await
        .expect("exit")
        .expect("output");
    let r = results(&out);
    assert_eq!(r.get("held"), Some(&libc::ENOSYS), "{}", stderr(&out));
    assert_eq!(r.get("after"), Some(&libc::ENOSYS));
    assert!(held.exists() && after.exists());
}

/// A decider that panics (before or inside its future) denies: fail closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_decider_denies() {
    use crate::supervise::{Decide, Decision, Request};
    use std::{future::Future, pin::Pin};

    struct Panicky;
    impl Decide for Panicky {
        fn decide(
            &self,
            req: Request,
        ) -> Pin<Box<dyn Future<Output = (Request, Decision)> + Send>> {
            assert!(
                !req.object.path.ends_with("/sync.txt"),
                "decider bug (sync)"
            );
            Box::pin(async move {
                assert!(
                    !req.object.path.ends_with("/async.txt"),
                    "decider bug (async)"
                );
                (req, Decision::Allow)
            })
        }
    }

    let dir = TestDir::new("panic");
    let files = [
        dir.make("sync.txt"),
        dir.make("async.txt"),
        dir.make("fine.txt"),
    ];
    let script = r#"
for name in ["sync.txt", "async.txt", "fine.txt"]:
    t(name, lambda: os.unlink(os.path.join(D, name)))
"#;
    let out = run_guarded(python(script, dir.path()), std::sync::Arc::new(Panicky)).await;
    let r = results(&out);
    assert_eq!(r.get("sync.txt"), Some(&libc::EPERM), "{}", stderr(&out));
    assert_eq!(r.get("async.txt"), Some(&libc::EPERM));
    assert_eq!(r.get("fine.txt"), Some(&0));
    assert!(files[0].exists() && files[1].exists() && !files[2].exists());
}
