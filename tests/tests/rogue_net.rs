//! The rogue-agent suite, network: a denied port reached by datagrams
//! without connect, and a root service asked over its unix socket to do
//! what the agent may not. For each door: the destination unreached, the
//! agent saw EPERM, an event says so; and the allowed form still works.
use agent_guard_tests::*;

fn start(test: &str, scratch: &Scratch, udp: (&UdpListener, &UdpListener, &UdpListener)) -> Daemon {
    let cg = TestCgroups::new(test);
    let (allowed, denied, held) = udp;
    let policy = format!(
        r#"
[daemon]
approval_timeout_secs = 300

[[agent]]
name = "rogue"
owner = "sec@example.com"
purpose = "looks for the door beside the locked one"
cgroup = "{cg}"

[agent.connect]
default = "deny"
allow = ["127.0.0.1/32:{a}", "unix:{ok}"]
deny = ["127.0.0.1/32:{d}", "unix:{helper}", "unix:@agtest-helper-{pid}"]
ask = ["127.0.0.1/32:{h}"]

[agent.delete]
default = "allow"
deny = ["{vault}"]
"#,
        cg = cg.path("rogue"),
        a = allowed.port,
        d = denied.port,
        h = held.port,
        ok = scratch.s("sockets/ok.sock"),
        helper = scratch.s("sockets/helper.sock"),
        pid = std::process::id(),
        vault = scratch.s("vault"),
    );
    Daemon::start(&policy, cg)
}

/// UDP `sendto` without connect reaches nothing the policy denies; an ask
/// holds it like a connect; what is allowed arrives.
#[test]
fn rogue_datagrams_follow_the_connect_rules() {
    let scratch = Scratch::new("rogue-udp");
    let (allowed, denied, held) = (UdpListener::v4(), UdpListener::v4(), UdpListener::v4());
    let daemon = start("rogue-udp", &scratch, (&allowed, &denied, &held));
    let script = format!(
        r#"
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(3):
    t("denied%d" % i, lambda: u.sendto(b"secret", ("127.0.0.1", {d})))
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
t("mapped", lambda: u6.sendto(b"secret", ("::ffff:127.0.0.1", {d})))
t("allowed", lambda: u.sendto(b"marker", ("127.0.0.1", {a})))
"#,
        d = denied.port,
        a = allowed.port,
    );
    let (r, out) = run_py(&daemon, "rogue", &script);
    let err = String::from_utf8_lossy(&out.stderr);
    for door in ["denied0", "denied1", "denied2", "mapped"] {
        assert_eq!(r.get(door), Some(&libc::EPERM), "{door}: {r:?} {err}");
    }
    assert_eq!(r.get("allowed"), Some(&0), "{err}");
    // Sent after the refused ones, so had any gone out it would be there.
    allowed.wait_for(b"marker");
    assert!(denied.received().is_empty(), "a denied datagram arrived");
    let ev = daemon.wait_event("net.send", |e| {
        e["target"]["port"] == denied.port && e["outcome"] == "denied"
    });
    assert_eq!(ev["target"]["address"], "127.0.0.1");

    // An ask holds the sender until on-call answers; then it is sent.
    let held_script = format!(
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'asked', ('127.0.0.1', {}))\n",
        held.port
    );
    let child = daemon.spawn_agent("rogue", &["python3", "-c", &held_script]);
    let ev = daemon.wait_event("net.send", |e| {
        e["target"]["port"] == held.port && e["outcome"] == "held"
    });
    // A datagram the policy allows makes no event (they are judged per
    // message). The held one was read after it from the same ring, so an
    // event for it would be here by now.
    let quiet =
        |e: &serde_json::Value| e["kind"] == "net.send" && e["target"]["port"] == allowed.port;
    assert!(
        !daemon.events().iter().any(quiet),
        "an allowed datagram made an event"
    );
    let pid = ev["process"]["pid"].as_u64().expect("pid") as u32;
    wait_stopped(pid, "the held datagram's sender");
    assert!(held.received().is_empty(), "not sent while held");
    let id = ev["hold"]["id"].as_str().expect("hold id").to_owned();
    let ok = daemon
        .cli()
        .args(["approve", &id])
        .output()
        .expect("approve");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = child.wait_with_output().expect("sender");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    held.wait_for(b"asked");
}

/// A root helper on a unix socket would delete what the agent may not:
/// the agent cannot reach it, by path or abstract name; an allowed socket
/// still answers.
#[test]
fn rogue_root_helper_on_a_unix_socket_is_out_of_reach() {
    let scratch = Scratch::new("rogue-unix");
    let (allowed, denied, held) = (UdpListener::v4(), UdpListener::v4(), UdpListener::v4());
    let daemon = start("rogue-unix", &scratch, (&allowed, &denied, &held));
    if daemon.backend("unix") == "none" {
        skip(
            "rogue_root_helper_on_a_unix_socket_is_out_of_reach",
            "this kernel has neither BPF LSM nor cgroup/connect_unix (6.7+)",
        );
        return;
    }
    scratch.dir("sockets");
    let victim = scratch.file("vault/db");
    let spare = scratch.file("work/spare");
    let abstract_name = format!("@agtest-helper-{}", std::process::id());
    let _helper = UnixHelper::start(&scratch.s("sockets/helper.sock"));
    let _abstract = UnixHelper::start(&abstract_name);
    let _ok = UnixHelper::start(&scratch.s("sockets/ok.sock"));
    let victim_path = victim.display().to_string();
    let script = [
        py_ask_helper("helper", &scratch.s("sockets/helper.sock"), &victim_path),
        py_ask_helper("abstract", &abstract_name, &victim_path),
        py_ask_helper(
            "ok",
            &scratch.s("sockets/ok.sock"),
            &spare.display().to_string(),
        ),
    ]
    .concat();
    let (r, out) = run_py(&daemon, "rogue", &script);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(r.get("helper"), Some(&libc::EPERM), "{r:?} {err}");
    assert_eq!(r.get("abstract"), Some(&libc::EPERM), "{r:?} {err}");
    assert_eq!(
        r.get("ok"),
        Some(&0),
        "an allowed unix socket answers: {err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("answer_ok deleted"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(victim.exists(), "the helper never got the request");
    let ev = daemon.wait_event("net.unix_connect", |e| {
        e["target"]["path"] == scratch.s("sockets/helper.sock") && e["outcome"] == "denied"
    });
    assert_eq!(ev["target"]["family"], "unix");
    let ev = daemon.wait_event("net.unix_connect", |e| {
        e["target"]["path"] == abstract_name.as_str()
    });
    assert_eq!(ev["outcome"], "denied");
    assert_eq!(ev["target"]["abstract"], true);

    // Under another name: BPF LSM judges the socket's real path; the cgroup
    // hook only what the agent wrote (doctor names that door).
    if daemon.backend("unix") == "bpf_lsm" {
        let link = scratch.path("work/innocent.sock");
        std::os::unix::fs::symlink(scratch.path("sockets/helper.sock"), &link).expect("symlink");
        let (r, _) = run_py(
            &daemon,
            "rogue",
            &py_ask_helper("symlink", &link.display().to_string(), &victim_path),
        );
        assert_eq!(r.get("symlink"), Some(&libc::EPERM));
        assert!(victim.exists());
    }
}
