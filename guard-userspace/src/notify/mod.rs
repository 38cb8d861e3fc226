//! Webhooks to the pager (`[[notify]] type = "webhook"`). A subscriber of
//! the event stream turns each new hold and each decision into a signed
//! JSON document; every delivery runs in its own task with retries, so
//! nothing here can delay enforcement. Failed attempts are counted
//! (metrics) and reported as `notify.failed` events.
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{
    daemon::Shared,
    events, metrics,
    policy::{NotifyConfig, NotifyEvent},
    rootfile,
};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Agent-Guard-Signature";
/// Version of the document shape below.
pub const SCHEMA: &str = "agent-guard/webhook/v1";
/// Tries per document: the first and five retries, 0.5 s apart, doubling.
const ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries in flight per webhook before new documents are dropped (and
/// counted): a receiver that is down for long must not grow memory forever.
const MAX_IN_FLIGHT: usize = 1024;

/// One configured webhook, ready to send.
pub struct Webhook {
    url: String,
    events: Vec<NotifyEvent>,
    key: Vec<u8>,
    client: reqwest::Client,
    in_flight: AtomicUsize,
}

impl Webhook {
    /// Reads the root-only key file; refuses to start without it.
    pub fn new(config: &NotifyConfig) -> Result<Self> {
        let key = rootfile::read(&config.secret_file)
            .with_context(|| format!("[[notify]] {}: secret_file", config.url))?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("agent-guard/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the webhook HTTP client")?;
        Ok(Self {
            url: config.url.clone(),
            events: config.events.clone(),
            key: key.trim_end_matches(['\r', '\n']).as_bytes().to_vec(),
            client,
            in_flight: AtomicUsize::new(0),
        })
    }
}

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Which webhook event an emitted line is, if any.
fn classify(event: &Value) -> Option<NotifyEvent> {
    if event["kind"] == "hold.decision" {
        Some(NotifyEvent::Decision)
    } else if event["kind"] == "agent.budget" {
        Some(NotifyEvent::Budget)
    } else if event["outcome"] == "held" && event["hold"]["id"].is_string() {
        Some(NotifyEvent::Held)
    } else {
        None
    }
}

/// The document POSTed for `event`; `what` is the held call's kind.
pub fn document(
    which: NotifyEvent,
    event: &Value,
    what: &str,
    left_ms: Option<u64>,
    page: Option<&str>,
) -> Value {
    let id = event["hold"]["id"].as_str().unwrap_or_default();
    let agent = &event["agent"];
    let target = &event["target"];
    let shown_target = target["path"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            Some(format!(
                "{}:{}",
                target["address"].as_str()?,
                target["port"].as_u64()?
            ))
        })
        .unwrap_or_default();
    let mut doc = json!({
        "schema": SCHEMA,
        "event": which.name(),
        "seq": event["seq"],
        "time": event["time"],
        "host": event["host"],
        "hold": event["hold"],
        "agent": agent["name"],
        "owner": agent["owner"],
        "on_behalf_of": agent["on_behalf_of"],
        "purpose": agent["purpose"],
        "what": what,
        "target": target,
        "process": {"pid": event["process"]["pid"], "exe": event["process"]["exe"],
                    "cmdline": event["process"]["cmdline"]},
        "rule": event["rule"],
    });
    let summary = match which {
        NotifyEvent::Held => {
            let left = left_ms.map_or_else(
                || event["hold"]["timeout_secs"].as_u64().unwrap_or(0),
                |ms| ms / 1000,
            );
            doc["time_left_secs"] = left.into();
            format!(
                "agent-guard on {}: agent {} ({}) is held on {what} {shown_target}; \
                 decide within {left} s or it is denied",
                event["host"].as_str().unwrap_or("?"),
                agent["name"].as_str().unwrap_or("?"),
                agent["owner"].as_str().unwrap_or("?"),
            )
        }
        NotifyEvent::Decision => format!(
            "agent-guard on {}: hold {id} ({} {shown_target}) {} by {}",
            event["host"].as_str().unwrap_or("?"),
            agent["name"].as_str().unwrap_or("?"),
            event["hold"]["decision"].as_str().unwrap_or("?"),
            event["hold"]["by"]["user"].as_str().unwrap_or("?"),
        ),
        NotifyEvent::Budget => {
            let b = &event["budget"];
            doc["budget"] = b.clone();
            format!(
                "agent-guard on {}: agent {} ({}) spent its {} budget ({}) on {what} \
                 {shown_target}; further calls are {}",
                event["host"].as_str().unwrap_or("?"),
                agent["name"].as_str().unwrap_or("?"),
                agent["owner"].as_str().unwrap_or("?"),
                b["name"].as_str().unwrap_or("?"),
                b["rate"].as_str().unwrap_or("?"),
                match b["action"].as_str() {
                    Some("deny") => "refused until the window ends",
                    Some("freeze") => "held and the agent is frozen until thawed",
                    _ => "held for a decision",
                },
            )
        }
    };
    doc["summary"] = summary.into();
    if let Some(page) = page {
        doc["link"] = format!("{page}/#hold={id}").into();
    }
    doc
}

