//! Splitting the privileged tests between guests that run side by side,
//! each on its own core (TCG with `-smp 1` uses one host thread per guest).
//!
//! Every test's guest time is estimated from the committed table
//! (`durations.txt` next to this file, so a fresh clone splits well) and
//! from what this checkout measured in earlier runs
//! (`target/vm/durations.txt`, which wins). A test in neither gets the mean
//! of its binary's known tests, else of all. Binaries are then handed out
//! longest first, each to the guest with the least work so far; a binary
//! longer than a guest's fair share is first cut into parts of whole tests,
//! run with `--exact`.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::console::{Console, TestRun, binary_name};

/// Guest seconds per test, as measured for CI; regenerate from a full run's
/// `target/vm/durations.txt`.
const COMMITTED: &str = include_str!("durations.txt");
/// Guest seconds a binary costs besides its tests: exec over virtio-fs and
/// libtest's start-up (measured: about 1 s).
const BINARY_OVERHEAD_SECS: f64 = 1.0;
/// When nothing at all is known.
const DEFAULT_TEST_SECS: f64 = 20.0;

/// One run of a test binary in a guest.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub binary: PathBuf,
    /// Arguments after `--test-threads=1`: the filter, or `--exact` and names.
    pub args: Vec<String>,
    /// The tests these arguments select, as libtest listed them.
    pub tests: Vec<String>,
    /// Estimated guest seconds.
    pub estimate: f64,
}

impl Job {
    /// `holds`, or `holds (3 tests)` for a part of a binary.
    pub fn describe(&self) -> String {
        let name = binary_name(&self.binary.to_string_lossy());
        match self.args.first().map(String::as_str) {
            Some("--exact") => format!("{name} ({} tests)", self.args.len() - 1),
            _ => name,
        }
    }
}

/// Test names per binary as libtest lists them, with `filter` applied as
/// libtest applies it; binaries with no matching test are left out.
pub fn list(binaries: &[PathBuf], filter: Option<&str>) -> Result<Vec<(PathBuf, Vec<String>)>> {
    let mut out = Vec::new();
    for binary in binaries {
        let mut cmd = Command::new(binary);
        cmd.args(["--list", "--format", "terse"]);
        cmd.args(filter);
        let listed = cmd
            .output()
            .with_context(|| format!("listing the tests of {}", binary.display()))?;
        if !listed.status.success() {
            bail!(
                "{} --list failed ({}): {}",
                binary.display(),
                listed.status,
                String::from_utf8_lossy(&listed.stderr).trim()
            );
        }
        let tests: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter_map(|line| line.strip_suffix(": test"))
            .map(str::to_owned)
            .collect();
        if !tests.is_empty() {
            out.push((binary.clone(), tests));
        }
    }
    Ok(out)
}

/// Known guest seconds per `binary::test`.
pub struct Durations(BTreeMap<String, f64>);

impl Durations {
    /// The committed table, overlaid with this checkout's own measurements.
    pub fn load(local: &Path) -> Self {
        let mut table = parse(COMMITTED);
        if let Ok(text) = fs::read_to_string(local) {
            table.extend(parse(&text));
        }
        Self(table)
    }

    fn estimate(&self, binary: &str, test: &str) -> f64 {
        if let Some(secs) = self.0.get(&format!("{binary}::{test}")) {
            return *secs;
        }
        let prefix = format!("{binary}::");
        let same: Vec<f64> = self
            .0
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| *v)
            .collect();
        mean(&same)
            .or_else(|| mean(&self.0.values().copied().collect::<Vec<_>>()))
            .unwrap_or(DEFAULT_TEST_SECS)
    }

    /// Adds what a run measured and writes the table to `local`.
    pub fn record(local: &Path, runs: &[&TestRun]) -> Result<()> {
        let mut table = fs::read_to_string(local)
            .map(|text| parse(&text))
            .unwrap_or_default();
        for run in runs {
            table.insert(format!("{}::{}", run.binary, run.test), run.secs);
        }
        let mut text = String::from(
            "# Guest seconds per privileged test, written by `cargo xtask vm-test`.\n",
        );
        for (test, secs) in &table {
            writeln!(text, "{test}\t{secs:.1}")?;
        }
        fs::write(local, text).with_context(|| format!("writing {}", local.display()))
    }
}

fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (test, secs) = line.rsplit_once(char::is_whitespace)?;
            Some((test.trim().to_owned(), secs.parse().ok()?))
        })
        .collect()
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Splits `listed` between `guests` guests; every guest gets at least one
/// job unless there are fewer jobs than guests. `filter` is what the tests
/// were listed with: a whole binary runs with it, a part with `--exact`.
pub fn assign(
    listed: &[(PathBuf, Vec<String>)],
    filter: Option<&str>,
    durations: &Durations,
    guests: usize,
) -> Vec<Vec<Job>> {
    let guests = guests.max(1);
    // (binary, its tests with their estimates)
    let mut units: Vec<(&PathBuf, Vec<(&String, f64)>)> = listed
        .iter()
        .map(|(binary, tests)| {
            let name = binary_name(&binary.to_string_lossy());
            let timed = tests
                .iter()
                .map(|test| (test, durations.estimate(&name, test)))
                .collect();
            (binary, timed)
        })
        .collect();
    // By name, so that the split does not depend on cargo's order.
    units.sort_by(|a, b| {
        (binary_name(&a.0.to_string_lossy()), a.0).cmp(&(binary_name(&b.0.to_string_lossy()), b.0))
    });
    let cost = |tests: &[(&String, f64)]| {
        BINARY_OVERHEAD_SECS + tests.iter().map(|(_, secs)| secs).sum::<f64>()
    };
    let total: f64 = units.iter().map(|(_, tests)| cost(tests)).sum();
    let share = total / guests as f64;
    // Cut a binary longer than a fair share into parts that each fit one.
    let mut jobs = Vec::new();
    for (binary, mut tests) in units.drain(..) {
        let parts = (cost(&tests) / share).ceil().clamp(1.0, guests as f64) as usize;
        let parts = parts.min(tests.len());
        if parts <= 1 {
            let mut args = Vec::new();
            args.extend(filter.map(str::to_owned));
            jobs.push(Job {
                binary: binary.clone(),
                args,
                tests: tests.iter().map(|(test, _)| (*test).clone()).collect(),
                estimate: cost(&tests),
            });
            continue;
        }
        tests.sort_by(|a, b| b.1.total_cmp(&a.1));
        for part in longest_first(tests, parts, |(_, secs)| *secs) {
            let mut args = vec!["--exact".to_owned()];
            let names: Vec<String> = part.iter().map(|(test, _)| (*test).clone()).collect();
            args.extend(names.iter().cloned());
            jobs.push(Job {
                binary: binary.clone(),
                args,
                tests: names,
                estimate: cost(&part),
            });
        }
    }
    jobs.sort_by(|a, b| b.estimate.total_cmp(&a.estimate));
    longest_first(jobs, guests, |job| job.estimate)
        .into_iter()
        .filter(|jobs| !jobs.is_empty())
        .collect()
}

/// What a guest's console does not prove of its `jobs`: binaries that
/// never ended, and binaries that exited 0 without libtest counting exactly
/// their planned tests. A binary that failed is reported by its status.
pub fn unproven(jobs: &[Job], console: &Console) -> Vec<String> {
    let mut out = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let what = job.describe();
        let planned = job.tests.len();
        match console.binaries.get(i) {
            None => out.push(format!("{what} did not run to its end")),
            Some(run) if run.name != binary_name(&job.binary.to_string_lossy()) => {
                out.push(format!("{what} was planned but {} ran", run.name));
            }
            Some(run) if run.status != 0 => {}
            Some(run) => match run.ran {
                Some(n) if n == planned => {}
                Some(n) => out.push(format!("{what} ran {n} tests, not the {planned} planned")),
                None => out.push(format!(
                    "{what} printed no `test result:` line to prove its {planned} test(s) ran"
                )),
            },
        }
    }
    out
}

