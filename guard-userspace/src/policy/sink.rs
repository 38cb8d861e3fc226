//! `[[sink]]` tables: where the event stream goes. Parsed here with the rest
//! of the policy so errors point at FILE:LINE:COL; run by `events::sinks`.
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{PolicyError, error::Doc};

/// Lines a writer sink may lag behind before it starts losing (reported)
/// events. A unix sink's readers each get 4096 unless `queue` says otherwise.
pub const DEFAULT_QUEUE: usize = 65_536;
/// Rotate a file sink at this size unless `max_bytes` says otherwise.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
pub const DEFAULT_KEEP: u32 = 5;

/// The shape of each line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// Native (`agent-guard/v2`) with its `ocsf` object.
    V1,
    /// Elastic Common Schema.
    Ecs,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::V1 => "v1",
            Format::Ecs => "ecs",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "v1" => Some(Format::V1),
            "ecs" => Some(Format::Ecs),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkKind {
    Stdout,
    /// Appended to `path`; at `max_bytes` it becomes `path.1` (older ones
    /// shift up) and at most `keep` rotated files are kept.
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
    /// A unix stream socket served to any number of readers.
    Unix {
        path: PathBuf,
    },
    /// One JSON line per event to a TCP collector.
    Tcp {
        address: String,
    },
    /// RFC 5424 messages, octet-counted (RFC 6587), over TCP.
    Syslog {
        address: String,
        app_name: String,
    },
    /// OTLP/HTTP protobuf log records, POSTed to `url` (the endpoint with
    /// `/v1/logs` appended, as OpenTelemetry exporters do).
    Otlp {
        url: String,
    },
}

impl SinkKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::File { .. } => "file",
            SinkKind::Unix { .. } => "unix",
            SinkKind::Tcp { .. } => "tcp",
            SinkKind::Syslog { .. } => "syslog",
            SinkKind::Otlp { .. } => "otlp",
        }
    }
}

/// One `[[sink]]` table, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    /// Unique; names the sink in `loss` events and `status`.
    pub name: String,
    pub kind: SinkKind,
    /// None: the daemon's `--format` (default v1).
    pub format: Option<Format>,
    /// None: the default of the sink's kind.
    pub queue: Option<usize>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [[sink]] table with type = \"stdout\", \"file\", \"unix\", \"tcp\", \"syslog\" or \"otlp\""
)]
pub(super) struct RawSink {
    name: Option<Spanned<String>>,
    r#type: Spanned<String>,
    format: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    max_bytes: Option<Spanned<u64>>,
    keep: Option<Spanned<u32>>,
    queue: Option<Spanned<usize>>,
    app_name: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
}

pub(super) fn sinks(
    doc: &Doc<'_>,
    raw: Vec<Spanned<RawSink>>,
) -> Result<Vec<SinkConfig>, PolicyError> {
    let mut out: Vec<SinkConfig> = Vec::with_capacity(raw.len());
    for raw in raw {
        let at = raw.span().start;
        let sink = sink(doc, raw.into_inner())?;
        if out.iter().any(|s| s.name == sink.name) {
            return Err(doc.error_at(
                at,
                format!(
                    "two sinks are named {:?}; give each a distinct `name`",
                    sink.name
                ),
            ));
        }
        out.push(sink);
    }
    Ok(out)
}

