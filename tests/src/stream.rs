//! Reading a daemon's event stream: the schema every event must match,
//! and helpers for streams too large to keep (bursts).
use std::time::Instant;

use serde_json::Value;

use crate::{Daemon, PATIENCE, TestCgroups};

/// docs/events.schema.json, the written contract of every event line.
pub const EVENT_SCHEMA: &str = include_str!("../../docs/events.schema.json");

/// Asserts every event validates against [`EVENT_SCHEMA`] (a real JSON
/// Schema validator; unknown kinds and undocumented members fail).
pub fn assert_schema(events: &[Value]) {
    let schema: Value = serde_json::from_str(EVENT_SCHEMA).expect("schema is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    // ECS lines are checked against ECS (see `assert_conformance`).
    for e in events.iter().filter(|e| e.get("ecs").is_none()) {
        let errors: Vec<String> = validator
            .iter_errors(e)
            .map(|err| format!("{err} (at {})", err.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "event does not match docs/events.schema.json:\n{e}\n{errors:#?}"
        );
    }
}

/// How to start a daemon beyond its policy.
#[derive(Default)]
pub struct Options {
    /// Extra `agent-guard daemon` arguments (e.g. `--chain-key FILE`).
    pub args: Vec<String>,
    /// Events for which this returns true are counted by kind, not kept:
    /// for bursts too large to hold as parsed JSON.
    pub count_only: Option<fn(&Value) -> bool>,
    /// Starts the daemon with this soft RLIMIT_NOFILE (its hard limit
    /// unchanged), as systemd's default of 1024 would.
    pub nofile_soft: Option<u64>,
}

/// Asserts `seq` runs 1, 2, 3, ... with no gap or repeat.
pub fn assert_gap_free(events: &[Value]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seq"].as_u64(),
            Some(i as u64 + 1),
            "seq gap or reorder at line {}: {e}",
            i + 1
        );
    }
}

/// Python that creates and then unlinks N files in DIR (one event each),
/// then prints `done`.
pub const PY_CHURN: &str = r#"
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    open("%s/f%d" % (d, i), "w").close()
for i in range(n):
    os.unlink("%s/f%d" % (d, i))
print("done", flush=True)
"#;

impl Daemon {
    /// `agent-guard status --json`, which must answer.
    pub fn status(&self) -> Value {
        let out = self
            .cli()
            .args(["status", "--json"])
            .output()
            .expect("status");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// The sink `name` as `status` shows it.
    pub fn sink_status(&self, name: &str) -> Value {
        let s = self.status();
        s["sinks"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no sink {name:?} in status: {s}"))
    }

    /// Waits until `n` readers follow the event stream (`events --follow`
    /// subscriptions and unix sink connections, as `status` lists them), so
    /// no event made afterwards can be missed.
    pub fn wait_readers(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = self
                .cli()
                .args(["status", "--json"])
                .output()
                .expect("status");
            let s: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if s["readers"].as_array().is_some_and(|r| r.len() >= n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} stream readers within {PATIENCE:?}: {s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Events counted but not kept ([`Options::count_only`]), by kind.
    pub fn counted(&self, kind: &str) -> u64 {
        let s = self
            .stream
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.counted.get(kind).copied().unwrap_or(0)
    }

    /// Waits until `measure` (over the events so far, kept and counted as
    /// `kind`) reaches `target`. Fails only when it stops growing for
    /// [`PATIENCE`]: a liveness bound, however long the work takes.
    pub fn wait_until(
        &self,
        what: &str,
        measure: impl Fn(&[Value], u64) -> u64,
        kind: &str,
        target: u64,
    ) {
        let (lock, cvar) = &*self.stream;
        let mut last = (0, Instant::now());
        let mut s = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let now_at = measure(&s.events, s.counted.get(kind).copied().unwrap_or(0));
            if now_at >= target {
                return;
            }
            let now = Instant::now();
            if now_at > last.0 {
                last = (now_at, now);
            }
            assert!(
                !s.closed,
                "daemon exited before {what} ({now_at} of {target})"
            );
            let deadline = last.1 + PATIENCE;
            assert!(
                now < deadline,
                "{what}: stuck at {now_at} of {target} for {PATIENCE:?}"
            );
            s = cvar
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Like [`Daemon::stop`], but keeps the daemon's directory (its state,
    /// and the chain tip in it) for a successor started with
    /// [`Daemon::start_in`].
    pub fn stop_keeping_dir(mut self) -> (Vec<Value>, TestCgroups, std::path::PathBuf) {
        self.terminate();
        self.keep_dir = true;
        let cgroups = self.cgroups.take().expect("cgroups");
        (self.events(), cgroups, self.dir.clone())
    }
}
