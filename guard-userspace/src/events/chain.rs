//! The tamper-evident chain: every line carries `chain` {alg, prev, hash},
//! where `hash` = SHA-256 (or HMAC-SHA256 with a key) over `prev` and the
//! line's bytes without its chain member. The member is written last (in
//! an ECS document, last in `agent_guard`, the document's last member, so
//! that the document has no field ECS does not define), so those bytes are
//! the line as written with its last `,"chain":{...}` taken out: no
//! re-serialization, no canonical form to agree on. docs/events.md
//! defines it; this file is its only implementation, shared by the emitter
//! and `events verify`. Lines of `agent-guard/v1` used a canonical form
//! (sorted keys) instead, which `verify` still checks.
use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use hmac::{KeyInit as _, Mac as _};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::statefile::{StateFile, StateFileError};

/// `prev` of the very first event of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The member that carries the link; left out of the hashed bytes.
pub const MEMBER: &str = "chain";
/// What precedes the link in a line: it is the last member.
const LINK_PREFIX: &[u8] = b",\"chain\":";

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("reading the chain key {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "the chain key {path} must be a regular file owned by root and readable by root only \
         (mode 0600 or 0400); it is owned by uid {uid} with mode {mode:o}"
    )]
    Exposed { path: PathBuf, uid: u32, mode: u32 },
    #[error("the chain key {path} is empty")]
    Empty { path: PathBuf },
}

/// Reads an HMAC key from a root-only file (anyone who can read it could
/// rebuild a chain that verifies).
pub fn read_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(read)?;
    let mode = meta.mode() & 0o7777;
    if !meta.is_file() || meta.uid() != 0 || mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_owned(),
            uid: meta.uid(),
            mode,
        });
    }
    let key = fs::read(path).map_err(read)?;
    let trimmed = key.trim_ascii_end().to_vec();
    if trimmed.is_empty() {
        return Err(KeyError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(trimmed)
}

/// Reads a key for `events verify`: an auditor's copy need not be root's.
pub fn read_key_for_verify(path: &Path) -> Result<Vec<u8>, KeyError> {
    let key = fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let trimmed = key.trim_ascii_end().to_vec();
    if trimmed.is_empty() {
        return Err(KeyError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(trimmed)
}

/// How links are computed.
#[derive(Clone)]
pub enum Alg {
    Sha256,
    HmacSha256(Vec<u8>),
}

impl Alg {
    pub fn name(&self) -> &'static str {
        match self {
            Alg::Sha256 => "sha256",
            Alg::HmacSha256(_) => "hmac-sha256",
        }
    }

    /// hex(H(prev || canonical)), `prev` as its 64 ASCII hex digits.
    pub fn digest(&self, prev: &str, canonical: &[u8]) -> String {
        let out: [u8; 32] = match self {
            Alg::Sha256 => {
                let mut h = Sha256::new();
                h.update(prev.as_bytes());
                h.update(canonical);
                h.finalize().into()
            }
            Alg::HmacSha256(key) => {
                // Any key length is valid for HMAC.
                let Ok(mut m) = hmac::Hmac::<Sha256>::new_from_slice(key) else {
                    unreachable!("HMAC accepts keys of any length")
                };
                m.update(prev.as_bytes());
                m.update(canonical);
                m.finalize().into_bytes().into()
            }
        };
        hex(&out)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The canonical bytes of an `agent-guard/v1` event: its JSON with the
/// top-level `chain` member left out, object keys sorted by their UTF-8
/// bytes at every level, no whitespace, strings and numbers as serde_json
/// writes them. Only `verify` needs it now, for logs of earlier versions.
pub fn canonical(event: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_object(&mut out, event, Some(MEMBER));
    out
}

/// The bytes a line's hash covers: the line without its chain member
/// (the last `,"chain":{...}`, a flat object of names and hex). None if
/// the line has no such member.
pub fn hashed_bytes(line: &[u8]) -> Option<Vec<u8>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let at = line
        .windows(LINK_PREFIX.len())
        .rposition(|w| w == LINK_PREFIX)?;
    let link = &line[at + LINK_PREFIX.len()..];
    if !link.starts_with(b"{") {
        return None;
    }
    let end = link.iter().position(|b| *b == b'}')?;
    let rest = &link[end + 1..];
    // Only closing braces may follow the link: it is the last member.
    if link[1..end].contains(&b'{') || rest.is_empty() || rest.iter().any(|b| *b != b'}') {
        return None;
    }
    let mut body = line[..at].to_vec();
    body.extend_from_slice(rest);
    Some(body)
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>, skip: Option<&str>) {
    let mut keys: Vec<&String> = map.keys().filter(|k| Some(k.as_str()) != skip).collect();
    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    out.push(b'{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_scalar(out, &Value::String((*k).clone()));
        out.push(b':');
        if let Some(v) = map.get(k.as_str()) {
            write_value(out, v);
        }
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Object(m) => write_object(out, m, None),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x);
            }
            out.push(b']');
        }
        scalar => write_scalar(out, scalar),
    }
}

