//! The rogue-agent suite, network: a denied port reached by datagrams
//! without connect, and a root service asked over its unix socket to do
//! what the agent may not. For each door: the destination unreached, the
//! agent saw EPERM, an event says so; and the allowed form still works.
use std::os::{
    linux::net::SocketAddrExt as _,
    unix::net::{SocketAddr, UnixDatagram},
};

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
allow = ["127.0.0.1/32:{a}", "unix:{ok}", "unix:{dgram_ok}"]
deny = ["127.0.0.1/32:{d}", "unix:{helper}", "unix:@agtest-helper-{pid}", "unix:{dgram}"]
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
        dgram = scratch.s("sockets/dgram.sock"),
        dgram_ok = scratch.s("sockets/dgram-ok.sock"),
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

/// A unix datagram socket bound by the test, drained without waiting.
fn unix_dgram(addr: &str) -> UnixDatagram {
    let sock = match addr.strip_prefix('@') {
        Some(name) => {
            let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
            UnixDatagram::bind_addr(&addr)
        }
        None => UnixDatagram::bind(addr),
    }
    .expect("bind unix datagram socket");
    sock.set_nonblocking(true).expect("nonblocking");
    sock
}

/// What arrived on `sock` so far (a unix datagram is queued at the
/// receiver before sendto returns, so nothing is in flight).
fn drained(sock: &UnixDatagram) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

/// A root helper on a unix socket would delete what the agent may not:
/// the agent cannot reach it, by path or abstract name, by stream or
/// datagram; an allowed socket still answers.
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
    let dgram = unix_dgram(&scratch.s("sockets/dgram.sock"));
    let dgram_ok = unix_dgram(&scratch.s("sockets/dgram-ok.sock"));
    let dgram_name = format!("agtest-dgram-{}", std::process::id());
    let dgram_abstract = unix_dgram(&format!("@{dgram_name}"));
    // Datagrams: sendto by path and by abstract name, and a connected
    // datagram socket; then the allowed one, last.
    let datagrams = format!(
        r#"
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
t("dgram", lambda: d.sendto(b"secret", {path:?}))
t("dgram_abstract", lambda: d.sendto(b"secret", "\0{dgram_name}"))
def dgram_connected():
    c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    c.connect({path:?})
    c.send(b"secret")
t("dgram_connected", dgram_connected)
t("dgram_ok", lambda: d.sendto(b"marker", {ok:?}))
"#,
        path = scratch.s("sockets/dgram.sock"),
        ok = scratch.s("sockets/dgram-ok.sock"),
    );
    let script = [
        py_ask_helper("helper", &scratch.s("sockets/helper.sock"), &victim_path),
        py_ask_helper("abstract", &abstract_name, &victim_path),
        py_ask_helper(
            "ok",
            &scratch.s("sockets/ok.sock"),
            &spare.display().to_string(),
        ),
        datagrams,
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
    for door in ["dgram", "dgram_abstract", "dgram_connected"] {
        assert_eq!(r.get(door), Some(&libc::EPERM), "{door}: {r:?} {err}");
    }
    assert_eq!(r.get("dgram_ok"), Some(&0), "{err}");
    assert_eq!(drained(&dgram_ok), [b"marker".to_vec()]);
    assert!(drained(&dgram).is_empty(), "a denied datagram arrived");
    assert!(
        drained(&dgram_abstract).is_empty(),
        "a denied abstract datagram arrived"
    );
    let ev = daemon.wait_event("net.unix_send", |e| {
        e["target"]["path"] == scratch.s("sockets/dgram.sock") && e["outcome"] == "denied"
    });
    assert_eq!(
        ev["rule"]["match"],
        format!("unix:{}", scratch.s("sockets/dgram.sock"))
    );
    let ev = daemon.wait_event("net.unix_send", |e| {
        e["target"]["path"] == format!("@{dgram_name}").as_str()
    });
    assert_eq!(ev["outcome"], "denied");
    assert_eq!(ev["target"]["abstract"], true);
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
