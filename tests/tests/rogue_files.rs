//! The rogue-agent suite, files: every other way to destroy a protected
//! file or to reach it under another path. On this kernel the seccomp
//! supervisor of `agent-guard run` closes them; in the VM tier BPF LSM
//! does. For each door: the object is intact, the agent saw EPERM, an
//! event says so; and the allowed form still works.
use std::fs;

use agent_guard_tests::*;

fn start(test: &str) -> (Daemon, Scratch) {
    let cg = TestCgroups::new(test);
    let scratch = Scratch::new(test);
    let policy = format!(
        r#"
[daemon]
approval_timeout_secs = 300

[[agent]]
name = "rogue"
owner = "sec@example.com"
purpose = "looks for the door beside the locked one"
cgroup = "{}"

[agent.delete]
default = "allow"
deny = ["{}", "{}"]
ask = ["{}"]
"#,
        cg.path("rogue"),
        scratch.s("vault"),
        scratch.s("box/inner"),
        scratch.s("held"),
    );
    (Daemon::start(&policy, cg), scratch)
}

fn content(p: &std::path::Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
}

fn denied(daemon: &Daemon, kind: &str, path: &str) -> serde_json::Value {
    let ev = daemon.wait_event(kind, |e| {
        e["target"]["path"] == path && e["outcome"] == "denied"
    });
    assert_eq!(ev["agent"]["name"], "rogue", "{ev}");
    ev
}

#[test]
fn rogue_renames_and_links_cannot_move_a_protected_file_away() {
    let (daemon, s) = start("rogue-rename");
    let f = s.file("vault/f");
    let e = s.file("vault/e");
    s.file("box/inner/x");
    // Its own content, so a swap or replacement would show in vault/.
    let junk = s.file("work/junk");
    fs::write(&junk, "junk").expect("write junk");
    s.file("work/a");
    s.dir("elsewhere");
    let script = format!(
        r#"
t("dir_away", lambda: os.rename({vault:?}, {away:?}))
t("file_away", lambda: os.rename({f:?}, {away_f:?}))
t("replace", lambda: os.rename({junk:?}, {e:?}))
# renameat2(AT_FDCWD, junk, AT_FDCWD, vault/f, RENAME_EXCHANGE): a swap
# moves the protected file out to where junk was.
t("exchange", lambda: sys_(316, -100, {junk:?}.encode(), -100, {f:?}.encode(), 2))
t("parent", lambda: os.rename({boxd:?}, {box2:?}))
t("link", lambda: os.link({f:?}, {alias:?}))
t("allowed", lambda: os.rename({a:?}, {a2:?}))
"#,
        vault = s.s("vault"),
        away = s.s("elsewhere/vault"),
        f = s.s("vault/f"),
        away_f = s.s("elsewhere/f"),
        junk = s.s("work/junk"),
        e = s.s("vault/e"),
        boxd = s.s("box"),
        box2 = s.s("box2"),
        alias = s.s("work/alias"),
        a = s.s("work/a"),
        a2 = s.s("work/a2"),
    );
    let (r, out) = run_py(&daemon, "rogue", &script);
    let err = String::from_utf8_lossy(&out.stderr);
    for door in [
        "dir_away",
        "file_away",
        "replace",
        "exchange",
        "parent",
        "link",
    ] {
        assert_eq!(r.get(door), Some(&libc::EPERM), "{door}: {r:?} {err}");
    }
    assert_eq!(
        r.get("allowed"),
        Some(&0),
        "a rename inside an allowed tree: {err}"
    );
    assert_eq!(content(&f), "data", "moved away or swapped");
    assert_eq!(
        content(&e),
        "data",
        "a rename over a protected file left it"
    );
    assert_eq!(content(&junk), "junk");
    assert!(s.path("box/inner/x").exists() && !s.path("work/alias").exists());
    assert!(s.path("work/a2").exists());

    let ev = denied(&daemon, "file.rename", &s.s("vault"));
    assert_eq!(ev["target"]["new_path"], s.s("elsewhere/vault"));
    assert_eq!(ev["target"]["decided_by"], "source");
    assert_eq!(ev["rule"]["match"], s.s("vault"));
    let over = |new: &str| {
        daemon.wait_event("file.rename", |e| {
            e["target"]["path"] == s.s("work/junk")
                && e["target"]["new_path"] == s.s(new)
                && e["outcome"] == "denied"
        })
    };
    let ev = over("vault/e");
    assert_eq!(ev["target"]["decided_by"], "destination", "{ev}");
    assert_eq!(ev["target"]["replaces"], true);
    assert_eq!(ev["target"]["exchange"], false, "{ev}");
    let ev = over("vault/f");
    assert_eq!(ev["target"]["decided_by"], "destination", "{ev}");
    assert_eq!(ev["target"]["exchange"], true, "{ev}");
    assert_eq!(ev["rule"]["match"], s.s("vault"));
    let ev = denied(&daemon, "file.rename", &s.s("box"));
    assert_eq!(
        ev["rule"]["match"],
        s.s("box/inner"),
        "the rule below the moved directory"
    );
    denied(&daemon, "file.link", &s.s("vault/f"));
    let ev = daemon.wait_event("file.rename", |e| e["target"]["path"] == s.s("work/a"));
    assert_eq!(ev["outcome"], "allowed");
}

