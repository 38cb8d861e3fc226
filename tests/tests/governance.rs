//! Governance on a real daemon: the per-agent replay of a chained log
//! (`events query`) and agent expiry (`expires`). Needs: cgroup v2 and the
//! daemon's programs; the frozen delete needs seccomp user notification or
//! BPF LSM (as every delete test does).
use std::{
    fs,
    io::Write as _,
    process::{Output, Stdio},
    time::{Duration, SystemTime},
};

use agent_guard_tests::{
    browser::{Driver, desktop_browser},
    *,
};
use serde_json::Value;

fn agent(cgroup: &str, name: &str, extra: &str) -> String {
    format!(
        "[[agent]]\nname = \"{name}\"\nowner = \"ops@example.com\"\npurpose = \"governance\"\n\
         cgroup = \"{cgroup}\"\n{extra}\n[agent.delete]\ndefault = \"allow\"\n\n"
    )
}

fn query(args: &[&str]) -> Output {
    std::process::Command::new(agent_guard_bin())
        .args(["events", "query"])
        .args(args)
        .output()
        .expect("agent-guard events query")
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn governance_events_query_replays_one_agent_and_fails_on_an_edited_log() {
    let cg = TestCgroups::new("gov-query");
    let scratch = Scratch::new("gov-query");
    let log = scratch.path("log/events.jsonl");
    // Small files: the replay must read across rotated ones.
    let policy = format!(
        "{}{}[[sink]]\ntype = \"stdout\"\n\n[[sink]]\nname = \"audit\"\ntype = \"file\"\n\
         path = \"{}\"\nmax_bytes = 4096\nkeep = 100\n",
        agent(&cg.path("alpha"), "alpha", ""),
        agent(&cg.path("beta"), "beta", ""),
        log.display()
    );
    let daemon = Daemon::start(&policy, cg);
    for (who, n) in [("alpha", 3), ("beta", 2), ("alpha", 1)] {
        for _ in 0..n {
            let out = daemon.run_agent(who, &["true"]);
            assert!(out.status.success(), "{out:?}");
        }
    }
    let events = daemon.stop();
    let alpha: Vec<&Value> = events
        .iter()
        .filter(|e| e["agent"]["name"] == "alpha")
        .collect();
    assert!(alpha.len() >= 8, "4 runs of alpha: start and exit each");
    assert!(
        fs::metadata(format!("{}.1", log.display())).is_ok(),
        "the log rotated"
    );

    let out = query(&["--from", &log.display().to_string(), "--agent", "alpha"]);
    assert!(out.status.success(), "{out:?}");
    let got = lines(&out);
    assert!(
        got.iter().all(|e| e["agent"]["name"] == "alpha"),
        "{got:#?}"
    );
    let seqs = |v: &[&Value]| v.iter().map(|e| e["seq"].clone()).collect::<Vec<_>>();
    assert_eq!(seqs(&got.iter().collect::<Vec<_>>()), seqs(&alpha));

    let out = query(&[
        "--from",
        &log.display().to_string(),
        "--agent",
        "beta",
        "--kind",
        "agent.start",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&out).len(), 2, "beta started twice");

    // One byte changed in the current file: found at its line, non-zero.
    let text = fs::read_to_string(&log).expect("log");
    let victim = text
        .lines()
        .position(|l| l.contains("\"name\":\"beta\"") || l.contains("\"name\":\"alpha\""))
        .expect("an agent's line in the current file");
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == victim {
                l.replacen("\"name\":\"beta\"", "\"name\":\"betb\"", 1)
                    .replacen("\"name\":\"alpha\"", "\"name\":\"alphb\"", 1)
            } else {
                l.to_owned()
            }
        })
        .collect();
    fs::write(&log, edited.join("\n") + "\n").expect("edit");
    let out = query(&["--from", &log.display().to_string(), "--agent", "alpha"]);
    assert!(!out.status.success(), "an edited log must fail: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let place = format!("{}:{}", log.display(), victim + 1);
    assert!(stderr.contains(&place), "names {place}: {stderr}");
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[test]
fn governance_an_expired_agent_cannot_start_and_a_running_one_is_frozen() {
    let cg = TestCgroups::new("gov-expiry");
    let scratch = Scratch::new("gov-expiry");
    let past = rfc3339(SystemTime::now() - Duration::from_secs(3600));
    let later = rfc3339(SystemTime::now() + Duration::from_secs(365 * 86400));
    let (retired_cg, worker_cg) = (cg.path("retired"), cg.path("worker"));
    let policy = |soon: &str| {
        format!(
            "{}{}",
            agent(&retired_cg, "retired", &format!("expires = \"{past}\"\n")),
            agent(&worker_cg, "worker", &format!("expires = \"{soon}\"\n"))
        )
    };
    let daemon = Daemon::start(&policy(&later), cg);

    // Expired before it was ever started.
    let out = daemon.run_agent("retired", &["true"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expired at") && stderr.contains(&past),
        "{stderr}"
    );
    daemon.wait_event("agent.expired", |e| e["agent"]["name"] == "retired");

    // Running, then its expiry passes (set a few seconds ahead by a reload).
    let file = scratch.file("keep.txt");
    let mut worker = daemon.spawn_agent(
        "worker",
        &["sh", "-c", &format!("read _; rm '{}'", file.display())],
    );
    daemon.wait_event("agent.start", |e| e["agent"]["name"] == "worker");
    let soon = rfc3339(SystemTime::now() + Duration::from_secs(3));
    fs::write(&daemon.policy_path, policy(&soon)).expect("policy");
    let out = daemon.cli().arg("reload").output().expect("reload");
    assert!(out.status.success(), "{out:?}");
    let ev = daemon.wait_event("agent.expired", |e| e["agent"]["name"] == "worker");
    assert_eq!(ev["expiry"]["expires"], soon.as_str());
    assert_eq!(ev["expiry"]["mode"]["to"], "freeze");
    assert!(ev["expiry"]["processes"].as_u64() >= Some(1), "{ev}");

    let list = daemon
        .cli()
        .args(["agents", "--json"])
        .output()
        .expect("agents");
    let list: Value = serde_json::from_slice(&list.stdout).expect("agents --json");
    let worker_row = list
        .as_array()
        .and_then(|l| l.iter().find(|a| a["name"] == "worker"))
        .cloned()
        .expect("worker listed");
    assert_eq!(worker_row["mode"], "freeze");
    assert_eq!(worker_row["expires"], soon.as_str());
    assert_eq!(worker_row["expired"], true);

    // Its live process is frozen: a delete the default allowed is held.
    worker
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("wake the worker");
    let path = file.display().to_string();
    daemon.wait_event("file.unlink", |e| {
        e["outcome"] == "held" && e["target"]["path"] == path.as_str()
    });
    assert!(file.exists());

    // A thaw would hand its rights back: refused while expired.
    let out = daemon
        .cli()
        .args(["thaw", "worker"])
        .stdin(Stdio::null())
        .output()
        .expect("thaw");
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));
    // Rogue: the expired agent itself, as root, tries to thaw itself and
    // to start a fresh run. Both fail from inside its cgroup (refused, or
    // the frozen agent cannot even reach the socket), and it stays frozen.
    for args in [
        &["thaw", "worker"][..],
        &["run", "--agent", "worker", "--", "true"],
    ] {
        let out = cli_inside(&daemon, &worker_cg, args);
        assert!(!out.status.success(), "{args:?} from inside: {out:?}");
    }
    let list = daemon
        .cli()
        .args(["agents", "--json"])
        .output()
        .expect("agents");
    let list: Value = serde_json::from_slice(&list.stdout).expect("agents --json");
    assert!(
        list.as_array().is_some_and(|l| l
            .iter()
            .any(|a| a["name"] == "worker" && a["mode"] == "freeze")),
        "still frozen: {list:#}"
    );
    assert!(file.exists(), "the held delete stays held");
    let out = daemon
        .cli()
        .args(["kill", "--agent", "worker"])
        .output()
        .expect("kill");
    assert!(out.status.success(), "{out:?}");
    let _ = worker.wait();
}

