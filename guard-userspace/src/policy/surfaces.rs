//! The on-call and operator surfaces of the policy file: `[web]`,
//! `[metrics]` and `[[notify]]`. All are off unless written; the servers
//! listen on loopback unless `allow_remote = true` says otherwise.
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::PolicyError;
use super::error::Doc;

/// `[web]`: the approval page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebConfig {
    pub listen: SocketAddr,
    /// Root-only file of `user:token` lines.
    pub tokens_file: PathBuf,
    /// The address on-call opens (e.g. behind a TLS proxy), for webhook
    /// links; without it, links use `http://{listen}`.
    pub url: Option<String>,
}

impl WebConfig {
    /// Where the page is reached from outside, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// One `[[notify]]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyConfig {
    pub url: String,
    pub events: Vec<NotifyEvent>,
    /// Root-only file whose contents key the HMAC-SHA256 signature.
    pub secret_file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyEvent {
    /// A call was held for a decision.
    Held,
    /// A hold ended (approved, denied, expired, killed).
    Decision,
    /// An agent spent one of its budgets (`agent.budget`). Hooks that
    /// want `held` get it too: from then on its calls are held, refused or
    /// frozen.
    Budget,
}

impl NotifyEvent {
    pub fn name(self) -> &'static str {
        match self {
            NotifyEvent::Held => "held",
            NotifyEvent::Decision => "decision",
            NotifyEvent::Budget => "budget",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [web] table")]
pub(super) struct RawWeb {
    listen: Spanned<String>,
    tokens_file: Spanned<String>,
    url: Option<Spanned<String>>,
    allow_remote: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [metrics] table")]
pub(super) struct RawMetrics {
    listen: Spanned<String>,
    allow_remote: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[notify]] table")]
pub(super) struct RawNotify {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    url: Spanned<String>,
    events: Spanned<Vec<Spanned<String>>>,
    secret_file: Spanned<String>,
}

fn listen(
    doc: &Doc<'_>,
    raw: &Spanned<String>,
    allow_remote: Option<bool>,
    table: &str,
) -> Result<SocketAddr, PolicyError> {
    let at = raw.span().start;
    let addr: SocketAddr = raw.get_ref().parse().map_err(|_| {
        doc.error_at(
            at,
            format!(
                "[{table}] listen must be an address and port like \"127.0.0.1:8787\", got {:?}",
                raw.get_ref()
            ),
        )
    })?;
    if !addr.ip().is_loopback() && allow_remote != Some(true) {
        return Err(doc.error_at(
            at,
            format!(
                "[{table}] listen {addr} is not a loopback address; set allow_remote = true \
                 to serve other hosts (put a TLS proxy in front)"
            ),
        ));
    }
    Ok(addr)
}

fn abs_path(doc: &Doc<'_>, raw: Spanned<String>, what: &str) -> Result<PathBuf, PolicyError> {
    if raw.get_ref().starts_with('/') {
        Ok(PathBuf::from(raw.into_inner()))
    } else {
        Err(doc.error_at(
            raw.span().start,
            format!("{what} must be an absolute path, got {:?}", raw.get_ref()),
        ))
    }
}

fn http_url(doc: &Doc<'_>, raw: Spanned<String>, what: &str) -> Result<String, PolicyError> {
    let u = raw.get_ref();
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(raw.into_inner()),
        _ => Err(doc.error_at(
            raw.span().start,
            format!("{what} must be an http:// or https:// URL, got {u:?}"),
        )),
    }
}

pub(super) fn web(doc: &Doc<'_>, raw: Option<RawWeb>) -> Result<Option<WebConfig>, PolicyError> {
    let Some(raw) = raw else { return Ok(None) };
    Ok(Some(WebConfig {
        listen: listen(doc, &raw.listen, raw.allow_remote, "web")?,
        tokens_file: abs_path(doc, raw.tokens_file, "tokens_file")?,
        url: raw.url.map(|u| http_url(doc, u, "url")).transpose()?,
    }))
}

pub(super) fn metrics(
    doc: &Doc<'_>,
    raw: Option<RawMetrics>,
    web: Option<&WebConfig>,
) -> Result<Option<MetricsConfig>, PolicyError> {
    let Some(raw) = raw else { return Ok(None) };
    let addr = listen(doc, &raw.listen, raw.allow_remote, "metrics")?;
    if web.is_some_and(|w| w.listen == addr) {
        return Err(doc.error_at(
            raw.listen.span().start,
            format!("[metrics] listen {addr} is [web]'s address too; give each its own port"),
        ));
    }
    Ok(Some(MetricsConfig { listen: addr }))
}

pub(super) fn notify(doc: &Doc<'_>, raw: Vec<RawNotify>) -> Result<Vec<NotifyConfig>, PolicyError> {
    let mut out = Vec::with_capacity(raw.len());
    for n in raw {
        if n.kind.get_ref() != "webhook" {
            return Err(doc.error_at(
                n.kind.span().start,
                format!(
                    "unknown notify type {:?}; expected \"webhook\"",
                    n.kind.get_ref()
                ),
            ));
        }
        let events_at = n.events.span().start;
        let mut events = Vec::new();
        for e in n.events.into_inner() {
            let event = match e.get_ref().as_str() {
                "held" => NotifyEvent::Held,
                "decision" => NotifyEvent::Decision,
                "budget" => NotifyEvent::Budget,
                other => {
                    return Err(doc.error_at(
                        e.span().start,
                        format!(
                            "unknown notify event {other:?}; expected \"held\", \"decision\" \
                             or \"budget\""
                        ),
                    ));
                }
            };
            if !events.contains(&event) {
                events.push(event);
            }
        }
        if events.is_empty() {
            return Err(doc.error_at(
                events_at,
                "events must name at least one of \"held\" and \"decision\"",
            ));
        }
        out.push(NotifyConfig {
            url: http_url(doc, n.url, "url")?,
            events,
            secret_file: abs_path(doc, n.secret_file, "secret_file")?,
        });
    }
    Ok(out)
}