/// Follows the event stream and hands each hold and decision to every
/// webhook that wants it. Never blocks the emitter (it reads from a
/// bounded subscriber queue, whose overflow is itself reported).
/// Subscribes at once (so no hold emitted after this call is missed), then
/// returns the task.
pub fn run(
    shared: Arc<Shared>,
    hooks: Vec<Arc<Webhook>>,
    page: Option<String>,
) -> impl std::future::Future<Output = Result<()>> {
    let rx = events::with(&shared.emitter, |e| {
        e.subscribe(
            "webhooks",
            None,
            crate::policy::sink::Format::V1,
            events::sinks::stream::SUBSCRIBER_QUEUE,
        )
    });
    follow(shared, rx, hooks, page)
}

async fn follow(
    shared: Arc<Shared>,
    mut rx: tokio::sync::mpsc::Receiver<crate::events::sinks::Line>,
    hooks: Vec<Arc<Webhook>>,
    page: Option<String>,
) -> Result<()> {
    // The kind of each pending hold's call: a decision event carries the
    // held call's body under kind `hold.decision`.
    let mut kinds: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    while let Some(line) = rx.recv().await {
        let Ok(event) = serde_json::from_slice::<Value>(&line.bytes) else {
            continue;
        };
        if event["kind"] == "loss" && event["loss"]["reason"] == "subscriber_slow" {
            events::emit_now(
                &shared.emitter,
                json!({"kind": "notify.failed", "outcome": "failed",
                       "notify": {"type": "webhook", "reason": "events_lost",
                                  "count": event["loss"]["count"], "will_retry": false}}),
            );
            continue;
        }
        let Some(which) = classify(&event) else {
            continue;
        };
        let id = event["hold"]["id"].as_str().unwrap_or_default().to_owned();
        let left_ms = (which == NotifyEvent::Held)
            .then(|| {
                shared
                    .holds
                    .pending()
                    .into_iter()
                    .find(|h| h["id"] == id.as_str())
                    .and_then(|h| h["left_ms"].as_u64())
            })
            .flatten();
        let what = match which {
            NotifyEvent::Held => {
                let kind = event["kind"].as_str().unwrap_or_default().to_owned();
                kinds.insert(id.clone(), kind.clone());
                kind
            }
            NotifyEvent::Budget => event["call"].as_str().unwrap_or_default().to_owned(),
            NotifyEvent::Decision => kinds.remove(&id).unwrap_or_else(|| {
                // Held before a restart: tell the call by its target.
                if event["target"].get("path").is_some() {
                    "file.delete".into()
                } else {
                    "net.connect".into()
                }
            }),
        };
        let doc = document(which, &event, &what, left_ms, page.as_deref());
        let body = match serde_json::to_vec(&doc) {
            Ok(b) => bytes::Bytes::from(b),
            Err(err) => {
                tracing::error!(%err, "webhook document could not be serialized");
                continue;
            }
        };
        // A budget spent is news to whoever wants holds: what follows is held.
        let wants = |h: &Webhook| {
            h.events.contains(&which)
                || (which == NotifyEvent::Budget && h.events.contains(&NotifyEvent::Held))
        };
        for hook in hooks.iter().filter(|h| wants(h)) {
            if hook.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
                hook.in_flight.fetch_sub(1, Ordering::Relaxed);
                metrics::global().webhook_dropped(&hook.url);
                failed(
                    &shared,
                    hook,
                    which,
                    &id,
                    0,
                    false,
                    "too many deliveries in flight",
                );
                continue;
            }
            tokio::spawn(deliver(
                shared.clone(),
                hook.clone(),
                which,
                id.clone(),
                body.clone(),
            ));
        }
    }
    Ok(())
}

