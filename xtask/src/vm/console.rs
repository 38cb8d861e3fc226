//! What the host learns from a guest's console, line by line: the verdict
//! (`VMTEST: exit=N`), how long each test binary and each test took (by the
//! host's clock, as the guest's TCG clock drifts), which tests failed, which
//! was running when the guest stopped, and which did not apply.
use std::path::Path;

/// One test binary that ran to its end in the guest.
pub struct BinaryRun {
    /// The binary's name without cargo's hash: `holds`.
    pub name: String,
    pub secs: f64,
    pub status: i32,
    /// Tests libtest counted in its `test result:` line (passed, failed
    /// and ignored), if that line came.
    pub ran: Option<usize>,
}

/// One test that libtest reported a result for.
pub struct TestRun {
    pub binary: String,
    pub test: String,
    pub secs: f64,
}

#[derive(Default)]
pub struct Console {
    /// N from the last `VMTEST: exit=N`.
    pub exit: Option<i32>,
    pub binaries: Vec<BinaryRun>,
    pub tests: Vec<TestRun>,
    /// `binary::test` for every test libtest reported FAILED.
    pub failed: Vec<String>,
    /// What the guest's skip log said did not apply to its kernel.
    pub skipped: Vec<String>,
    /// `binary: processes` that a test binary left running (the guest
    /// killed them before the next binary).
    pub leftovers: Vec<String>,
    /// The binary that started last and has not ended, and when it started.
    running: Option<(String, f64)>,
    /// The running binary's `test result:` count.
    counted: Option<usize>,
    /// A test libtest named whose result has not come yet: its result line
    /// was broken by other output (the daemon's stderr, a kernel message),
    /// or the guest stopped inside it.
    pending: Option<String>,
    /// When the last test (or the binary) started, in seconds since boot.
    mark: f64,
}

impl Console {
    /// Takes one console line (without its newline) seen `at` seconds after boot.
    pub fn line(&mut self, text: &str, at: f64) {
        if let Some(rest) = text.split("VMTEST: exit=").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            self.exit = digits.parse().ok();
        } else if let Some(path) = text.strip_prefix("VMTEST: running ") {
            self.running = Some((binary_name(path), at));
            self.counted = None;
            self.pending = None;
            self.mark = at;
        } else if let Some(rest) = text.strip_prefix("VMTEST: ") {
            if let Some((_, status)) = rest.rsplit_once(" exited with ") {
                if let Some((name, since)) = self.running.take() {
                    self.binaries.push(BinaryRun {
                        name,
                        secs: at - since,
                        status: status.trim().parse().unwrap_or(-1),
                        ran: self.counted.take(),
                    });
                }
            } else if let Some(what) = rest.strip_prefix("leftover after ") {
                let (path, procs) = what.split_once(':').unwrap_or((what, ""));
                self.leftovers
                    .push(format!("{}:{procs}", binary_name(path)));
            } else if let Some(what) = rest.strip_prefix("skipped ") {
                if what != "none" {
                    self.skipped.push(what.to_owned());
                }
            }
        } else if let Some(rest) = text.split("test result: ").nth(1) {
            // Anywhere in the line: a kernel message may come before it.
            self.counted = tests_counted(rest);
        } else if let Some(rest) = text.strip_prefix("test ") {
            // libtest: `test NAME ... ok` (or FAILED, ignored).
            if let Some((name, result)) = rest.split_once(" ... ") {
                self.pending = Some(name.to_owned());
                self.result(result, at);
            }
        } else {
            self.result(text, at);
        }
    }

    /// Ends the pending test if `text` starts with its result.
    fn result(&mut self, text: &str, at: f64) {
        let failed = text.starts_with("FAILED");
        if !(failed || text.starts_with("ok") || text.starts_with("ignored")) {
            return;
        }
        let Some(test) = self.pending.take() else {
            return;
        };
        let binary = self
            .running
            .as_ref()
            .map(|(name, _)| name.clone())
            .unwrap_or_default();
        if failed {
            self.failed.push(format!("{binary}::{test}"));
        }
        self.tests.push(TestRun {
            binary,
            test,
            secs: at - self.mark,
        });
        self.mark = at;
    }

    /// What was running when the console ended: `binary::test`, the binary
    /// alone (between tests), or None if no binary was running.
    pub fn running(&self) -> Option<String> {
        let (binary, _) = self.running.as_ref()?;
        Some(match &self.pending {
            Some(test) => format!("{binary}::{test}"),
            None => binary.clone(),
        })
    }
}

