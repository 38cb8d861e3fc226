//! Reading a native event log back (`events query`, and the governance
//! reports built on it): the lines of one agent, some kinds, a time window,
//! from files the chain vouches for. Each log is verified as it is read by
//! [`verify::verify_each`]; a line is handed out only once its link checked,
//! and reading stops at the first broken one.
use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use thiserror::Error;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::verify::{self, Broken, Place, Report};

#[derive(Debug, Error)]
pub enum QueryError {
    #[error(transparent)]
    Broken(#[from] Broken),
    #[error(
        "{at}: not a native agent-guard event ({why}); query reads the native log \
         (a file sink without `format = \"ecs\"`)"
    )]
    NotNative { at: Place, why: String },
}

impl QueryError {
    pub fn place(&self) -> Option<&Place> {
        match self {
            QueryError::Broken(b) => b.place(),
            QueryError::NotNative { at, .. } => Some(at),
        }
    }
}

/// The members every native line has that a reader selects on; the rest
/// of the line is left to whoever reads it.
#[derive(Debug, Deserialize)]
pub struct Head {
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Absent for daemon-wide events; `{cgroup_id}` only for a call of an
    /// agent that has since left the policy.
    #[serde(default)]
    pub agent: Option<AgentName>,
}

#[derive(Debug, Deserialize)]
pub struct AgentName {
    #[serde(default)]
    pub name: Option<String>,
}

impl Head {
    pub fn agent(&self) -> Option<&str> {
        self.agent.as_ref().and_then(|a| a.name.as_deref())
    }
}

/// Which lines to keep. Empty fields keep everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub agent: Option<String>,
    /// Exact kinds, or families written `file.*` (or `file.`).
    pub kinds: Vec<String>,
    /// Inclusive.
    pub since: Option<SystemTime>,
    /// Exclusive.
    pub until: Option<SystemTime>,
}

impl Filter {
    pub fn keeps(&self, head: &Head) -> bool {
        if let Some(agent) = &self.agent {
            if head.agent() != Some(agent.as_str()) {
                return false;
            }
        }
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| kind_matches(k, &head.kind)) {
            return false;
        }
        let at = SystemTime::from(head.time);
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u)
    }
}

fn kind_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(family) => kind.starts_with(family),
        None if pattern.ends_with('.') => kind.starts_with(pattern),
        None => kind == pattern,
    }
}

/// The files of each log named on the command line, oldest first: a log's
/// current file brings its rotated files (FILE.N .. FILE.1) with it, unless
/// `rotated` is false or the name given is itself a rotated one (FILE.N).
pub fn logs(named: &[PathBuf], rotated: bool) -> Vec<Vec<PathBuf>> {
    named
        .iter()
        .map(|path| {
            let is_rotated = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
            if rotated && !is_rotated {
                verify::rotated_set(path)
            } else {
                vec![path.clone()]
            }
        })
        .collect()
}

/// Reads every log (each its own chain), handing each verified line the
/// filter keeps to `each`. Stops at the first broken link or line that is
/// not a native event; what was handed out before it stands.
pub fn read(
    logs: &[Vec<PathBuf>],
    key: Option<&[u8]>,
    filter: &Filter,
    mut each: impl FnMut(&Place, &str, &Head),
) -> Result<Vec<Report>, QueryError> {
    let mut reports = Vec::with_capacity(logs.len());
    for files in logs {
        let mut bad: Option<QueryError> = None;
        let report = verify::verify_each(files, key, |at, text| {
            if bad.is_some() {
                return;
            }
            match serde_json::from_str::<Head>(text) {
                Ok(head) if filter.keeps(&head) => each(at, text, &head),
                Ok(_) => {}
                Err(e) => {
                    bad = Some(QueryError::NotNative {
                        at: at.clone(),
                        why: e.to_string(),
                    });
                }
            }
        })?;
        if let Some(e) = bad {
            return Err(e);
        }
        reports.push(report);
    }
    Ok(reports)
}

#[derive(Debug, Error)]
#[error(
    "{0:?} is neither an RFC 3339 time (2026-12-07T09:00:00Z, or with an offset) nor a \
     duration before now (30m, 7d)"
)]
pub struct BadWhen(String);

/// `--since`/`--until`: an RFC 3339 time, or a duration meaning that long
/// before `now`.
pub fn parse_when(text: &str, now: SystemTime) -> Result<SystemTime, BadWhen> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.into());
    }
    humantime::parse_duration(text)
        .ok()
        .and_then(|d: Duration| now.checked_sub(d))
        .ok_or_else(|| BadWhen(text.to_owned()))
}

/// Chained native-looking logs for the tests of the log's readers.
#[cfg(test)]
pub(crate) mod testlog {
    use std::{io::Write as _, path::Path};

