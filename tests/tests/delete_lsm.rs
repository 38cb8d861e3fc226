//! unlink/rmdir through the BPF LSM backend, for processes put into the
//! agent's cgroup by writing cgroup.procs (no launcher). Needs: BPF LSM
//! (lsm/path_unlink, lsm/path_rmdir loadable, "bpf" in the LSM list). Runs in
//! the QEMU tier; on kernels without BPF LSM it skips, saying why.
use agent_guard_tests::*;

fn policy(cg: &TestCgroups, scratch: &Scratch) -> String {
    format!(
        r#"
[[agent]]
name = "janitor"
owner = "ops@example.com"
purpose = "delete tests"
cgroup = "{}"

[agent.delete]
default = "allow"
deny = ["{}"]
allow = ["{}"]
"#,
        cg.path("janitor"),
        scratch.s("denied"),
        scratch.s("denied/except"),
    )
}

fn start(test: &str) -> Option<(Daemon, Scratch, String)> {
    let cg = TestCgroups::new(test);
    let agent_cg = cg.path("janitor");
    let scratch = Scratch::new(test);
    let daemon = Daemon::start(&policy(&cg, &scratch), cg);
    if skip_unless(daemon.backend("delete") == "bpf_lsm", test, "BPF LSM") {
        return None;
    }
    Some((daemon, scratch, agent_cg))
}

#[test]
fn lsm_rm_on_a_denied_prefix_fails_and_the_file_stays() {
    let Some((daemon, scratch, cg)) = start("lsm-rm") else {
        return;
    };
    let denied = scratch.file("denied/db.sqlite");
    let out = run_in_cgroup(&cg, &format!("exec rm {}", denied.display()));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(denied.exists(), "a denied delete must leave the file");
    let ev = daemon.wait_event("file.unlink", |e| {
        e["target"]["path"] == denied.display().to_string()
    });
    assert_eq!(ev["outcome"], "denied");
    assert_eq!(ev["agent"]["name"], "janitor");
    assert_eq!(ev["rule"]["verdict"], "deny");

    // Whole components: "denied" does not cover "denied-not".
    let sibling = scratch.file("denied-not/x");
    let out = run_in_cgroup(&cg, &format!("exec rm {}", sibling.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!sibling.exists());

    // A more specific allow inside the denied tree wins.
    let except = scratch.file("denied/except/tmp.txt");
    let out = run_in_cgroup(&cg, &format!("exec rm {}", except.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!except.exists());

    // Outside the agent, the same denied file can be removed.
    let out = std::process::Command::new("rm")
        .arg(&denied)
        .output()
        .expect("rm");
    assert!(out.status.success());
    assert!(!denied.exists());
}

#[test]
fn lsm_rmdir_follows_the_same_rules() {
    let Some((daemon, scratch, cg)) = start("lsm-rmdir") else {
        return;
    };
    let denied = scratch.dir("denied/empty");
    let allowed = scratch.dir("elsewhere/empty");
    let out = run_in_cgroup(&cg, &format!("exec rmdir {}", denied.display()));
    assert!(!out.status.success());
    assert!(denied.exists());
    let out = run_in_cgroup(&cg, &format!("exec rmdir {}", allowed.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!allowed.exists());
    let ev = daemon.wait_event("file.rmdir", |e| {
        e["target"]["path"] == denied.display().to_string()
    });
    assert_eq!(ev["outcome"], "denied");
}

#[test]
fn lsm_rm_rf_removes_exactly_the_allowed_part() {
    let Some((_daemon, scratch, cg)) = start("lsm-rmrf") else {
        return;
    };
    let kept = scratch.file("denied/a/b.txt");
    let gone = scratch.file("tree/other/gone.txt");
    let out = run_in_cgroup(
        &cg,
        &format!("exec rm -rf {} {}", scratch.s("denied"), scratch.s("tree")),
    );
    assert!(!out.status.success(), "rm -rf must report the refused part");
    assert!(kept.exists(), "the denied subtree stays");
    assert!(
        !gone.exists() && !scratch.path("tree").exists(),
        "the allowed part is removed"
    );
}

#[test]
fn lsm_ask_holds_the_process_until_on_call_decides() {
    let cg = TestCgroups::new("lsm-hold");
    let agent_cg = cg.path("janitor");
    let scratch = Scratch::new("lsm-hold");
    let daemon = Daemon::start(
        &format!(
            "[[agent]]\nname = \"janitor\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"{agent_cg}\"\n\n\
             [agent.delete]\ndefault = \"allow\"\nask = [\"{}\"]\n",
            scratch.s("prod")
        ),
        cg,
    );
    if skip_unless(
        daemon.backend("delete") == "bpf_lsm",
        "lsm_ask_holds",
        "BPF LSM",
    ) {
        return;
    }
    for approve in [true, false] {
        let file = scratch.file(if approve { "prod/a" } else { "prod/b" });
        let path = file.display().to_string();
        let child = spawn_in_cgroup(&agent_cg, &format!("exec rm {path}"));
        let ev = daemon.wait_event("file.unlink", |e| {
            e["outcome"] == "held" && e["target"]["path"] == path.as_str()
        });
        let id = ev["hold"]["id"].as_str().expect("hold id").to_string();
        let pid = ev["process"]["pid"].as_u64().expect("pid") as u32;
        assert_eq!(pid, child.id(), "the held process is the rm we started");

        // Stopped inside the call, before anything happened.
        wait_stopped(pid, "held rm");
        assert!(file.exists());

        // A stray SIGCONT restarts the call, which is held again: no
        // release, no second hold event.
        stray_sigcont_keeps_it_held(pid);
        assert!(
            file.exists(),
            "a stray SIGCONT must not let the unlink happen"
        );
        let holds = daemon
            .events()
            .iter()
            .filter(|e| e["outcome"] == "held" && e["target"]["path"] == path.as_str())
            .count();
        assert_eq!(holds, 1, "exactly one hold event");

        let verb = if approve { "approve" } else { "deny" };
        let out = daemon.cli().args([verb, &id]).output().expect(verb);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = child.wait_with_output().expect("rm");
        if approve {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!file.exists());
        } else {
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("Operation not permitted"),
                "EPERM, never errno 513: {err}"
            );
            assert!(file.exists());
        }
    }
}