fn discover(daemon: &Daemon) -> (Output, Vec<Value>) {
    let out = daemon
        .cli()
        .args(["discover", "--json", "--policy"])
        .arg(&daemon.policy_path)
        .output()
        .expect("agent-guard discover");
    let found: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("discover --json printed {out:?}: {e}"));
    (out, found.as_array().cloned().unwrap_or_default())
}

#[test]
fn governance_discover_finds_an_unguarded_agent_cli_and_its_stanza_adopts_it() {
    let cg = TestCgroups::new("gov-discover");
    let scratch = Scratch::new("gov-discover");
    let policy = agent(&cg.path("bot"), "bot", "");
    let shadow_cg = cg.path("shadow");
    fs::create_dir_all(cgroup2_root().join(&shadow_cg)).expect("shadow cgroup");
    // A shell under the name of a coding-agent CLI, with a child.
    let claude = scratch.path("bin/claude");
    fs::create_dir_all(scratch.path("bin")).expect("bin");
    fs::copy("/bin/sh", &claude).expect("copy sh");
    let script = format!("exec '{}' -c 'sleep 300; true'", claude.display());
    let daemon = Daemon::start(&policy, cg);
    let mut outside = spawn_in_cgroup(&shadow_cg, &script);
    let bot_cg = shadow_cg.replace("/shadow", "/bot");
    let mut inside = spawn_in_cgroup(&bot_cg, &script);
    let (outside_pid, inside_pid) = (outside.id(), inside.id());

    // Both have exec'd (the one inside too: until then it is no claude)
    // and started their child before discover's answer counts.
    let deadline = std::time::Instant::now() + PATIENCE;
    while guard_host::proc::exe(inside_pid).as_deref() != Some(claude.as_path()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent's claude never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (out, found) = loop {
        let (out, found) = discover(&daemon);
        let ours = found.iter().find(|f| f["pid"] == outside_pid);
        if ours.is_some_and(|f| f["children"].as_array().is_some_and(|c| !c.is_empty())) {
            break (out, found);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not found: {found:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(out.status.code(), Some(3), "found something: exit 3");
    let ours = found
        .iter()
        .find(|f| f["pid"] == outside_pid)
        .expect("found");
    assert_eq!(ours["pattern"], "claude");
    assert_eq!(ours["exe"], claude.display().to_string().as_str());
    assert_eq!(ours["cgroup"], format!("/{shadow_cg}").as_str());
    assert_eq!(ours["user"], "root");
    assert!(
        ours["children"][0]["cmdline"][0] == "sleep",
        "its child: {ours:#}"
    );
    assert!(
        found.iter().all(|f| f["pid"] != inside_pid),
        "a process inside an agent's cgroup is guarded already: {found:#?}"
    );

    // The stanza it printed adopts the cgroup: after a reload, not found.
    let stanza = ours["stanza"].as_str().expect("a stanza").to_owned();
    fs::write(&daemon.policy_path, format!("{policy}\n{stanza}")).expect("policy");
    let out = daemon.cli().arg("reload").output().expect("reload");
    assert!(out.status.success(), "{out:?}\n{stanza}");
    let (_, found) = discover(&daemon);
    assert!(
        found.iter().all(|f| f["pid"] != outside_pid),
        "adopted: {found:#?}"
    );
    for child in [&mut outside, &mut inside] {
        let _ = child.kill();
        let _ = child.wait();
    }
    // The sleeps die with their cgroups' kill.
    for dir in [&shadow_cg, &bot_cg] {
        let _ = guard_host::cgroup::kill_all(&cgroup2_root().join(dir));
    }
}

/// Deletes in two directories and a connect to `port`, as one run.
fn mixed_job(daemon: &Daemon, scratch: &Scratch, port: u16) -> Output {
    for f in ["work/a/1", "work/a/2", "work/b/3"] {
        scratch.file(f);
    }
    let script = format!(
        "rm {} {} {} && python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=30)\"",
        scratch.s("work/a/1"),
        scratch.s("work/a/2"),
        scratch.s("work/b/3"),
    );
    daemon.run_agent("job", &["sh", "-c", &script])
}

#[test]
fn governance_policy_suggest_learns_an_audit_run_that_then_enforces_the_same_job_only() {
    let cg = TestCgroups::new("gov-suggest");
    let scratch = Scratch::new("gov-suggest");
    let log = scratch.path("log/events.jsonl");
    let (used, other) = (Listener::v4(), Listener::v4());
    let policy = format!(
        "[[agent]]\nname = \"job\"\nowner = \"ops@example.com\"\npurpose = \"nightly job\"\n\
         cgroup = \"{}\"\nmode = \"audit\"\n\n[agent.delete]\ndefault = \"deny\"\n\n\
         [agent.connect]\ndefault = \"deny\"\n\n[[sink]]\ntype = \"stdout\"\n\n[[sink]]\n\
         type = \"file\"\npath = \"{}\"\n",
        cg.path("job"),
        log.display()
    );
    let daemon = Daemon::start(&policy, cg);
    let out = mixed_job(&daemon, &scratch, used.port);
    assert!(out.status.success(), "audit mode blocks nothing: {out:?}");
    let (_, cg) = daemon.stop_keeping_cgroups();

    let policy_file = scratch.path("policy.toml");
    fs::write(&policy_file, &policy).expect("policy");
    let out = std::process::Command::new(agent_guard_bin())
        .args(["policy", "suggest", "--agent", "job", "--from"])
        .arg(&log)
        .arg("--policy")
        .arg(&policy_file)
        .output()
        .expect("suggest");
    assert!(out.status.success(), "{out:?}");
    let suggested =
        String::from_utf8_lossy(&out.stdout).replace("mode = \"audit\"", "mode = \"enforce\"");
    for rule in [
        format!("\"{}\",  # 2 calls", scratch.s("work/a")),
        format!("\"{}\",  # 1 call", scratch.s("work/b")),
        format!("\"127.0.0.1/32:{}\",  # 1 call", used.port),
    ] {
        assert!(suggested.contains(&rule), "{rule} in:\n{suggested}");
    }
    fs::write(&policy_file, &suggested).expect("suggested policy");
    let check = std::process::Command::new(agent_guard_bin())
        .args(["policy", "check"])
        .arg(&policy_file)
        .output()
        .expect("policy check");
    assert!(check.status.success(), "{check:?}");

    // Enforced: the same job passes; a delete and a destination outside fail.
    let daemon = Daemon::start(&suggested, cg);
    let out = mixed_job(&daemon, &scratch, used.port);
    assert!(
        out.status.success(),
        "the learned job runs: {out:?}\n{suggested}"
    );
    let outside = scratch.file("work/other/x");
    let out = daemon.run_agent("job", &["rm", &outside.display().to_string()]);
    assert!(!out.status.success() && outside.exists(), "{out:?}");
    let run = connect_as(&daemon, "job", "127.0.0.1", other.port);
    assert_ne!(run.errno, 0, "an unlearned destination is denied");
    run.finish();
}

#[test]
fn governance_review_counts_denials_names_unused_rules_and_renders_in_chromium() {
    let cg = TestCgroups::new("gov-review");
    let scratch = Scratch::new("gov-review");
    let log = scratch.path("log/events.jsonl");
    let (used, refused) = (Listener::v4(), Listener::v4());
    let policy = format!(
        "[[agent]]\nname = \"rev\"\nowner = \"ops@example.com\"\npurpose = \"reviewed\"\n\
         cgroup = \"{}\"\n\n[agent.connect]\ndefault = \"deny\"\n\
         allow = [\"127.0.0.1/32:{}\", \"10.9.9.9/32:443\"]\n\n[agent.delete]\n\
         default = \"allow\"\nask = [\"{}\"]\n\n\
         [[agent]]\nname = \"idle\"\nowner = \"unknown\"\npurpose = \"nobody remembers\"\n\
         cgroup = \"{}\"\n\n[[sink]]\ntype = \"stdout\"\n\n[[sink]]\ntype = \"file\"\npath = \"{}\"\n",
        cg.path("rev"),
        used.port,
        scratch.s("held"),
        cg.path("idle"),
        log.display()
    );
    let policy_file = scratch.path("policy.toml");
    fs::write(&policy_file, &policy).expect("policy");
    let daemon = Daemon::start(&policy, cg);
    let run = connect_as(&daemon, "rev", "127.0.0.1", used.port);
    assert_eq!(run.errno, 0);
    run.finish();
    for _ in 0..3 {
        let run = connect_as(&daemon, "rev", "127.0.0.1", refused.port);
        assert_ne!(run.errno, 0);
        run.finish();
    }
    let file = scratch.file("held/x");
    let rm = daemon.spawn_agent("rev", &["rm", &file.display().to_string()]);
    let held = daemon.wait_event("file.unlink", |e| e["outcome"] == "held");
    let id = held["hold"]["id"].as_str().expect("hold id").to_owned();
    let out = daemon
        .cli()
        .args(["approve", &id, "--reason", "ticket OPS-1"])
        .output()
        .expect("approve");
    assert!(out.status.success(), "{out:?}");
    assert!(rm.wait_with_output().expect("rm").status.success());
    daemon.stop();

    let review = |format: &str| {
        std::process::Command::new(agent_guard_bin())
            .args(["review", "--format", format, "--since", "1h", "--from"])
            .arg(&log)
            .arg("--policy")
            .arg(&policy_file)
            .output()
            .expect("agent-guard review")
    };
    let out = review("json");
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("review --format json");
    let agent = |name: &str| {
        r["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} reviewed: {r:#}"))
    };
    let rev = agent("rev");
    assert_eq!(rev["denials_total"], 3, "{rev:#}");
    assert_eq!(
        rev["unused"],
        serde_json::json!(["[agent.connect] allow \"10.9.9.9/32:443\""])
    );
    assert_eq!(rev["holds"][0]["what"], "approved");
    assert_eq!(rev["holds"][0]["by"], "root");
    assert_eq!(rev["holds"][0]["reason"], "ticket OPS-1");
    let used_rule = format!("127.0.0.1/32:{}", used.port);
    let rule = rev["rules"]
        .as_array()
        .and_then(|rs| rs.iter().find(|x| x["rule"] == used_rule.as_str()))
        .cloned()
        .expect("the used rule");
    assert_eq!(rule["calls"], 1);
    let flags = agent("idle")["flags"].to_string();
    assert!(
        flags.contains("no activity") && flags.contains("no owner"),
        "{flags}"
    );

    let out = review("md");
    assert!(out.status.success(), "{out:?}");
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        md.contains("## rev") && md.contains("10.9.9.9/32:443"),
        "{md}"
    );

    // One self-contained file, read by a real browser.
    let out = review("html");
    assert!(out.status.success(), "{out:?}");
    let page = scratch.path("review.html");
    fs::write(&page, &out.stdout).expect("html");
    let html = String::from_utf8_lossy(&out.stdout);
    assert!(
        !html.contains("<script") && !html.contains("src=\""),
        "self-contained"
    );
    if tier() == "vm" {
        // Not kernel-facing; Chromium under TCG would eat the VM budget.
        skip(
            "governance_review_counts_denials_names_unused_rules_and_renders_in_chromium",
            "the Chromium part runs on the host tier only",
        );
        return;
    }
    let driver = Driver::start();
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let c = rt.block_on(desktop_browser(&driver));
    rt.block_on(c.goto(&format!("file://{}", page.display())))
        .expect("open the review");
    let bars = rt
        .block_on(c.find_all(fantoccini::Locator::Css("#agent-rev svg.timeline rect")))
        .expect("timeline bars");
    assert!(!bars.is_empty(), "rev's timeline has bars");
    let heading = rt
        .block_on(c.find(fantoccini::Locator::Css("#agent-idle h2")))
        .expect("idle's section");
    assert_eq!(rt.block_on(heading.text()).expect("text"), "idle");
    agent_guard_tests::browser::artifact(
        "review.png",
        &rt.block_on(c.screenshot()).expect("screenshot"),
    );
    let _ = rt.block_on(c.close());
}