/// Greedy longest-processing-time assignment into `bins` lists: each item,
/// in the given (descending) order, goes to the list with the least so far.
fn longest_first<T>(items: Vec<T>, bins: usize, secs: impl Fn(&T) -> f64) -> Vec<Vec<T>> {
    let mut out: Vec<(f64, Vec<T>)> = (0..bins).map(|_| (0.0, Vec::new())).collect();
    for item in items {
        let cost = secs(&item);
        if let Some(bin) = out.iter_mut().min_by(|a, b| a.0.total_cmp(&b.0)) {
            bin.0 += cost;
            bin.1.push(item);
        }
    }
    out.into_iter().map(|(_, items)| items).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, f64)]) -> Durations {
        Durations(entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
    }

    fn listed(binaries: &[(&str, &[&str])]) -> Vec<(PathBuf, Vec<String>)> {
        binaries
            .iter()
            .map(|(bin, tests)| {
                (
                    PathBuf::from(format!("/t/deps/{bin}-0123abcd")),
                    tests.iter().map(|t| (*t).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn load(guests: &[Vec<Job>]) -> Vec<f64> {
        guests
            .iter()
            .map(|jobs| jobs.iter().map(|j| j.estimate).sum())
            .collect()
    }

    #[test]
    fn binaries_go_longest_first_to_the_least_loaded_guest() {
        let durations = table(&[
            ("a::x", 50.0),
            ("b::x", 40.0),
            ("c::x", 30.0),
            ("d::x", 20.0),
        ]);
        let listed = listed(&[("a", &["x"]), ("b", &["x"]), ("c", &["x"]), ("d", &["x"])]);
        let guests = assign(&listed, Some("x"), &durations, 2);
        assert_eq!(guests.len(), 2);
        // 50+20 against 40+30, plus one overhead per binary each.
        assert_eq!(load(&guests), [72.0, 72.0]);
        assert!(guests.iter().flatten().all(|j| j.args == ["x"]));
    }

    #[test]
    fn a_binary_longer_than_a_share_is_cut_into_exact_parts() {
        let durations = table(&[
            ("big::a", 40.0),
            ("big::b", 30.0),
            ("big::c", 20.0),
            ("big::d", 10.0),
            ("small::a", 10.0),
        ]);
        let listed = listed(&[("big", &["a", "b", "c", "d"]), ("small", &["a"])]);
        let guests = assign(&listed, None, &durations, 2);
        let mut ran: Vec<String> = guests
            .iter()
            .flatten()
            .filter(|j| j.binary.ends_with("big-0123abcd"))
            .flat_map(|j| {
                assert_eq!(j.args[0], "--exact");
                j.args[1..].to_vec()
            })
            .collect();
        ran.sort();
        assert_eq!(ran, ["a", "b", "c", "d"]);
        let load = load(&guests);
        assert!((load[0] - load[1]).abs() <= 11.0, "{load:?}");
    }

    #[test]
    fn unknown_tests_get_their_binarys_mean_and_few_jobs_leave_guests_out() {
        let durations = table(&[("a::x", 10.0), ("a::y", 30.0)]);
        assert_eq!(durations.estimate("a", "new"), 20.0);
        assert_eq!(durations.estimate("b", "new"), 20.0);
        assert_eq!(table(&[]).estimate("b", "new"), DEFAULT_TEST_SECS);
        let guests = assign(&listed(&[("a", &["x"])]), None, &durations, 2);
        assert_eq!(guests.len(), 1);
    }

    /// Every listed test once; the same split whatever the input order;
    /// no guest more than one job's estimate above another.
    #[test]
    fn every_test_runs_once_deterministically_and_balanced() {
        let durations = table(&[
            ("connect::a", 120.0),
            ("connect::b", 90.0),
            ("connect::c", 60.0),
            ("burst::a", 180.0),
            ("siem::a", 45.0),
            ("siem::b", 45.0),
            ("doctor::a", 30.0),
        ]);
        let names = ["a", "b", "c", "d", "e"];
        let listed = listed(&[
            ("connect", &names[..3]),
            ("burst", &names[..1]),
            ("siem", &names[..2]),
            ("doctor", &names[..1]),
            // A binary no table knows yet, and new tests in a known one.
            ("rogue_sidedoor", &names[..4]),
            ("web_page", &names[..5]),
        ]);
        for guests in 1..=5 {
            let split = assign(&listed, None, &durations, guests);
            assert!(split.len() <= guests);
            assert!(split.iter().all(|jobs| !jobs.is_empty()));
            let mut ran: Vec<(String, String)> = split
                .iter()
                .flatten()
                .flat_map(|job| {
                    let binary = binary_name(&job.binary.to_string_lossy());
                    match job.args.first().map(String::as_str) {
                        Some("--exact") => assert_eq!(job.args[1..], job.tests[..]),
                        _ => assert!(job.args.is_empty()),
                    }
                    job.tests.iter().map(move |t| (binary.clone(), t.clone()))
                })
                .collect();
            ran.sort();
            let mut expected: Vec<(String, String)> = listed
                .iter()
                .flat_map(|(bin, tests)| {
                    let binary = binary_name(&bin.to_string_lossy());
                    tests.iter().map(move |t| (binary.clone(), t.clone()))
                })
                .collect();
            expected.sort();
            assert_eq!(ran, expected, "{guests} guest(s)");

            let mut reversed = listed.clone();
            reversed.reverse();
            assert_eq!(assign(&reversed, None, &durations, guests), split);

            let biggest = split
                .iter()
                .flatten()
                .map(|job| job.estimate)
                .fold(0.0, f64::max);
            let load = load(&split);
            let (min, max) = load
                .iter()
                .fold((f64::MAX, 0.0_f64), |(lo, hi), l| (lo.min(*l), hi.max(*l)));
            if split.len() == guests {
                assert!(max - min <= biggest + 1e-9, "{guests}: {load:?}");
            }
        }
    }

    #[test]
    fn a_console_proves_only_what_ran_in_full() {
        let jobs = assign(
            &listed(&[("a", &["x", "y"]), ("b", &["x"]), ("c", &["x"])]),
            None,
            &table(&[
                ("a::x", 30.0),
                ("a::y", 30.0),
                ("b::x", 20.0),
                ("c::x", 10.0),
            ]),
            1,
        )
        .remove(0);
        let order: Vec<String> = jobs.iter().map(Job::describe).collect();
        assert_eq!(order, ["a", "b", "c"]);
        let mut console = Console::default();
        let summary = |n| format!("test result: ok. {n} passed; 0 failed; 0 ignored; 0 measured");
        console.line("VMTEST: running /t/deps/a-0123abcd", 0.0);
        console.line(&summary(2), 1.0);
        console.line("VMTEST: /t/deps/a-0123abcd exited with 0", 1.0);
        console.line("VMTEST: running /t/deps/b-0123abcd", 2.0);
        console.line(&summary(0), 3.0);
        console.line("VMTEST: /t/deps/b-0123abcd exited with 0", 3.0);
        assert_eq!(
            unproven(&jobs, &console),
            [
                "b ran 0 tests, not the 1 planned",
                "c did not run to its end"
            ]
        );
    }

    #[test]
    fn the_committed_table_parses() {
        let table = parse(COMMITTED);
        assert!(!table.is_empty());
        assert!(table.keys().all(|k| k.contains("::")));
    }
}