#[test]
fn rogue_truncation_of_a_protected_file_is_refused() {
    let (daemon, s) = start("rogue-trunc");
    let g = s.file("vault/g");
    let i = s.file("vault/i");
    let w = s.file("work/w");
    let script = format!(
        r#"
t("truncate", lambda: os.truncate({g:?}, 0))
t("o_trunc", lambda: open({i:?}, "w").close())
def ftrunc():
    fd = os.open({g:?}, os.O_WRONLY)
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
t("ftruncate", ftrunc)
def allowed():
    with open({w:?}, "w") as f:
        f.write("new")
t("allowed", allowed)
"#,
        g = s.s("vault/g"),
        i = s.s("vault/i"),
        w = s.s("work/w"),
    );
    let (r, out) = run_py(&daemon, "rogue", &script);
    let err = String::from_utf8_lossy(&out.stderr);
    for door in ["truncate", "o_trunc", "ftruncate"] {
        assert_eq!(r.get(door), Some(&libc::EPERM), "{door}: {r:?} {err}");
    }
    assert_eq!(r.get("allowed"), Some(&0), "{err}");
    // The shell's own redirection and coreutils, as an agent would use them.
    let out = daemon.run_agent("rogue", &["sh", "-c", &format!(": > {}", s.s("vault/i"))]);
    assert!(!out.status.success(), "': > vault/i' must fail");
    let out = daemon.run_agent("rogue", &["truncate", "-s", "0", &s.s("vault/g")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(content(&g), "data");
    assert_eq!(content(&i), "data");
    assert_eq!(
        content(&w),
        "new",
        "an O_TRUNC write to an allowed file works"
    );
    denied(&daemon, "file.truncate", &s.s("vault/g"));
    denied(&daemon, "file.truncate", &s.s("vault/i"));
}

/// io_uring runs unlink and rename without a system call of their own.
/// Seccomp cannot see them, so `run` refuses io_uring_setup; BPF LSM sees
/// them, and a held (ask) one fails closed rather than leak its restart
/// errno into the completion.
#[test]
fn rogue_io_uring_cannot_reach_a_protected_file() {
    let (daemon, s) = start("rogue-uring");
    let h = s.file("vault/h");
    let k = s.file("held/k");
    let ok = s.file("work/ok");
    let swap = s.file("work/swap");
    fs::write(&swap, "swap").expect("write swap");
    let ops = [
        format!("unlink:{}", s.s("vault/h")),
        format!("rename:{}:{}", s.s("vault/h"), s.s("work/h")),
        format!("trunc:{}", s.s("vault/h")),
        format!("exchange:{}:{}", s.s("work/swap"), s.s("vault/h")),
        format!("link:{}:{}", s.s("vault/h"), s.s("work/hl")),
        format!("unlink:{}", s.s("held/k")),
        format!("unlink:{}", s.s("work/ok")),
    ];
    let (r, out) = io_uring_as(&daemon, "rogue", &ops);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(content(&h), "data");
    assert_eq!(content(&k), "data");
    if daemon.backend("delete") == "seccomp" {
        assert_eq!(r.get("setup"), Some(&libc::EPERM), "{r:?} {err}");
        let ev = daemon.wait_event("file.io_uring", |_| true);
        assert_eq!(ev["outcome"], "denied");
        assert_eq!(ev["rule"]["match"], "allow_io_uring = false");
        assert!(ok.exists());
        return;
    }
    assert_eq!(r.get("setup"), Some(&0), "{err}");
    // One line per op, in order: unlink, rename, trunc, exchange, link,
    // unlink (held), unlink.
    let lines: Vec<(String, i32)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (a, b) = l.rsplit_once(' ')?;
            Some((a.to_owned(), b.parse().ok()?))
        })
        .collect();
    let res: Vec<i32> = lines.iter().map(|(_, r)| *r).collect();
    assert_eq!(
        res,
        [
            -libc::EPERM,
            -libc::EPERM,
            -libc::EPERM,
            -libc::EPERM,
            -libc::EPERM,
            -libc::EPERM,
            0
        ],
        "no -513 may reach a completion: {lines:?}"
    );
    assert!(!ok.exists(), "an allowed io_uring unlink works");
    let ev = denied(&daemon, "file.unlink", &s.s("vault/h"));
    assert_eq!(ev["via"], "io_uring");
    let ev = denied(&daemon, "file.unlink", &s.s("held/k"));
    assert_eq!(ev["rule"]["verdict"], "ask");
    assert_eq!(ev["via"], "io_uring");
    assert!(
        ev["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot be held")),
        "{ev}"
    );
    denied(&daemon, "file.rename", &s.s("vault/h"));
    denied(&daemon, "file.truncate", &s.s("vault/h"));
    let ev = denied(&daemon, "file.rename", &s.s("work/swap"));
    assert_eq!(ev["target"]["exchange"], true, "{ev}");
    assert_eq!(ev["via"], "io_uring");
    let ev = denied(&daemon, "file.link", &s.s("vault/h"));
    assert_eq!(ev["via"], "io_uring");
    assert_eq!(content(&swap), "swap");
    assert!(!s.path("work/hl").exists());
}

