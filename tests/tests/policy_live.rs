//! Policy lifecycle on a live daemon: reload with no enforcement gap,
//! invalid reloads, adopting an existing cgroup, freeze/thaw, and retiring
//! agents. Needs: cgroup sock_addr programs, and for the delete parts
//! seccomp user notification or BPF LSM.
use std::{fs, net::TcpListener, thread};

use agent_guard_tests::*;
use serde_json::Value;

/// Accepts and drops every connection, so a long connect loop never fills
/// a backlog or the test's fd table.
/// Agent bot's connect to `port` is held; on-call denies it and the call
/// fails with EPERM.
fn sink() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    thread::spawn(move || for _ in l.incoming() {});
    port
}

/// The policy of the reload tests: `bot` with fixed allow/deny rules plus
/// one rule that changes with `n`, and `other`, whose rules change too.
fn reload_policy(prefix: &str, scratch: &Scratch, ok: u16, bad: u16, n: u32) -> String {
    format!(
        r#"
[[agent]]
name = "bot"
owner = "ops@example.com"
purpose = "reload under load"
cgroup = "{prefix}/bot"

[agent.connect]
default = "deny"
allow = ["127.0.0.1/32:{ok}", "10.{a}.{b}.0/24:443"]
deny = ["127.0.0.1/32:{bad}"]

[agent.delete]
default = "deny"
allow = ["{work}"]
deny = ["{precious}"]

[[agent]]
name = "other"
owner = "ops@example.com"
purpose = "changes on every reload"
cgroup = "{prefix}/other"

[agent.connect]
default = "allow"
deny = ["192.0.2.{c}/32:{port}"]
"#,
        work = scratch.s("work"),
        precious = scratch.s("work/precious"),
        a = n % 200,
        b = n / 200,
        c = n % 250,
        port = 1000 + n,
    )
}

/// Loops, until the file `stop` appears: a denied connect, an allowed
/// connect, a denied delete and an allowed delete, counting any outcome
/// that differs from the policy's.
const PY_LOOP: &str = r#"
import errno, os, socket, sys, time
ok, bad, work, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
precious = os.path.join(work, "precious", "keep.txt")
counts = {"denied_ok": 0, "allowed_ok": 0, "wrongly_allowed": 0, "wrongly_denied": 0}
def connect(port):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        return 0
    except OSError as e:
        return e.errno
    finally:
        s.close()
i = 0
while not os.path.exists(stop):
    i += 1
    counts["wrongly_allowed" if connect(bad) == 0 else "denied_ok"] += 1
    counts["allowed_ok" if connect(ok) == 0 else "wrongly_denied"] += 1
    try:
        os.unlink(precious)
        counts["wrongly_allowed"] += 1
        open(precious, "w").close()
    except OSError as e:
        counts["denied_ok" if e.errno == errno.EPERM else "wrongly_denied"] += 1
    f = os.path.join(work, "tmp-%d" % i)
    open(f, "w").close()
    try:
        os.unlink(f)
        counts["allowed_ok"] += 1
    except OSError:
        counts["wrongly_denied"] += 1
    # Leave the CPU to the reloads now and then (slow emulated VMs).
    if i % 8 == 0:
        time.sleep(0.005)
print(" ".join("%s=%d" % kv for kv in sorted(counts.items())), flush=True)
"#;

#[test]
fn two_hundred_reloads_under_load_never_open_a_gap() {
    let cg = TestCgroups::new("reload-load");
    let scratch = Scratch::new("reload-load");
    scratch.file("work/precious/keep.txt");
    let (ok, bad) = (sink(), sink());
    let prefix = cg.prefix.clone();
    let daemon = Daemon::start(&reload_policy(&prefix, &scratch, ok, bad, 0), cg);
    let stop = scratch.path("stop");
    let child = daemon.spawn_agent(
        "bot",
        &[
            "python3",
            "-c",
            PY_LOOP,
            &ok.to_string(),
            &bad.to_string(),
            &scratch.s("work"),
            &stop.display().to_string(),
        ],
    );
    daemon.wait_event("agent.start", |_| true);
    // The loop is running (its first denied connect is in), so the reloads
    // below really race its calls, however slowly python starts.
    daemon.wait_event("net.connect", |e| e["outcome"] == "denied");
    // SIGHUP, as an admin (or systemd's ExecReload) would; each reload is
    // waited for through its event before the file changes again.
    for n in 1..=200 {
        fs::write(
            &daemon.policy_path,
            reload_policy(&prefix, &scratch, ok, bad, n),
        )
        .expect("policy");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.pid() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP");
        daemon.wait_count("policy.reload", n as usize);
    }
    fs::write(&stop, b"").expect("stop");
    let out = child.wait_with_output().expect("loop");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{line} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
    };
    assert_eq!(
        count("wrongly_allowed"),
        0,
        "a denied call succeeded: {line}"
    );
    assert_eq!(count("wrongly_denied"), 0, "an allowed call failed: {line}");
    assert!(count("denied_ok") > 0 && count("allowed_ok") > 0, "{line}");
    let reloads: Vec<Value> = daemon
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "policy.reload")
        .collect();
    assert_eq!(reloads.len(), 200);
    assert!(reloads.iter().all(|e| e["outcome"] == "success"));
    assert_eq!(
        reloads[0]["policy"]["diff"]["changed"],
        serde_json::json!(["bot", "other"])
    );
    assert!(
        reloads[0]["policy"]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
}

