//! The rogue-agent suite, the daemon's own TCP listeners: an agent that
//! read a web token (an adopted agent can, on a kernel without BPF LSM)
//! must still not reach the approval page to approve its own holds, nor
//! the metrics endpoint. The cgroup connect programs refuse it on every
//! backend, for runs and adopted cgroups alike, whatever the policy says:
//! default allow, an explicit allow of the very address and port, audit
//! mode. A process outside every agent still reaches both.
use std::{collections::HashMap, net::IpAddr, process::Output};

use agent_guard_tests::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// What the rule of a refused connect says it is.
const WEB_RULE: &str = "self-defense: the approval page ([web])";
const METRICS_RULE: &str = "self-defense: the metrics endpoint ([metrics])";

/// Default allow; an explicit allow of the page's own address and port;
/// audit mode.
const AGENTS: [&str; 3] = ["open", "loopback", "audit"];

/// The page on 127.0.0.1:web, metrics on every address (0.0.0.0:metrics),
/// and three agents that the policy would let reach them.
struct Surfaces {
    daemon: Daemon,
    web: u16,
    metrics: u16,
    /// Each agent's cgroup, relative to the cgroup2 mount.
    cgroups: HashMap<&'static str, String>,
    _tokens: SecretFile,
}

fn start(test: &str) -> Surfaces {
    let tokens = SecretFile::new(test, &format!("alice:{TOKEN}\n"));
    let (web, metrics) = (free_port(), free_port());
    let cg = TestCgroups::new(test);
    let agent = |name: &str, mode: &str, connect: &str| {
        format!(
            r#"
[[agent]]
name = "{name}"
owner = "sec@example.com"
purpose = "wants to approve its own holds"
cgroup = "{}"
mode = "{mode}"

[agent.connect]
{connect}
"#,
            cg.path(name)
        )
    };
    let policy = format!(
        r#"
[daemon]
approval_timeout_secs = 300

[web]
listen = "127.0.0.1:{web}"
tokens_file = "{tokens}"

[metrics]
listen = "0.0.0.0:{metrics}"
allow_remote = true
{open}{loopback}{audit}"#,
        tokens = tokens.s(),
        open = agent("open", "enforce", r#"default = "allow""#),
        loopback = agent(
            "loopback",
            "enforce",
            &format!(
                r#"default = "deny"
allow = ["127.0.0.0/8:*", "127.0.0.1/32:{web}", "127.0.0.1/32:{metrics}", "0.0.0.0/32:*", "[::1]:*", "[::]:*", "[::ffff:127.0.0.1]:*"]"#
            )
        ),
        audit = agent("audit", "audit", r#"default = "deny""#),
    );
    let cgroups = AGENTS.iter().map(|a| (*a, cg.path(a))).collect();
    Surfaces {
        daemon: Daemon::start(&policy, cg),
        web,
        metrics,
        cgroups,
        _tokens: tokens,
    }
}

/// A non-loopback IPv4 address of this host, if it has one (the metrics
/// endpoint listens there too).
fn host_address() -> Option<String> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())))
        .find(|ip| !ip.is_loopback())
        .map(|ip| ip.to_string())
}

/// Connects to each (label, family, host, port) argument; prints "label
/// errno" (0: connected).
const PY_SURFACES: &str = r#"
fams = {"4": socket.AF_INET, "6": socket.AF_INET6}
for arg in sys.argv[1:]:
    label, fam, host, port = arg.split(",")
    def go():
        s = socket.socket(fams[fam], socket.SOCK_STREAM)
        s.settimeout(20)
        try:
            s.connect((host, int(port)))
        finally:
            s.close()
    t(label, go)
"#;

/// The doors tried, each "label,family,host,port", and the ones that must
/// stay open (another loopback port: the refusal is narrow).
fn doors(s: &Surfaces, open: u16) -> (Vec<String>, Vec<&'static str>) {
    let (w, m) = (s.web, s.metrics);
    let mut refused = vec![
        format!("web,4,127.0.0.1,{w}"),
        format!("web_mapped,6,::ffff:127.0.0.1,{w}"),
        format!("web_any,4,0.0.0.0,{w}"),
        format!("web_any6,6,::,{w}"),
        format!("metrics,4,127.0.0.1,{m}"),
        format!("metrics_lo2,4,127.0.0.2,{m}"),
        format!("metrics_mapped,6,::ffff:127.0.0.1,{m}"),
        format!("metrics_any,4,0.0.0.0,{m}"),
    ];
    if let Some(host) = host_address() {
        refused.push(format!("metrics_host,4,{host},{m}"));
    }
    refused.push(format!("other,4,127.0.0.1,{open}"));
    (refused, vec!["other"])
}

fn check(who: &str, out: &Output, doors: &[String], open: &[&str]) {
    let r = labels(out);
    let err = String::from_utf8_lossy(&out.stderr);
    for door in doors {
        let label = door.split(',').next().expect("label");
        let want = if open.contains(&label) {
            0
        } else {
            libc::EPERM
        };
        assert_eq!(r.get(label), Some(&want), "{who}: {label}: {r:?} {err}");
    }
}

/// curl to the page and the metrics endpoint, as an agent's shell would:
/// "curl couldn't connect" (exit 7) on each.
fn curl_script(s: &Surfaces) -> String {
    format!(
        "for u in http://127.0.0.1:{}/api/state http://127.0.0.1:{}/metrics; do \
         curl -s -o /dev/null --max-time 20 -H 'Authorization: Bearer {TOKEN}' \"$u\"; \
         echo \"curl $?\"; done",
        s.web, s.metrics
    )
}