fn write_scalar(out: &mut Vec<u8>, v: &Value) {
    // Writing a scalar Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// One chain (one per output format): the last hash handed out.
pub struct Chain {
    alg: Alg,
    prev: String,
}

impl Chain {
    pub fn new(alg: Alg, prev: Option<String>) -> Self {
        Self {
            alg,
            prev: prev.unwrap_or_else(|| GENESIS.to_owned()),
        }
    }

    pub fn alg(&self) -> Alg {
        self.alg.clone()
    }

    pub fn last(&self) -> &str {
        &self.prev
    }

    /// Links `line` (one JSON object, without `chain` and without a
    /// newline): hashes it and appends the member as the last member of
    /// the object `depth` levels in from the end (1: the line itself; 2:
    /// its last member, which must be a non-empty object).
    pub fn link(&mut self, line: &mut Vec<u8>, depth: usize) {
        let hash = self.alg.digest(&self.prev, line);
        let mut closing = 0;
        while closing < depth && line.last() == Some(&b'}') {
            line.pop();
            closing += 1;
        }
        let link = Link {
            alg: self.alg.name(),
            prev: std::mem::replace(&mut self.prev, hash.clone()),
            hash,
        };
        line.extend_from_slice(LINK_PREFIX);
        // A struct of strings serializes infallibly into memory.
        let _ = serde_json::to_writer(&mut *line, &link);
        line.extend(std::iter::repeat_n(b'}', closing));
    }
}

/// The `chain` member.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Link {
    /// `sha256` or `hmac-sha256`.
    pub alg: &'static str,
    /// The previous line's hash (`0` * 64 for the first line of a chain).
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub prev: String,
    /// hex(H(prev || the line's bytes without this member)).
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub hash: String,
}

/// What is persisted between runs: the last hash per format.
#[derive(Default, Serialize, Deserialize)]
pub struct Persisted {
    pub last: BTreeMap<String, Tip>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Tip {
    pub hash: String,
    pub seq: u64,
    pub alg: String,
}

impl Persisted {
    /// Missing file: a first run. An unreadable one is an error: starting a
    /// fresh chain silently would hide the break.
    pub fn load(path: &Path) -> Result<Self, StateFileError> {
        Ok(StateFile::new(path.to_owned()).load()?.unwrap_or_default())
    }

    /// A crash leaves the old or the new file (see StateFile).
    pub fn save(&self, path: &Path) -> Result<(), StateFileError> {
        StateFile::new(path.to_owned()).save(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn canonical_sorts_keys_and_drops_chain() {
        let ev = obj(json!({"seq": 1, "b": {"z": 1, "a": [true, null, "x\n"]}, "chain": {"x": 1}}));
        assert_eq!(
            String::from_utf8(canonical(&ev)).expect("utf8"),
            r#"{"b":{"a":[true,null,"x\n"],"z":1},"seq":1}"#
        );
    }

    #[test]
    fn links_follow_each_other_and_cover_the_bytes_written() {
        let mut chain = Chain::new(Alg::Sha256, None);
        let mut a = br#"{"seq":1}"#.to_vec();
        chain.link(&mut a, 1);
        let mut b = br#"{"seq":2,"s":",\"chain\":"}"#.to_vec();
        chain.link(&mut b, 1);
        let parse = |l: &[u8]| serde_json::from_slice::<Value>(l).expect("a line is JSON");
        let (a, b) = (parse(&a), parse(&b));
        assert_eq!(a["chain"]["prev"], GENESIS);
        assert_eq!(b["chain"]["prev"], a["chain"]["hash"]);
        // Known answer: sha256(GENESIS || {"seq":1}).
        let expect = {
            let mut h = Sha256::new();
            h.update(GENESIS.as_bytes());
            h.update(br#"{"seq":1}"#);
            hex(&h.finalize())
        };
        assert_eq!(a["chain"]["hash"], expect.as_str());
        let keyed = Alg::HmacSha256(b"k".to_vec()).digest(GENESIS, br#"{"seq":1}"#);
        assert_ne!(keyed, expect);
    }

    #[test]
    fn hashed_bytes_are_the_line_without_its_link() {
        let mut chain = Chain::new(Alg::Sha256, None);
        let body = br#"{"seq":2,"s":",\"chain\":{"}"#.to_vec();
        let mut line = body.clone();
        chain.link(&mut line, 1);
        line.push(b'\n');
        assert_eq!(hashed_bytes(&line), Some(body));
        // Nested: last in the document's last member.
        let body = br#"{"a":1,"agent_guard":{"seq":3}}"#.to_vec();
        let mut line = body.clone();
        chain.link(&mut line, 2);
        let parsed: Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(parsed["agent_guard"]["chain"]["alg"], "sha256");
        assert_eq!(hashed_bytes(&line), Some(body));
        assert_eq!(hashed_bytes(br#"{"seq":1}"#), None);
        assert_eq!(hashed_bytes(br#"{"chain":{"alg":"x"}}"#), None);
        assert_eq!(hashed_bytes(br#"{"a":1,"chain":{"alg":"x"},"b":2}"#), None);
    }
}