#[test]
fn an_invalid_reload_keeps_the_old_policy_and_names_the_place() {
    let cg = TestCgroups::new("reload-bad");
    let scratch = Scratch::new("reload-bad");
    let (ok, bad) = (sink(), sink());
    let policy = reload_policy(&cg.prefix.clone(), &scratch, ok, bad, 0);
    let daemon = Daemon::start(&policy, cg);
    let broken = policy.replace("default = \"deny\"\nallow", "default = \"maybe\"\nallow");
    fs::write(&daemon.policy_path, &broken).expect("policy");
    let out = daemon.cli().arg("reload").output().expect("reload");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = broken
        .lines()
        .position(|l| l.contains("\"maybe\""))
        .expect("line")
        + 1;
    let place = format!("{}:{line}:", daemon.policy_path.display());
    assert!(stderr.contains(&place), "error names {place}: {stderr}");
    let ev = daemon.wait_event("policy.reload", |_| true);
    assert_eq!(ev["outcome"], "failure");
    assert!(
        ev["policy"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(&place))
    );
    // Still the old policy: the denied port is denied, the allowed one allowed.
    let denied = connect_as(&daemon, "bot", "127.0.0.1", bad);
    assert_eq!(denied.errno, 1);
    denied.finish();
    let allowed = connect_as(&daemon, "bot", "127.0.0.1", ok);
    assert_eq!(allowed.errno, 0);
    allowed.finish();
}

#[test]
fn an_existing_cgroup_is_adopted_with_its_children_and_kept() {
    let cg = TestCgroups::new("adopt");
    let svc = cg.path("system.slice/claims-bot.service");
    let child_cg = format!("{svc}/worker");
    fs::create_dir_all(cgroup2_root().join(&child_cg)).expect("pre-existing cgroup");
    let bad = sink();
    let policy = format!(
        r#"
[[agent]]
name = "claims-bot"
owner = "claims@example.com"
purpose = "adopted unit"
cgroup = "{svc}"

[agent.connect]
default = "allow"
deny = ["127.0.0.1/32:{bad}"]
"#
    );
    // A service process already running in a nested cgroup before the daemon.
    let mut service = spawn_in_cgroup(
        &child_cg,
        &format!("read _; python3 -c '{PY_CONNECT}' 127.0.0.1 {bad}"),
    );
    let daemon = Daemon::start(&policy, cg);
    let list: Value = serde_json::from_str(&daemon.cli_ok(&["agents", "--json"])).expect("json");
    assert_eq!(list[0]["name"], "claims-bot");
    assert_eq!(list[0]["adopted"], true);
    assert_eq!(list[0]["processes"], 1);

    drop(service.stdin.take());
    let mut lines = ChildLines::new(service.stdout.take().expect("stdout"));
    let _pid = lines.next_line("pid line");
    assert_eq!(lines.next_line("result"), "errno=1");
    let _ = service.wait();
    let ev = daemon.wait_event("net.connect", |e| e["target"]["port"] == bad);
    assert_eq!(ev["outcome"], "denied");
    assert_eq!(ev["agent"]["name"], "claims-bot");
    let list: Value = serde_json::from_str(&daemon.cli_ok(&["agents", "--json"])).expect("json");
    assert_eq!(
        list[0]["counts"]["denied"], 1,
        "the registry counts calls: {list}"
    );

    let (_, cg) = daemon.stop_keeping_cgroups();
    assert!(
        cgroup2_root().join(&child_cg).is_dir(),
        "a cgroup the daemon did not create is never removed"
    );
    drop(cg);
}