fn has_curl() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn rogue_agents_cannot_reach_the_page_or_metrics() {
    let s = start("rogue-surfaces");
    let other = Listener::v4();
    let scratch = Scratch::new("rogue-surfaces");
    let script = scratch.file("surfaces.py");
    std::fs::write(&script, format!("{PY_PRELUDE}{PY_SURFACES}")).expect("script");
    let script = script.display().to_string();
    let (doors, open) = doors(&s, other.port);
    let curl = has_curl();
    if !curl {
        skip(
            "rogue_agents_cannot_reach_the_page_or_metrics (curl part)",
            "no curl on this machine",
        );
    }

    for agent in AGENTS {
        // Under `agent-guard run`.
        let mut argv = vec!["python3", script.as_str()];
        argv.extend(doors.iter().map(String::as_str));
        let out = s.daemon.run_agent(agent, &argv);
        check(&format!("{agent} (run)"), &out, &doors, &open);
        // Adopted: placed straight into the agent's cgroup, no launcher.
        let cgroup = &s.cgroups[agent];
        let out = run_in_cgroup(cgroup, &format!("python3 {script} {}", doors.join(" ")));
        check(&format!("{agent} (adopted)"), &out, &doors, &open);
        if curl {
            let out = run_in_cgroup(cgroup, &curl_script(&s));
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                text.lines().filter(|l| *l == "curl 7").count(),
                2,
                "{agent}: curl must fail to connect: {text}"
            );
        }
    }

    // io_uring's IORING_OP_CONNECT goes through the same hook: refused the
    // same way, where the agent has io_uring at all (a run's filter may
    // refuse io_uring_setup itself, which closes this door too).
    let ops: Vec<String> = [s.web, s.metrics, other.port]
        .iter()
        .map(|p| format!("connect:127.0.0.1:{p}"))
        .collect();
    let want = |r: &std::collections::HashMap<String, i32>, who: &str| {
        if r.get("setup") != Some(&0) {
            assert!(
                who.ends_with("(run)"),
                "{who}: io_uring_setup refused: {r:?}"
            );
            return;
        }
        for (port, res) in [
            (s.web, -libc::EPERM),
            (s.metrics, -libc::EPERM),
            (other.port, 0),
        ] {
            assert_eq!(
                r.get(&format!("connect_{port}")),
                Some(&res),
                "{who}: {r:?}"
            );
        }
    };
    for agent in AGENTS {
        let (r, _) = io_uring_as(&s.daemon, agent, &ops);
        want(&r, &format!("{agent} io_uring (run)"));
        let quoted: Vec<String> = ops.iter().map(|o| format!("'{o}'")).collect();
        let out = run_in_cgroup(
            &s.cgroups[agent],
            &format!(
                "python3 -c '{}' {}",
                PY_IO_URING.replace('\'', "'\\''"),
                quoted.join(" ")
            ),
        );
        want(&labels(&out), &format!("{agent} io_uring (adopted)"));
    }

    // Each refusal is a net.connect event that names the guard's own rule,
    // never a policy rule, and none of these connects was let through.
    for agent in AGENTS {
        for (port, rule) in [(s.web, WEB_RULE), (s.metrics, METRICS_RULE)] {
            let ev = s.daemon.wait_event("net.connect", |e| {
                e["agent"]["name"] == agent && e["target"]["port"] == port
            });
            assert_eq!(ev["outcome"], "denied", "{ev}");
            assert_eq!(ev["rule"]["verdict"], "deny", "{ev}");
            assert_eq!(ev["rule"]["match"], rule, "{ev}");
            assert!(ev["rule"]["source"].is_null(), "no policy line: {ev}");
        }
    }
    let events = s.daemon.events();
    let reached: Vec<_> = events
        .iter()
        .filter(|e| {
            e["kind"] == "net.connect"
                && (e["target"]["port"] == s.web || e["target"]["port"] == s.metrics)
                && e["outcome"] != "denied"
        })
        .collect();
    assert!(reached.is_empty(), "a connect got through: {reached:?}");

    // Counted in metrics like every denial; read from outside every agent.
    let (status, _, text) = http_get(&format!("http://127.0.0.1:{}/metrics", s.metrics), None);
    assert_eq!(status, 200, "{text}");
    let denied = text
        .lines()
        .find(|l| {
            l.starts_with("agent_guard_events_total{")
                && l.contains("kind=\"net.connect\"")
                && l.contains("outcome=\"denied\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let refused = events
        .iter()
        .filter(|e| {
            e["kind"] == "net.connect"
                && e["rule"]["match"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("self-defense:"))
        })
        .count();
    assert!(refused >= 6 * 8, "{refused} refusals reported");
    assert!(
        denied >= refused as f64,
        "metrics count {denied} denied connects, {refused} refusals were reported"
    );
}

/// Outside every agent, the page and the metrics endpoint answer as
/// before, on every address they listen on.
#[test]
fn a_process_outside_the_agents_reaches_the_page_and_metrics() {
    let s = start("surfaces-outside");
    let (status, _, body) = http_get(
        &format!("http://127.0.0.1:{}/api/state", s.web),
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    let mut urls = vec![
        format!("http://127.0.0.1:{}/metrics", s.metrics),
        format!("http://127.0.0.2:{}/metrics", s.metrics),
    ];
    urls.extend(host_address().map(|h| format!("http://{h}:{}/metrics", s.metrics)));
    for url in urls {
        let (status, _, text) = http_get(&url, None);
        assert_eq!(status, 200, "{url}: {text}");
    }
}
