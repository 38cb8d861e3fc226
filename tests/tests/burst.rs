//! No silent loss under a burst: an agent process makes a burst of allowed
//! unlinks on tmpfs, and every call is accounted for in the stream: the
//! events seen plus the losses the stream reports (kernel ring buffer
//! drops, and the reading sink's own drops) equal the calls made.
//!
//! The deleter is placed in the agent cgroup directly (no `run`), so on a
//! kernel without BPF LSM its deletes reach the daemon through the kernel
//! ring buffer (observed), and with BPF LSM through the LSM hooks: either
//! way the kernel path, where drops can happen. 200k calls on the host
//! (~20 s); the VM tier (software-emulated, one CPU, ~17x slower, a debug
//! daemon reading a few hundred events/s) makes 5k.
//! Needs: tp_btf programs (or BPF LSM), and /dev/shm.
use std::path::PathBuf;

use agent_guard_tests::*;
use serde_json::Value;

const PY_BURST: &str = r#"
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    open("%s/%d" % (d, i), "w").close()
print("ready", flush=True)
sys.stdin.readline()
for i in range(n):
    os.unlink("%s/%d" % (d, i))
print("done", flush=True)
"#;

/// The burst's own events are counted, not kept (200k parsed events would
/// hold gigabytes).
fn is_burst_unlink(e: &Value) -> bool {
    e["kind"] == "file.unlink"
        && e["target"]["path"]
            .as_str()
            .is_some_and(|p| p.contains("/agent-guard-burst-"))
}

/// Calls accounted for by `events` (plus `counted` burst events): events
/// seen, kernel drops, and drops of the stdout sink the test reads.
fn accounted(events: &[Value], counted: u64) -> u64 {
    let lost: u64 = events
        .iter()
        .filter(|e| e["kind"] == "loss")
        .filter(|e| {
            matches!(e["loss"]["reason"].as_str(), Some("ringbuf_full"))
                || e["loss"]["sink"] == "stdout"
        })
        .filter_map(|e| e["loss"]["count"].as_u64())
        .sum();
    counted + lost
}

#[test]
fn every_call_of_a_burst_is_an_event_or_a_reported_loss() {
    let n: u64 = if tier() == "vm" { 5_000 } else { 200_000 };
    let shm = PathBuf::from("/dev/shm");
    let dir = shm.join(claim_dir(&shm, "agent-guard-burst"));
    let cg = TestCgroups::new("burst");
    let agent_cg = cg.path("bot");
    let policy = format!(
        "[[agent]]\nname = \"bot\"\nowner = \"o\"\npurpose = \"burst\"\ncgroup = \"{agent_cg}\"\n\n\
         [agent.delete]\ndefault = \"allow\"\n"
    );
    let daemon = Daemon::start_with(
        &policy,
        cg,
        Daemon::fresh_dir(),
        Options {
            count_only: Some(is_burst_unlink),
            ..Options::default()
        },
    );
    let script = format!("exec python3 -c '{PY_BURST}' {} {n}", dir.display());
    let mut child = spawn_in_cgroup(&agent_cg, &script);
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = ChildLines::new(child.stdout.take().expect("stdout"));
    assert_eq!(lines.next_line("ready"), "ready");
    std::io::Write::write_all(&mut stdin, b"go\n").expect("go");
    assert_eq!(lines.next_line("done"), "done");
    drop(stdin);
    let status = child.wait().expect("python");
    assert!(status.success());

    daemon.wait_until("every call accounted for", accounted, "file.unlink", n);
    let seen = daemon.counted("file.unlink");
    let events = daemon.stop();
    let lost = accounted(&events, 0);
    let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
    for e in events.iter().filter(|e| e["kind"] == "loss") {
        *by_reason
            .entry(format!("{}/{}", e["loss"]["reason"], e["loss"]["sink"]))
            .or_default() += e["loss"]["count"].as_u64().unwrap_or(0);
    }
    eprintln!("burst: {n} unlinks, {seen} events, {lost} reported lost: {by_reason:?}");
    assert_eq!(
        seen + lost,
        n,
        "events seen ({seen}) + reported losses ({lost}) must equal calls made ({n})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