    use crate::events::chain::{Alg, Chain};

    /// Writes `events` (JSON objects without `chain`) as one chained log.
    pub fn write(path: &Path, events: &[serde_json::Value]) {
        let mut chain = Chain::new(Alg::Sha256, None);
        let mut f = std::fs::File::create(path).expect("create");
        for ev in events {
            let mut line = serde_json::to_vec(ev).expect("json");
            chain.link(&mut line, 1);
            line.push(b'\n');
            f.write_all(&line).expect("write");
        }
    }

    /// A fresh scratch directory for one test.
    pub fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ag-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{testlog::scratch, *};

    /// A chained log of native-looking lines: (agent, kind, time) each.
    fn write_log(path: &Path, rows: &[(Option<&str>, &str, &str)]) {
        let events: Vec<serde_json::Value> = rows
            .iter()
            .enumerate()
            .map(|(seq, (agent, kind, time))| {
                let mut ev = serde_json::json!({"seq": seq + 1, "time": time, "kind": kind});
                if let Some(a) = agent {
                    ev["agent"] = serde_json::json!({ "name": a });
                }
                ev
            })
            .collect();
        testlog::write(path, &events);
    }

    fn kept(logs: &[Vec<PathBuf>], filter: &Filter) -> Result<Vec<u64>, QueryError> {
        let mut lines = Vec::new();
        read(logs, None, filter, |at, _, _| lines.push(at.line))?;
        Ok(lines)
    }

    const ROWS: &[(Option<&str>, &str, &str)] = &[
        (None, "daemon.start", "2026-12-01T10:00:00Z"),
        (Some("a"), "file.unlink", "2026-12-01T10:00:01.5Z"),
        (Some("b"), "net.connect", "2026-12-01T10:00:02Z"),
        (Some("a"), "net.connect", "2026-12-01T11:00:00Z"),
        (Some("a"), "hold.decision", "2026-12-02T10:00:00+02:00"),
    ];

    #[test]
    fn filters_select_agent_kind_and_window() {
        let d = scratch("filter");
        let log = d.join("events.jsonl");
        write_log(&log, ROWS);
        let logs = logs(std::slice::from_ref(&log), true);
        let agent = |a: &str| Filter {
            agent: Some(a.into()),
            ..Filter::default()
        };
        assert_eq!(
            kept(&logs, &Filter::default()).expect("all"),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(kept(&logs, &agent("a")).expect("a"), [2, 4, 5]);
        let f = Filter {
            kinds: vec!["net.*".into(), "hold.decision".into()],
            ..agent("a")
        };
        assert_eq!(kept(&logs, &f).expect("kinds"), [4, 5]);
        let now = SystemTime::now();
        let f = Filter {
            since: Some(parse_when("2026-12-01T10:00:01.5Z", now).expect("since")),
            until: Some(parse_when("2026-12-01T11:00:00Z", now).expect("until")),
            ..Filter::default()
        };
        assert_eq!(kept(&logs, &f).expect("window"), [2, 3]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_edited_line_stops_the_read_at_its_place() {
        let d = scratch("edited");
        let log = d.join("events.jsonl");
        write_log(&log, ROWS);
        let text = std::fs::read_to_string(&log).expect("read");
        std::fs::write(&log, text.replacen("\"name\":\"b\"", "\"name\":\"a\"", 1)).expect("edit");
        let logs = logs(std::slice::from_ref(&log), true);
        let mut seen = Vec::new();
        let err = read(&logs, None, &Filter::default(), |at, _, _| {
            seen.push(at.line)
        })
        .expect_err("an edited log must not read clean");
        assert_eq!(err.place().map(|p| p.line), Some(3), "{err}");
        assert_eq!(seen, [1, 2], "nothing at or after the break is handed out");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn rotated_files_come_first_and_bad_times_are_named() {
        let d = scratch("rotated");
        let log = d.join("events.jsonl");
        std::fs::write(d.join("events.jsonl.1"), "").expect("rotated");
        std::fs::write(&log, "").expect("current");
        assert_eq!(
            logs(std::slice::from_ref(&log), true),
            [vec![d.join("events.jsonl.1"), log.clone()]]
        );
        assert_eq!(logs(std::slice::from_ref(&log), false), [vec![log.clone()]]);
        let one = d.join("events.jsonl.1");
        assert_eq!(logs(std::slice::from_ref(&one), true), [vec![one.clone()]]);
        let now = SystemTime::now();
        assert_eq!(
            parse_when("7d", now).expect("7d"),
            now - Duration::from_secs(7 * 86400)
        );
        let err = parse_when("yesterday", now).expect_err("bad");
        assert!(err.to_string().contains("RFC 3339"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
