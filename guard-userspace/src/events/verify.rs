//! `events verify`: recomputes the chain of one or more log files (oldest
//! first, rotated files included) and finds the first broken link.
use std::{
    fmt,
    fs::File,
    io::{self, BufRead as _, BufReader},
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};
use thiserror::Error;

use super::chain::{self, Alg, GENESIS};

/// Where a line is: file and 1-based line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub file: PathBuf,
    pub line: u64,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Error)]
pub enum Broken {
    #[error("{0}: reading: {1}")]
    Io(PathBuf, io::Error),
    #[error("{at}: not a JSON object: {why}")]
    NotJson { at: Place, why: String },
    #[error("{at}: no valid `chain` member {{alg, prev, hash}}")]
    NoChain { at: Place },
    #[error(
        "{at}: keyed with hmac-sha256; pass the key with --key FILE (without it nothing can \
         be checked)"
    )]
    NeedsKey { at: Place },
    #[error(
        "{at}: the line does not match its hash: it was edited after it was written (or \
         the key is wrong)"
    )]
    Edited { at: Place },
    #[error(
        "{at}: the line does not follow the one before it (prev {found}, expected {expected}): \
         a line was deleted, inserted or moved just before it"
    )]
    Link {
        at: Place,
        expected: String,
        found: String,
    },
}

impl Broken {
    pub fn place(&self) -> Option<&Place> {
        match self {
            Broken::Io(..) => None,
            Broken::NotJson { at, .. }
            | Broken::NoChain { at }
            | Broken::NeedsKey { at }
            | Broken::Edited { at }
            | Broken::Link { at, .. } => Some(at),
        }
    }
}

/// A verified log.
#[derive(Debug)]
pub struct Report {
    pub lines: u64,
    /// `prev` of the first line: GENESIS, or the hash of a line the files
    /// given do not contain (an earlier, possibly rotated-away, file).
    pub first_prev: String,
    pub last_hash: String,
    /// Lines where a daemon run began (`daemon.start`).
    pub runs: u64,
}

impl Report {
    pub fn starts_at_genesis(&self) -> bool {
        self.first_prev == GENESIS
    }
}

/// Checks every line of `files`, in order, as one chain.
pub fn verify(files: &[PathBuf], key: Option<&[u8]>) -> Result<Report, Broken> {
    verify_each(files, key, |_, _| {})
}

/// [`verify`], handing each line to `seen` once its link checked out (and
/// before the next line is read): readers such as `events query` see only
/// lines the chain vouches for, and stop at the first that breaks it.
pub fn verify_each(
    files: &[PathBuf],
    key: Option<&[u8]>,
    mut seen: impl FnMut(&Place, &str),
) -> Result<Report, Broken> {
    let mut prev: Option<String> = None;
    let mut report = Report {
        lines: 0,
        first_prev: String::new(),
        last_hash: String::new(),
        runs: 0,
    };
    for file in files {
        let f = File::open(file).map_err(|e| Broken::Io(file.clone(), e))?;
        for (i, text) in BufReader::new(f).lines().enumerate() {
            let text = text.map_err(|e| Broken::Io(file.clone(), e))?;
            let at = Place {
                file: file.clone(),
                line: i as u64 + 1,
            };
            let hash = check_line(&text, &at, prev.as_deref(), key)?;
            if prev.is_none() {
                report.first_prev = first_prev(&text);
            }
            if text.contains("\"kind\":\"daemon.start\"") {
                report.runs += 1;
            }
            seen(&at, &text);
            report.lines += 1;
            report.last_hash.clone_from(&hash);
            prev = Some(hash);
        }
    }
    Ok(report)
}