/// passed + failed + ignored from the rest of libtest's summary line,
/// `ok. 2 passed; 1 failed; 0 ignored; 0 measured; 3 filtered out; ...`.
fn tests_counted(summary: &str) -> Option<usize> {
    let mut found = [None; 3];
    for part in summary.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(word), Some(count)) = (words.next(), words.next()) else {
            continue;
        };
        let slot = match word {
            "passed" => 0,
            "failed" => 1,
            "ignored" => 2,
            _ => continue,
        };
        found[slot] = Some(count.parse::<usize>().ok()?);
    }
    Some(found[0]? + found[1]? + found[2]?)
}

/// `/x/target/debug/deps/holds-49148434d70dfee6` -> `holds`.
pub fn binary_name(path: &str) -> String {
    let file = Path::new(path.trim())
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or(path);
    match file.rsplit_once('-') {
        Some((stem, hash)) if !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            stem.to_owned()
        }
        _ => file.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_binaries_and_tests_and_names_failures() {
        let mut c = Console::default();
        let lines = [
            (
                1.0,
                "VMTEST: running /t/target/debug/deps/holds-49148434d70dfee6",
            ),
            (1.1, "running 3 tests"),
            (5.0, "test a ... ok"),
            // A kernel message breaks the result line.
            (
                6.0,
                "test b ... [   11.17] clocksource: Long readout interval",
            ),
            (9.0, "ok"),
            (12.0, "test c ... FAILED"),
            (
                13.0,
                "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 4 filtered out; finished in 12.00s",
            ),
            (
                13.5,
                "VMTEST: /t/target/debug/deps/holds-49148434d70dfee6 exited with 101",
            ),
            (
                14.0,
                "VMTEST: running /t/target/debug/deps/connect-1bb88b43664a184b",
            ),
            (20.0, "test d ... "),
        ];
        for (at, text) in lines {
            c.line(text, at);
        }
        assert_eq!(c.binaries.len(), 1);
        assert_eq!(c.binaries[0].name, "holds");
        assert_eq!(c.binaries[0].status, 101);
        assert_eq!(c.binaries[0].ran, Some(3));
        assert!((c.binaries[0].secs - 12.5).abs() < 1e-9);
        let tests: Vec<_> = c.tests.iter().map(|t| (t.test.as_str(), t.secs)).collect();
        assert_eq!(tests, [("a", 4.0), ("b", 4.0), ("c", 3.0)]);
        assert_eq!(c.failed, ["holds::c"]);
        assert_eq!(c.running().as_deref(), Some("connect::d"));
        assert_eq!(c.exit, None);
        c.line(
            "VMTEST: leftover after /t/target/debug/deps/connect-1bb88b43664a184b: python3(212) agent-guard(200)",
            20.5,
        );
        assert_eq!(c.leftovers, ["connect: python3(212) agent-guard(200)"]);
        c.line("VMTEST: skipped none", 21.0);
        c.line("VMTEST: skipped x: no y", 21.0);
        c.line("VMTEST: exit=101", 22.0);
        assert_eq!(c.skipped, ["x: no y"]);
        assert_eq!(c.exit, Some(101));
    }

    #[test]
    fn counts_come_from_the_summary_even_after_a_kernel_message() {
        let sum = "ok. 4 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1s";
        assert_eq!(tests_counted(sum), Some(5));
        assert_eq!(tests_counted("ok. 4 passed; 0 failed"), None);
        let mut c = Console::default();
        c.line("VMTEST: running /d/holds-0a", 0.0);
        c.line(&format!("[   12.5] clocksource: x test result: {sum}"), 1.0);
        c.line("VMTEST: /d/holds-0a exited with 0", 2.0);
        c.line("VMTEST: running /d/burst-0b", 3.0);
        c.line("VMTEST: /d/burst-0b exited with 0", 4.0);
        assert_eq!(c.binaries[0].ran, Some(5));
        assert_eq!(c.binaries[1].ran, None);
    }

    #[test]
    fn names_drop_only_a_hash() {
        assert_eq!(binary_name("/a/deps/rogue_guard-0123abcd"), "rogue_guard");
        assert_eq!(binary_name("/a/deps/plain"), "plain");
        assert_eq!(binary_name("/a/deps/web-page"), "web-page");
    }
}