fn sink(doc: &Doc<'_>, raw: RawSink) -> Result<SinkConfig, PolicyError> {
    let ty = raw.r#type.get_ref().as_str();
    let type_at = raw.r#type.span().start;
    // Each type takes only its own keys: a key another type uses is a
    // mistake worth reporting, not ignoring.
    let allowed: &[&str] = match ty {
        "stdout" => &[],
        "file" => &["path", "max_bytes", "keep"],
        "unix" => &["path"],
        "tcp" => &["address"],
        "syslog" => &["address", "app_name"],
        "otlp" => &["endpoint"],
        other => {
            return Err(doc.error_at(
                type_at,
                format!(
                    "unknown sink type {other:?}; expected \"stdout\", \"file\", \"unix\", \
                     \"tcp\", \"syslog\" or \"otlp\""
                ),
            ));
        }
    };
    let given = [
        ("path", raw.path.as_ref().map(|s| s.span().start)),
        ("address", raw.address.as_ref().map(|s| s.span().start)),
        ("max_bytes", raw.max_bytes.as_ref().map(|s| s.span().start)),
        ("keep", raw.keep.as_ref().map(|s| s.span().start)),
        ("app_name", raw.app_name.as_ref().map(|s| s.span().start)),
        ("endpoint", raw.endpoint.as_ref().map(|s| s.span().start)),
    ];
    for (key, at) in given {
        if let (Some(at), false) = (at, allowed.contains(&key)) {
            return Err(doc.error_at(at, format!("a {ty} sink takes no `{key}`")));
        }
    }
    let abs_path = |what: &str| -> Result<PathBuf, PolicyError> {
        match &raw.path {
            None => Err(doc.error_at(type_at, format!("a {ty} sink needs `path` ({what})"))),
            Some(p) if p.get_ref().starts_with('/') => Ok(PathBuf::from(p.get_ref())),
            Some(p) => Err(doc.error_at(
                p.span().start,
                format!("sink path must be absolute, got {:?}", p.get_ref()),
            )),
        }
    };
    let address = || -> Result<String, PolicyError> {
        let a = raw.address.as_ref().ok_or_else(|| {
            doc.error_at(type_at, format!("a {ty} sink needs `address` (HOST:PORT)"))
        })?;
        match a.get_ref().rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(a.get_ref().clone())
            }
            _ => Err(doc.error_at(
                a.span().start,
                format!(
                    "address must be HOST:PORT (e.g. \"127.0.0.1:6514\" or \"[::1]:6514\"), got {:?}",
                    a.get_ref()
                ),
            )),
        }
    };
    let kind = match ty {
        "stdout" => SinkKind::Stdout,
        "file" => {
            let max_bytes = match &raw.max_bytes {
                None => DEFAULT_MAX_BYTES,
                Some(m) if *m.get_ref() < 4096 => {
                    return Err(doc.error_at(
                        m.span().start,
                        "max_bytes must be at least 4096 (one event line can be a few KiB)",
                    ));
                }
                Some(m) => *m.get_ref(),
            };
            let keep = match &raw.keep {
                None => DEFAULT_KEEP,
                Some(k) if *k.get_ref() == 0 || *k.get_ref() > 1000 => {
                    return Err(doc.error_at(
                        k.span().start,
                        "keep must be between 1 and 1000 rotated files",
                    ));
                }
                Some(k) => *k.get_ref(),
            };
            SinkKind::File {
                path: abs_path("the log file")?,
                max_bytes,
                keep,
            }
        }
        "unix" => SinkKind::Unix {
            path: abs_path("the socket to serve")?,
        },
        "tcp" => SinkKind::Tcp {
            address: address()?,
        },
        "otlp" => SinkKind::Otlp {
            url: otlp_logs_url(doc, raw.endpoint.as_ref(), type_at)?,
        },
        _ => SinkKind::Syslog {
            address: address()?,
            app_name: match &raw.app_name {
                None => "agent-guard".into(),
                Some(a) if valid_app_name(a.get_ref()) => a.get_ref().clone(),
                Some(a) => {
                    return Err(doc.error_at(
                        a.span().start,
                        "app_name must be 1-48 printable ASCII characters without spaces (RFC 5424)",
                    ));
                }
            },
        },
    };
    let format = match (&raw.format, ty) {
        // Its attributes are mapped from the native fields, and OpenTelemetry
        // has its own record shape: ECS lines do not apply.
        (Some(f), "otlp") if f.get_ref() != "v1" => {
            return Err(doc.error_at(
                f.span().start,
                "an otlp sink sends the native events (agent-guard/v2) as OpenTelemetry log records; \
                 `format` can only be \"v1\"",
            ));
        }
        (_, "otlp") => Some(Format::V1),
        (None, _) => None,
        (Some(f), _) => Some(Format::parse(f.get_ref()).ok_or_else(|| {
            doc.error_at(
                f.span().start,
                format!(
                    "unknown format {:?}; expected \"v1\" or \"ecs\"",
                    f.get_ref()
                ),
            )
        })?),
    };
    let queue = match &raw.queue {
        None => None,
        Some(q) if !(16..=1 << 24).contains(q.get_ref()) => {
            return Err(doc.error_at(
                q.span().start,
                "queue must be between 16 and 16777216 lines",
            ));
        }
        Some(q) => Some(*q.get_ref()),
    };
    let name = match &raw.name {
        None => ty.to_owned(),
        Some(n)
            if (1..=64).contains(&n.get_ref().len())
                && n.get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) =>
        {
            n.get_ref().clone()
        }
        Some(n) => {
            return Err(doc.error_at(
                n.span().start,
                format!(
                    "invalid sink name {:?}: use 1-64 characters from A-Z a-z 0-9 _ . -",
                    n.get_ref()
                ),
            ));
        }
    };
    Ok(SinkConfig {
        name,
        kind,
        format,
        queue,
    })
}

fn valid_app_name(s: &str) -> bool {
    (1..=48).contains(&s.len()) && s.bytes().all(|b| (33..=126).contains(&b))
}

/// An otlp sink's `endpoint`: the collector's OTLP/HTTP base URL
/// (`http://collector:4318`), to which `/v1/logs` is appended unless it is
/// already there (OTEL_EXPORTER_OTLP_ENDPOINT's rule).
fn otlp_logs_url(
    doc: &Doc<'_>,
    raw: Option<&Spanned<String>>,
    type_at: usize,
) -> Result<String, PolicyError> {
    let raw = raw.ok_or_else(|| {
        doc.error_at(
            type_at,
            "an otlp sink needs `endpoint` (e.g. \"http://collector:4318\")",
        )
    })?;
    let bad = |why: &str| {
        doc.error_at(
            raw.span().start,
            format!("endpoint {:?}: {why}", raw.get_ref()),
        )
    };
    let mut url = url::Url::parse(raw.get_ref()).map_err(|e| {
        bad(&format!(
            "{e}; expected an http:// or https:// URL such as \"http://collector:4318\""
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad(
            "expected an http:// or https:// URL with a host, such as \"http://collector:4318\"",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a query or fragment has no place in an OTLP endpoint"));
    }
    // Credentials would be sent in the clear over http and shown by
    // `status`; collectors take them as headers, which this sink lacks.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not supported"));
    }
    if !url.path().ends_with("/v1/logs") {
        let path = format!("{}/v1/logs", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url.into())
}