fn first_prev(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            let link = if v[chain::MEMBER].is_object() {
                &v[chain::MEMBER]
            } else {
                &v["agent_guard"][chain::MEMBER]
            };
            link["prev"].as_str().map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Checks one line against the previous hash; returns its own hash.
fn check_line(
    text: &str,
    at: &Place,
    prev: Option<&str>,
    key: Option<&[u8]>,
) -> Result<String, Broken> {
    let event: Map<String, Value> = serde_json::from_str(text).map_err(|e| Broken::NotJson {
        at: at.clone(),
        why: e.to_string(),
    })?;
    // Lines of agent-guard/v1 hashed a canonical form; later ones hash the
    // bytes as written.
    let schema = event
        .get("schema")
        .or_else(|| event.get("agent_guard").and_then(|a| a.get("schema")))
        .and_then(Value::as_str);
    let hashed = if schema == Some(super::SCHEMA_V1) {
        chain::canonical(&event)
    } else {
        chain::hashed_bytes(text.as_bytes()).ok_or_else(|| Broken::NoChain { at: at.clone() })?
    };
    // Native lines (and v1 ECS lines) carry the link at the top; ECS lines
    // since v2 last in `agent_guard`.
    let link = event
        .get(chain::MEMBER)
        .or_else(|| event.get("agent_guard").and_then(|a| a.get(chain::MEMBER)));
    let field = |name: &str| link.and_then(|l| l.get(name)).and_then(Value::as_str);
    let (Some(alg), Some(found_prev), Some(hash)) = (field("alg"), field("prev"), field("hash"))
    else {
        return Err(Broken::NoChain { at: at.clone() });
    };
    let alg = match (alg, key) {
        ("sha256", _) => Alg::Sha256,
        ("hmac-sha256", Some(k)) => Alg::HmacSha256(k.to_vec()),
        ("hmac-sha256", None) => return Err(Broken::NeedsKey { at: at.clone() }),
        _ => return Err(Broken::NoChain { at: at.clone() }),
    };
    // A keyed log checked with a key must be keyed throughout: a line an
    // attacker rebuilt with plain SHA-256 would otherwise pass.
    if key.is_some() && matches!(alg, Alg::Sha256) {
        return Err(Broken::Edited { at: at.clone() });
    }
    if let Some(expected) = prev {
        if found_prev != expected {
            return Err(Broken::Link {
                at: at.clone(),
                expected: expected.to_owned(),
                found: found_prev.to_owned(),
            });
        }
    }
    if alg.digest(found_prev, &hashed) != hash {
        return Err(Broken::Edited { at: at.clone() });
    }
    Ok(hash.to_owned())
}

/// The files of a rotated log, oldest first: FILE.N .. FILE.1, FILE.
pub fn rotated_set(base: &Path) -> Vec<PathBuf> {
    let mut older = Vec::new();
    for n in 1.. {
        let p = PathBuf::from(format!("{}.{n}", base.display()));
        if !p.exists() {
            break;
        }
        older.push(p);
    }
    older.reverse();
    older.push(base.to_owned());
    older
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::events::chain::Chain;

    fn write_log(dir: &Path, n: u64, alg: Alg) -> PathBuf {
        let mut chain = Chain::new(alg, None);
        let path = dir.join("log.jsonl");
        let mut f = File::create(&path).expect("create");
        for seq in 1..=n {
            let mut line = format!(r#"{{"seq":{seq},"kind":"file.unlink"}}"#).into_bytes();
            chain.link(&mut line, 1);
            line.push(b'\n');
            f.write_all(&line).expect("write");
        }
        path
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ag-verify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    fn edit(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
        let text = std::fs::read_to_string(path).expect("read");
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        f(&mut lines);
        std::fs::write(path, lines.join("\n") + "\n").expect("write");
    }

    fn line_of(r: Result<Report, Broken>) -> u64 {
        r.expect_err("must not verify").place().expect("place").line
    }

    #[test]
    fn intact_edited_deleted_reordered() {
        let d = dir("unit");
        let log = write_log(&d, 6, Alg::Sha256);
        let ok = verify(std::slice::from_ref(&log), None).expect("intact log verifies");
        assert_eq!((ok.lines, ok.starts_at_genesis()), (6, true));

        edit(&log, |l| l[2] = l[2].replace("file.unlink", "file.rmdir"));
        assert_eq!(line_of(verify(std::slice::from_ref(&log), None)), 3);

        let log = write_log(&d, 6, Alg::Sha256);
        edit(&log, |l| {
            l.remove(3);
        });
        assert_eq!(line_of(verify(std::slice::from_ref(&log), None)), 4);

        let log = write_log(&d, 6, Alg::Sha256);
        edit(&log, |l| l.swap(1, 2));
        assert_eq!(line_of(verify(std::slice::from_ref(&log), None)), 2);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn lines_of_v1_verify_by_their_canonical_form() {
        let d = dir("v1");
        let mut prev = GENESIS.to_owned();
        let mut text = String::new();
        for seq in 1..=3u64 {
            let mut ev = Map::new();
            ev.insert("schema".into(), super::super::SCHEMA_V1.into());
            ev.insert("seq".into(), seq.into());
            let hash = Alg::Sha256.digest(&prev, &chain::canonical(&ev));
            ev.insert(
                "chain".into(),
                serde_json::json!({"alg": "sha256", "prev": prev, "hash": hash}),
            );
            prev = hash;
            text.push_str(&serde_json::to_string(&ev).expect("json"));
            text.push('\n');
        }
        let log = d.join("v1.jsonl");
        std::fs::write(&log, text).expect("write");
        let ok = verify(std::slice::from_ref(&log), None).expect("a v1 log verifies");
        assert_eq!(ok.lines, 3);
        edit(&log, |l| l[1] = l[1].replace("\"seq\":2", "\"seq\":9"));
        assert_eq!(line_of(verify(std::slice::from_ref(&log), None)), 2);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn keyed_chain_needs_the_key() {
        let d = dir("keyed");
        let log = write_log(&d, 3, Alg::HmacSha256(b"secret".to_vec()));
        assert!(verify(std::slice::from_ref(&log), Some(b"secret")).is_ok());
        assert!(matches!(
            verify(std::slice::from_ref(&log), None),
            Err(Broken::NeedsKey { .. })
        ));
        assert!(matches!(
            verify(std::slice::from_ref(&log), Some(b"guess")),
            Err(Broken::Edited { .. })
        ));
        // Rebuilt without the key: does not verify when the key is given.
        let plain = write_log(&d, 3, Alg::Sha256);
        assert!(verify(std::slice::from_ref(&plain), Some(b"secret")).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