#[test]
fn freeze_holds_what_was_allowed_and_thaw_restores_it() {
    let cg = TestCgroups::new("freeze");
    let scratch = Scratch::new("freeze");
    let port = sink();
    let policy = format!(
        r#"
[[agent]]
name = "bot"
owner = "ops@example.com"
purpose = "freeze"
cgroup = "{}"

[agent.connect]
default = "allow"

[agent.delete]
default = "allow"
"#,
        cg.path("bot")
    );
    let daemon = Daemon::start(&policy, cg);
    let file = scratch.file("a.txt");
    let path = file.display().to_string();

    daemon.cli_ok(&["freeze", "bot", "--reason", "incident"]);
    let ev = daemon.wait_event("agent.mode", |_| true);
    assert_eq!(ev["mode"]["from"], "enforce");
    assert_eq!(ev["mode"]["to"], "freeze");
    assert_eq!(ev["by"]["uid"], 0);

    // A connect the default allowed is held now; deny it.
    decide_held_connect(&daemon, "bot", port, false);

    // So is a delete; approve it.
    let rm = daemon.spawn_agent("bot", &["rm", &path]);
    let held = daemon.wait_event("file.unlink", |e| {
        e["outcome"] == "held" && e["target"]["path"] == path.as_str()
    });
    assert!(file.exists());
    let id = held["hold"]["id"].as_str().expect("id").to_owned();
    daemon.cli_ok(&["approve", &id]);
    assert!(rm.wait_with_output().expect("rm").status.success());
    assert!(!file.exists());

    daemon.cli_ok(&["thaw", "bot"]);
    let ev = daemon.wait_event("agent.mode", |e| e["mode"]["to"] == "enforce");
    assert_eq!(ev["mode"]["from"], "freeze");
    let run = connect_as(&daemon, "bot", "127.0.0.1", port);
    assert_eq!(run.errno, 0, "thawed: allowed again without a hold");
    run.finish();
    let file = scratch.file("b.txt");
    let out = daemon.run_agent("bot", &["rm", &file.display().to_string()]);
    assert!(out.status.success());
    assert!(!file.exists());
}

#[test]
fn removing_an_agent_with_live_processes_needs_force() {
    let cg = TestCgroups::new("retire");
    let port = sink();
    let agent = |name: &str| {
        format!(
            "[[agent]]\nname = \"{name}\"\nowner = \"ops@example.com\"\npurpose = \"retire\"\n\
             cgroup = \"{}\"\n\n[agent.connect]\ndefault = \"allow\"\ndeny = [\"127.0.0.1/32:{port}\"]\n\n",
            cg.path(name)
        )
    };
    let both = format!("{}{}", agent("stays"), agent("goes"));
    let only = agent("stays");
    let daemon = Daemon::start(&both, cg);
    let mut worker = daemon.spawn_agent("goes", &["sh", "-c", "read _"]);
    daemon.wait_event("agent.start", |_| true);

    fs::write(&daemon.policy_path, &only).expect("policy");
    let out = daemon.cli().arg("reload").output().expect("reload");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("goes") && stderr.contains("--force"),
        "{stderr}"
    );
    let ev = daemon.wait_event("policy.reload", |_| true);
    assert_eq!(ev["outcome"], "failure");

    let shown = daemon.cli_ok(&["reload", "--force"]);
    assert!(shown.contains("removed: goes"), "{shown}");
    let ev = daemon.wait_event("policy.reload", |e| e["outcome"] == "success");
    assert_eq!(ev["policy"]["diff"]["removed"], serde_json::json!(["goes"]));
    let list: Value = serde_json::from_str(&daemon.cli_ok(&["agents", "--json"])).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    // on_remove defaults to "unguard": the worker runs on.
    assert!(worker.try_wait().expect("try_wait").is_none());
    drop(worker.stdin.take());
    let _ = worker.wait();
}

/// A freeze is on-call's decision: a daemon killed and restarted (by
/// systemd, or after an agent found a way to kill it) keeps the agent
/// frozen, and only a thaw ends it, which a restart keeps too.
#[test]
fn a_freeze_outlives_a_daemon_crash_and_so_does_the_thaw() {
    let cg = TestCgroups::new("freeze-crash");
    let port = sink();
    let policy = format!(
        "[[agent]]\nname = \"bot\"\nowner = \"ops@example.com\"\npurpose = \"freeze\"\n\
         cgroup = \"{}\"\n\n[agent.connect]\ndefault = \"allow\"\n",
        cg.path("bot")
    );
    let daemon = Daemon::start(&policy, cg);
    daemon.cli_ok(&["freeze", "bot", "--reason", "incident"]);
    daemon.wait_event("agent.mode", |e| e["mode"]["to"] == "freeze");

    let (cg, dir) = daemon.crash();
    let daemon = Daemon::start_in(&policy, cg, dir);
    decide_held_connect(&daemon, "bot", port, false);

    daemon.cli_ok(&["thaw", "bot"]);
    daemon.wait_event("agent.mode", |e| e["mode"]["to"] == "enforce");
    let (cg, dir) = daemon.crash();
    let daemon = Daemon::start_in(&policy, cg, dir);
    let run = connect_as(&daemon, "bot", "127.0.0.1", port);
    assert_eq!(run.errno, 0, "thawed before the crash: allowed, not held");
    run.finish();
}
