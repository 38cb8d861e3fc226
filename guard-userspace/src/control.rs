//! The control socket: a unix stream socket carrying one JSON object per
//! line in each direction. Requests carry the protocol version `v`; the
//! caller is identified by SO_PEERCRED, never by anything it claims.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;
pub const DEFAULT_SOCKET: &str = "/run/agent-guard/control.sock";

/// Longest request line the daemon reads; longer is refused, not buffered.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How every successful reply begins (`v` and `ok` are serialized first).
/// `run`'s pre-exec code cannot parse JSON, so it checks this prefix.
pub const OK_PREFIX: &str = r#"{"v":1,"ok":true"#;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Start a run of `agent`: the daemon makes a session cgroup.
    SessionOpen {
        agent: String,
        #[serde(default)]
        on_behalf_of: Option<String>,
        argv: Vec<String>,
    },
    /// Sent by the command's own process before exec: "move me (SO_PEERCRED)
    /// into this session". The token proves it was given the session by the
    /// launcher that opened it.
    SessionJoin { session: String, token: String },
    /// Sent by a run's launcher to a restarted daemon: "take back my
    /// session". Only the launcher that opened it (SO_PEERCRED pid) with its
    /// token may; a supervised run sends its copy of the seccomp listener
    /// with this line, so the daemon can answer calls held across the restart.
    SessionResume { session: String, token: String },
    /// The run's command ended.
    SessionClose {
        #[serde(default)]
        exit_code: Option<i32>,
        #[serde(default)]
        signal: Option<i32>,
    },
    /// Daemon status.
    Status {},
    /// Reload the policy file (approvers only).
    Reload {
        #[serde(default)]
        force: bool,
    },
    /// The agent registry.
    Agents {},
    /// Freeze an agent, or thaw it back to its policy's mode (approvers only).
    SetMode {
        agent: String,
        freeze: bool,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Held calls waiting for a decision.
    Pending {},
    /// Kill a held call's run (`hold`) or every process of an agent
    /// (`agent`); exactly one of the two (approvers only).
    Kill {
        #[serde(default)]
        hold: Option<String>,
        #[serde(default)]
        agent: Option<String>,
    },
    /// Approve or deny a held call (approvers only).
    Decide {
        id: String,
        approve: bool,
        #[serde(default)]
        reason: Option<String>,
        /// "once" (default), "subtree", "destination" or "agent".
        #[serde(default)]
        scope: Option<String>,
        /// Lifetime of a scope beyond once.
        #[serde(default)]
        for_secs: Option<u64>,
        /// For "subtree": the path (default: the `ask` rule's prefix).
        #[serde(default)]
        path: Option<String>,
    },
    /// Live grants.
    Grants {},
    /// Stream every event from now on (one agent's, if named) on this
    /// connection, after an `ok` reply; the connection is then the stream's.
    Subscribe {
        #[serde(default)]
        agent: Option<String>,
    },
    /// End a grant before its time (approvers only).
    Revoke { id: u32 },
}

/// A request with its protocol version. On the wire the two share one
/// object: `{"v":1,"op":...}`. Parsed by hand because serde's `flatten`
/// silently disables `deny_unknown_fields`, and a typo'd field must be an
/// error, not ignored.
#[derive(Debug)]
pub struct Envelope {
    pub v: u32,
    pub request: Request,
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.request).map_err(serde::ser::Error::custom)?;
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("v".into(), self.v.into());
        }
        value.serialize(serializer)
    }
}

impl Envelope {
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let mut value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
        let map = value.as_object_mut().ok_or("not a JSON object")?;
        let v = map
            .remove("v")
            .ok_or("missing protocol version \"v\"")?
            .as_u64()
            .ok_or("\"v\" must be a number")?;
        let request = serde_json::from_value(value).map_err(|e| e.to_string())?;
        Ok(Self {
            v: u32::try_from(v).map_err(|_| "\"v\" out of range")?,
            request,
        })
    }
}

/// A reply: `ok` plus either `error` or verb-specific fields.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, flatten)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl Reply {
    pub fn ok(data: serde_json::Value) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            ok: true,
            error: None,
            data: match data {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
        }
    }

    pub fn err(message: impl Into<String>) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            ok: false,
            error: Some(message.into()),
            data: serde_json::Map::new(),
        }
    }
}

/// A synchronous client connection, for the CLI verbs.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path).with_context(|| {
            format!(
                "cannot reach the agent-guard daemon at {}; is it running \
                 (`agent-guard daemon`), and is --socket right?",
                path.display()
            )
        })?;
        let writer = stream.try_clone().context("cloning control socket")?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// The connection's reader, for a stream that follows a reply.
    pub fn into_stream(self) -> BufReader<UnixStream> {
        self.reader
    }

    /// The connection's descriptor, to watch it for the daemon going away.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.writer)
    }

    /// Sends one request and waits for its reply; a refusal becomes an
    /// error that downcasts to [`Refused`].
    pub fn call(&mut self, request: Request) -> Result<Reply> {
        self.call_with_fd(request, None)
    }

    /// Like [`Client::call`], passing `fd` along with the request line.
    pub fn call_with_fd(
        &mut self,
        request: Request,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<Reply> {
        let mut line = serde_json::to_vec(&Envelope {
            v: PROTOCOL_VERSION,
            request,
        })?;
        line.push(b'\n');
        match fd {
            None => self.writer.write_all(&line),
            Some(fd) => {
                use std::os::fd::AsRawFd as _;
                if crate::supervise::send_with_fd(self.raw_fd(), &line, fd.as_raw_fd()) {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        }
        .with_context(|| format!("writing to {}", self.path.display()))?;
        let mut answer = String::new();
        let n = self
            .reader
            .read_line(&mut answer)
            .with_context(|| format!("reading from {}", self.path.display()))?;
        if n == 0 {
            bail!("the daemon closed the control connection without answering");
        }
        let reply: Reply = serde_json::from_str(&answer)
            .with_context(|| format!("malformed reply from the daemon: {answer:?}"))?;
        if !reply.ok {
            return Err(Refused(reply.error.unwrap_or_else(|| "no reason given".into())).into());
        }
        Ok(reply)
    }
}

/// The daemon answered, and said no.
#[derive(Debug, thiserror::Error)]
#[error("the daemon refused: {0}")]
pub struct Refused(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_shape() {
        let env = Envelope::parse(br#"{"v":1,"op":"session_join","session":"a","token":"b"}"#)
            .expect("parses");
        assert!(matches!(env.request, Request::SessionJoin { .. }));
        let wire = serde_json::to_string(&env).expect("serializes");
        assert!(Envelope::parse(wire.as_bytes()).is_ok(), "{wire}");
        // run's pre-exec check relies on replies starting with this prefix.
        let ok = serde_json::to_string(&Reply::ok(serde_json::json!({}))).expect("serializes");
        assert!(ok.starts_with(OK_PREFIX), "{ok}");
        assert!(Envelope::parse(br#"{"v":1,"op":"rm_rf"}"#).is_err());
        assert!(Envelope::parse(br#"{"v":1,"op":"status","x":1}"#).is_err());
        assert!(Envelope::parse(br#"{"op":"status"}"#).is_err());
        assert!(Envelope::parse(b"garbage").is_err());
        assert!(Envelope::parse(br#"{"v":1,"op":"status"}"#).is_ok());
    }
}
