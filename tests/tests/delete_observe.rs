//! On kernels without BPF LSM, a process put into an agent cgroup by other
//! means than `agent-guard run` cannot be blocked; its deletes must still be
//! seen, attributed and judged in the event stream. Needs: tp_btf programs,
//! and a kernel WITHOUT BPF LSM (with it, these deletes are blocked instead:
//! see delete_lsm.rs).
use agent_guard_tests::*;

#[test]
fn unsupervised_deletes_are_observed_not_blocked() {
    let cg = TestCgroups::new("observe");
    let agent_cg = cg.path("bot");
    let scratch = Scratch::new("observe");
    let daemon = Daemon::start(
        &format!(
            "[[agent]]\nname = \"bot\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"{agent_cg}\"\n\n\
             [agent.delete]\ndefault = \"allow\"\ndeny = [\"{}\"]\n",
            scratch.s("denied")
        ),
        cg,
    );
    if daemon.backend("delete") == "bpf_lsm" {
        skip(
            "unsupervised_deletes_are_observed_not_blocked",
            "this kernel has BPF LSM, which blocks these deletes (delete_lsm.rs covers that)",
        );
        return;
    }
    let victim = scratch.file("denied/sub/file.txt");
    // Relative path after chdir, as an agent would often do. The deleting
    // process stays alive until the event is in, so its cwd can be read
    // (a process that exits first gets path null plus path_error).
    let script = format!(
        "exec python3 -c 'import os,sys; os.chdir(\"{}\"); os.unlink(\"sub/file.txt\"); \
         print(\"removed\", flush=True); sys.stdin.read()'",
        scratch.s("denied")
    );
    let mut sh = spawn_in_cgroup(&agent_cg, &script);
    let ev = daemon.wait_event("file.unlink", |e| e["target"]["raw_path"] == "sub/file.txt");
    drop(sh.stdin.take());
    let out = sh.wait_with_output().expect("sh");
    assert!(out.status.success(), "observation never blocks: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "removed\n");
    assert!(!victim.exists());
    assert_eq!(ev["outcome"], "observed");
    assert_eq!(ev["target"]["path"], victim.display().to_string());
    assert_eq!(
        ev["rule"]["verdict"], "deny",
        "the event says what the policy would do: {ev}"
    );
    assert_eq!(ev["agent"]["name"], "bot");

    // An absolute path needs nothing from /proc.
    let dir = scratch.dir("elsewhere/d");
    let out = run_in_cgroup(&agent_cg, &format!("exec rmdir {}", dir.display()));
    assert!(out.status.success());
    let ev = daemon.wait_event("file.rmdir", |e| {
        e["target"]["path"] == dir.display().to_string()
    });
    assert_eq!(ev["outcome"], "observed");
    assert_eq!(ev["rule"]["verdict"], "allow");
}