/// POSTs one document, retrying with backoff.
async fn deliver(
    shared: Arc<Shared>,
    hook: Arc<Webhook>,
    which: NotifyEvent,
    hold: String,
    body: bytes::Bytes,
) {
    let signature = signature(&hook.key, &body);
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let sent = hook
            .client
            .post(&hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .header("X-Agent-Guard-Event", which.name())
            .body(body.clone())
            .send()
            .await;
        let error = match sent {
            Ok(resp) if resp.status().is_success() => {
                metrics::global().webhook_delivered(&hook.url);
                hook.in_flight.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            Ok(resp) => format!("HTTP {}", resp.status()),
            Err(err) => chain(&err),
        };
        metrics::global().webhook_failed_attempt(&hook.url);
        let will_retry = attempt < ATTEMPTS;
        if !will_retry {
            metrics::global().webhook_dropped(&hook.url);
        }
        failed(&shared, &hook, which, &hold, attempt, will_retry, &error);
        if will_retry {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    hook.in_flight.fetch_sub(1, Ordering::Relaxed);
}

/// An error with its causes ("error sending request: ...: Connection
/// refused"), since reqwest's own message stops at the first.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `notify.failed` event.
fn failed(
    shared: &Shared,
    hook: &Webhook,
    which: NotifyEvent,
    hold: &str,
    attempt: u32,
    will_retry: bool,
    error: &str,
) {
    tracing::warn!(url = %hook.url, hold, attempt, will_retry, error, "webhook delivery failed");
    events::emit_now(
        &shared.emitter,
        json!({"kind": "notify.failed", "outcome": "failed",
               "notify": {"type": "webhook", "url": hook.url, "event": which.name(),
                          "hold": hold, "attempt": attempt, "attempts_max": ATTEMPTS,
                          "will_retry": will_retry, "error": error,
                          "failures": metrics::global().webhook_failures(&hook.url)}}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn documents_carry_what_on_call_needs() {
        let held = json!({"seq": 7, "time": "t", "host": "h", "kind": "file.unlink",
            "outcome": "held", "hold": {"id": "42", "timeout_secs": 300,
                "context": {"ancestry": [{"pid": 8, "comm": "sh", "cmdline": ["sh"]}]}},
            "agent": {"name": "bot", "owner": "o@x", "purpose": "tidy up"},
            "process": {"pid": 9, "exe": "/usr/bin/rm", "cmdline": ["rm", "-rf", "/srv/data/x"]},
            "target": {"path": "/srv/data/x"}});
        assert_eq!(classify(&held), Some(NotifyEvent::Held));
        let doc = document(
            NotifyEvent::Held,
            &held,
            "file.unlink",
            Some(299_500),
            Some("https://g.example"),
        );
        assert_eq!(doc["hold"]["id"], "42");
        assert_eq!(doc["agent"], "bot");
        assert_eq!(doc["owner"], "o@x");
        assert_eq!(doc["what"], "file.unlink");
        assert_eq!(doc["process"]["exe"], "/usr/bin/rm");
        assert_eq!(doc["process"]["cmdline"][1], "-rf");
        assert_eq!(doc["purpose"], "tidy up");
        assert_eq!(doc["hold"]["context"]["ancestry"][0]["comm"], "sh");
        assert_eq!(doc["time_left_secs"], 299);
        assert_eq!(doc["link"], "https://g.example/#hold=42");
        let mut decided = held.clone();
        decided["kind"] = "hold.decision".into();
        decided["outcome"] = "allowed".into();
        decided["hold"] = json!({"id": "42", "decision": "approved", "by": {"user": "alice"}});
        assert_eq!(classify(&decided), Some(NotifyEvent::Decision));
        let doc = document(NotifyEvent::Decision, &decided, "file.unlink", None, None);
        assert!(doc.get("link").is_none());
        assert!(
            doc["summary"]
                .as_str()
                .is_some_and(|s| s.contains("approved by alice"))
        );
    }
}
