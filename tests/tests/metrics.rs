//! `[metrics]`: the endpoint parses as Prometheus text, and its counters
//! move with real events (an allowed delete, a held one and its decision).
//! Needs: a delete backend that holds (seccomp here, BPF LSM in the VM tier).
use agent_guard_tests::*;
use prometheus_parse::{Sample, Scrape, Value as Metric};

fn scrape(port: u16) -> (Scrape, String) {
    let (status, headers, text) = http_get(&format!("http://127.0.0.1:{port}/metrics"), None);
    assert_eq!(status, 200, "{text}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/openmetrics-text")),
        "{headers:?}"
    );
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    // Every sample line became a sample: nothing was skipped as unparsable
    // (a histogram's buckets become one sample; its _sum and _count their own).
    let lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains("_bucket{"))
        .count();
    let plain = parsed
        .samples
        .iter()
        .filter(|s| !matches!(s.value, Metric::Histogram(_)))
        .count();
    assert_eq!(plain, lines, "every sample line parses:\n{text}");
    (parsed, text)
}

fn find<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
}

fn number(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, name, labels).map(|x| &x.value) {
        None => 0.0,
        Some(Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v)) => *v,
        Some(other) => panic!("{name}: not a number: {other:?}"),
    }
}

/// Turns kernel.bpf_stats_enabled on for the test's life, as it was after.
struct BpfStats(Option<String>);

impl BpfStats {
    fn on() -> Self {
        const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";
        let before = std::fs::read_to_string(PATH).ok();
        if std::fs::write(PATH, "1").is_err() {
            return Self(None);
        }
        Self(before)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", before.trim());
        }
    }
}

#[test]
fn metrics_parse_and_move_with_real_events() {
    let stats = BpfStats::on();
    let port = free_port();
    let cg = TestCgroups::new("metrics");
    let scratch = Scratch::new("metrics");
    let extra = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let daemon = Daemon::start(&cleaner_policy(&cg, &scratch.s("prod"), &extra), cg);
    let (before, _) = scrape(port);

    let free = scratch.file("tmp/a.txt");
    assert!(
        daemon
            .run_agent("cleaner", &["rm", &free.display().to_string()])
            .status
            .success()
    );
    daemon.wait_event("file.unlink", |e| {
        e["outcome"] == "allowed" && e["target"]["path"] == free.display().to_string().as_str()
    });

    let held = scratch.file("prod/b.txt");
    let path = held.display().to_string();
    let (child, id) = held_delete(&daemon, &["rm", &path], &path);
    let (during, _) = scrape(port);
    assert_eq!(number(&during, "agent_guard_holds_pending", &[]), 1.0);
    let out = daemon
        .cli()
        .args(["approve", &id])
        .output()
        .expect("approve");
    assert!(out.status.success());
    assert!(child.wait_with_output().expect("rm").status.success());
    daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());
    let (after, text) = scrape(port);

    let moved = |name: &str, labels: &[(&str, &str)]| {
        number(&after, name, labels) - number(&before, name, labels)
    };
    let events = "agent_guard_events_total";
    assert!(
        moved(events, &[("kind", "file.unlink"), ("outcome", "allowed")]) >= 1.0,
        "{text}"
    );
    assert_eq!(
        moved(events, &[("kind", "file.unlink"), ("outcome", "held")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved(events, &[("kind", "hold.decision"), ("outcome", "allowed")]),
        1.0
    );
    assert!(
        moved(
            "agent_guard_agent_events_total",
            &[("agent", "cleaner"), ("outcome", "held")]
        ) >= 1.0
    );
    assert_eq!(number(&after, "agent_guard_holds_pending", &[]), 0.0);

    // The decision latency histogram counted the decision.
    let hist = find(
        &after,
        "agent_guard_decision_latency_seconds",
        &[("decision", "approved")],
    )
    .unwrap_or_else(|| panic!("no decision latency histogram:\n{text}"));
    let Metric::Histogram(buckets) = &hist.value else {
        panic!("decision latency is not a histogram: {:?}", hist.value)
    };
    let inf = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("+Inf bucket");
    assert_eq!(inf.count, 1.0);

    // Kernel program run time, where bpf_stats could be turned on.
    if stats.0.is_some() {
        assert_eq!(number(&after, "agent_guard_bpf_stats_enabled", &[]), 1.0);
        let runs: f64 = after
            .samples
            .iter()
            .filter(|s| s.metric == "agent_guard_bpf_program_runs_total")
            .map(|s| match s.value {
                Metric::Counter(v) | Metric::Untyped(v) => v,
                _ => 0.0,
            })
            .sum();
        assert!(runs > 0.0, "no program runs counted:\n{text}");
        assert!(
            text.contains("agent_guard_bpf_program_run_time_seconds_total{"),
            "{text}"
        );
    } else {
        skip(
            "metrics_parse_and_move_with_real_events (program run time part)",
            "kernel.bpf_stats_enabled cannot be switched on here",
        );
    }
}
