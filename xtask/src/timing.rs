//! Wall time per stage of `cargo xtask test`, with the load average beside
//! each figure: on a shared machine a slow stage means little without it.
use std::time::{Duration, Instant};

/// The 1-minute load average, as /proc/loadavg gives it ("?" if unreadable).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Stages in the order they ran, each with its wall time and the load
/// average when it ended.
pub struct Stages {
    started: Instant,
    current: Option<(&'static str, Instant)>,
    done: Vec<(&'static str, Duration, String)>,
}

impl Stages {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            current: None,
            done: Vec::new(),
        }
    }

    /// Ends the running stage, if any, and starts `name`.
    pub fn start(&mut self, name: &'static str) {
        self.finish();
        self.current = Some((name, Instant::now()));
    }

    /// Ends the running stage and prints its time.
    pub fn finish(&mut self) {
        if let Some((name, since)) = self.current.take() {
            let took = since.elapsed();
            let load = load_average();
            eprintln!(
                "xtask: {name} took {:.1} s (load average {load})",
                took.as_secs_f64()
            );
            self.done.push((name, took, load));
        }
    }

    /// Prints every finished stage and the total; called on success and on
    /// failure alike, so a red run still says where its time went.
    pub fn summary(&mut self) {
        self.finish();
        eprintln!("xtask: stage times (wall clock, load average at the end of each):");
        for (name, took, load) in &self.done {
            eprintln!(
                "xtask:   {:>7.1} s  {name}  (load {load})",
                took.as_secs_f64()
            );
        }
        eprintln!(
            "xtask:   {:>7.1} s  total",
            self.started.elapsed().as_secs_f64()
        );
    }
}
