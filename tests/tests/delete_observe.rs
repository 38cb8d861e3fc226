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
        eprintln!(
            "SKIPPED unsupervised_deletes_are_observed_not_blocked: this kernel has BPF LSM, which blocks these deletes (delete_lsm.rs covers that)"
        );
        return;
    }
    let victim = scratch.file("denied/sub/file.txt");
    // Relative path after cd, as an agent would often do.
    let out = run_in_cgroup(
        &agent_cg,
        &format!("cd {} && exec rm sub/file.txt", scratch.s("denied")),
    );
    assert!(
        out.status.success(),
        "observation never blocks: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!victim.exists());
    let ev = daemon.wait_event("file.unlink", |e| e["target"]["raw_path"] == "sub/file.txt");
    assert_eq!(ev["outcome"], "observed");
    assert_eq!(ev["target"]["path"], victim.display().to_string());
    assert_eq!(
        ev["rule"]["verdict"], "deny",
        "the event says what the policy would do: {ev}"
    );
    assert_eq!(ev["agent"]["name"], "bot");

    let dir = scratch.dir("elsewhere/d");
    let out = run_in_cgroup(&agent_cg, &format!("exec rmdir {}", dir.display()));
    assert!(out.status.success());
    let ev = daemon.wait_event("file.rmdir", |e| {
        e["target"]["path"] == dir.display().to_string()
    });
    assert_eq!(ev["outcome"], "observed");
    assert_eq!(ev["rule"]["verdict"], "allow");
}