/// A bind mount, a moved mount, a new root or a chroot would give a
/// protected file a path no rule names.
#[test]
fn rogue_mounts_and_namespaces_give_no_second_path() {
    let (daemon, s) = start("rogue-mount");
    let h = s.file("vault/h");
    s.dir("elsewhere");
    // unshare(CLONE_NEWNS), then mount --bind vault elsewhere, then unlink
    // through it; then chroot, and a new user namespace.
    let script = format!(
        r#"
def bind_and_delete():
    sys_(272, 0x20000)
    print("unshared", flush=True)
    sys_(165, {vault:?}.encode(), {elsewhere:?}.encode(), None, 4096, None)
    os.unlink({through:?})
t("bind", bind_and_delete)
t("chroot", lambda: sys_(161, {root:?}.encode()))
t("userns", lambda: sys_(272, 0x10000000))
"#,
        vault = s.s("vault"),
        elsewhere = s.s("elsewhere"),
        through = s.s("elsewhere/h"),
        root = s.s("elsewhere"),
    );
    let (r, out) = run_py(&daemon, "rogue", &script);
    let err = String::from_utf8_lossy(&out.stderr);
    for door in ["bind", "chroot", "userns"] {
        assert_eq!(r.get(door), Some(&libc::EPERM), "{door}: {r:?} {err}");
    }
    assert_eq!(content(&h), "data");
    assert!(!s.path("elsewhere/h").exists(), "nothing was mounted");
    let unshared = String::from_utf8_lossy(&out.stdout).contains("unshared");
    let refused = |op: &str| {
        daemon.wait_event("file.mount", |e| {
            e["target"]["operation"] == op && e["outcome"] == "denied"
        })
    };
    if daemon.backend("delete") == "seccomp" {
        assert!(
            !unshared,
            "the supervisor refuses the new mount namespace itself"
        );
        refused("mount_namespace");
    } else {
        // No LSM hook sees a new mount namespace; the mount in it is refused.
        assert!(unshared);
        refused("mount");
    }
    let ev = refused("chroot");
    assert_eq!(ev["rule"]["match"], "allow_mounts = false");
    if daemon.backend("delete") == "seccomp" || !chrooted() {
        refused("user_namespace");
    } else {
        // unshare(2): EPERM for CLONE_NEWUSER in a chroot, before
        // lsm/userns_create is asked; the VM tier runs in one.
        skip(
            "rogue_mounts_and_namespaces_give_no_second_path (user namespace event)",
            "in a chroot the kernel refuses a new user namespace before lsm/userns_create",
        );
    }
}

/// An ask on a rename holds it like a delete: approved, it completes.
#[test]
fn rogue_held_rename_completes_when_approved() {
    let (daemon, s) = start("rogue-held");
    let k = s.file("held/k");
    s.dir("work");
    let child = daemon.spawn_agent("rogue", &["mv", &s.s("held/k"), &s.s("work/k")]);
    let ev = daemon.wait_event("file.rename", |e| {
        e["outcome"] == "held" && e["target"]["path"] == s.s("held/k")
    });
    assert!(k.exists(), "held before it happened");
    let id = ev["hold"]["id"].as_str().expect("hold id").to_owned();
    let out = daemon
        .cli()
        .args(["approve", &id])
        .output()
        .expect("approve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = child.wait_with_output().expect("mv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!k.exists() && s.path("work/k").exists());
    let ev = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    assert_eq!(ev["hold"]["call"], "file.rename");
    assert_eq!(ev["target"]["new_path"], s.s("work/k"));
}
