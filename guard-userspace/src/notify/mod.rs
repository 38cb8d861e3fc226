//! Webhooks to the pager (`[[notify]] type = "webhook"`). A subscriber of
//! the event stream turns each new hold, each decision and each spent
//! budget into a signed JSON document; every delivery runs in its own task with retries, so
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
use serde::Serialize;
use sha2::Sha256;

use crate::{
    daemon::Shared,
    events::{
        self, Event, Stamped,
        model::{
            AgentBudget, BudgetAction, BudgetSpent, Call, CallOutcome, Channel, Cmdline,
            DaemonEvent, Decided, EventsLost, Failed, HoldId, HoldRef, LossReason, NotifyFailed,
            NotifyFailure, NotifyWhat, Op, Process, Rule, Text,
        },
    },
    metrics::Metrics,
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

/// The subscriber name of the webhook task (its losses say so).
const WATCHER: &str = "webhooks";

/// What a webhook document is about: a call held now, a hold's end, or
/// a spent budget.
enum About<'a> {
    Held(&'a Call, &'a HoldRef),
    Decision(&'a DaemonEvent, &'a Decided),
    Budget(&'a AgentBudget),
}

impl<'a> About<'a> {
    /// Which webhook event an emitted event is, if any.
    fn of(event: &'a Event) -> Option<Self> {
        match event {
            Event::Call(c) if c.outcome == CallOutcome::Held => {
                c.hold.as_ref().map(|h| About::Held(c, h))
            }
            Event::Daemon(d @ DaemonEvent::HoldDecision(h)) => Some(About::Decision(d, &h.hold)),
            Event::Daemon(DaemonEvent::AgentBudget(b)) => Some(About::Budget(b)),
            _ => None,
        }
    }

    fn which(&self) -> NotifyEvent {
        match self {
            About::Held(..) => NotifyEvent::Held,
            About::Decision(..) => NotifyEvent::Decision,
            About::Budget(_) => NotifyEvent::Budget,
        }
    }

    /// The hold it is about (none for a spent budget).
    fn id(&self) -> Option<HoldId> {
        match self {
            About::Held(_, h) => Some(h.id),
            About::Decision(_, d) => Some(d.id),
            About::Budget(_) => None,
        }
    }

    /// The call's agent, process, rule (none for a spent budget: no rule
    /// stopped it) and target: the held call, or the one that spent the
    /// budget.
    fn parts(
        &self,
    ) -> (
        Option<&'a events::model::AgentRef>,
        &'a Process,
        Option<&'a Rule>,
        &'a Op,
    ) {
        match self {
            About::Held(c, _) => (c.agent.known(), &c.process, Some(&c.rule), &c.op),
            About::Decision(DaemonEvent::HoldDecision(d), _) => {
                (d.agent.known(), &d.process, Some(&d.rule), &d.op)
            }
            About::Decision(..) => unreachable!("a decision is a hold.decision event"),
            About::Budget(b) => (b.agent.as_ref(), &b.process, None, &b.op),
        }
    }

    /// Whether a webhook that wants `events` gets this document. A spent
    /// budget also goes to those that want holds: what follows is held,
    /// refused or frozen.
    fn wanted_by(&self, events: &[NotifyEvent]) -> bool {
        events.contains(&self.which())
            || (self.which() == NotifyEvent::Budget && events.contains(&NotifyEvent::Held))
    }
}

/// The document POSTed (schema [`SCHEMA`]).
#[derive(Serialize)]
pub struct Document<'a> {
    schema: &'static str,
    event: &'static str,
    seq: u64,
    time: String,
    host: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hold: Option<DocHold<'a>>,
    /// A spent budget (`"event": "budget"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<&'a BudgetSpent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_behalf_of: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purpose: Option<&'a str>,
    /// The held call's kind (the kind of the call that spent a budget).
    what: &'static str,
    #[serde(serialize_with = "Op::serialize_target")]
    target: &'a Op,
    process: DocProcess<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a Rule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_left_secs: Option<u64>,
    summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DocHold<'a> {
    Held(&'a HoldRef),
    Decided(&'a Decided),
}

#[derive(Serialize)]
struct DocProcess<'a> {
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmdline: Option<&'a Cmdline>,
}

/// The document for `stamped` (if it is a hold, a decision or a spent
/// budget); `left_ms`
/// is how long a held call has left, `page` the web page's address.
pub fn document<'a>(
    stamped: &'a Stamped,
    left_ms: Option<u64>,
    page: Option<&str>,
) -> Option<Document<'a>> {
    let about = About::of(&stamped.event)?;
    let (agent, process, rule, op) = about.parts();
    let id = about.id();
    let shown_target = match (op.destination(), op.new_path()) {
        (Some(d), _) => format!("{}:{}", d.address, d.port),
        (None, Some(to)) => format!("{} -> {to}", op.path().unwrap_or("?")),
        (None, None) => op.path().unwrap_or_default().to_owned(),
    };
    let what = op.kind().name();
    let name = agent.map_or("?", |a| a.name.as_str());
    let owner = agent.map_or("?", |a| a.owner.as_str());
    let (hold, summary, time_left_secs) = match about {
        About::Held(_, h) => {
            let left = left_ms.map_or(h.timeout_secs.unwrap_or_default(), |ms| ms / 1000);
            let summary = format!(
                "agent-guard on {}: agent {name} ({owner}) is held on {what} {shown_target}; \
                 decide within {left} s or it is denied",
                stamped.host,
            );
            (Some(DocHold::Held(h)), summary, Some(left))
        }
        About::Decision(_, d) => {
            let summary = format!(
                "agent-guard on {}: hold {} ({name} {shown_target}) {} by {}",
                stamped.host,
                d.id.0,
                d.decision.name(),
                d.by.user,
            );
            (Some(DocHold::Decided(d)), summary, None)
        }
        About::Budget(b) => {
            let spent = &b.budget.budget;
            let next = match spent.action {
                Some(BudgetAction::Deny) => "refused until the window ends",
                Some(BudgetAction::Freeze) => "held and the agent is frozen until thawed",
                Some(BudgetAction::Ask) | None => "held for a decision",
            };
            let summary = format!(
                "agent-guard on {}: agent {name} ({owner}) spent its {} budget ({}) on {what} \
                 {shown_target}; further calls are {next}",
                stamped.host,
                spent.name.map_or("?", |n| n.name()),
                spent.rate.as_deref().unwrap_or("?"),
            );
            (None, summary, None)
        }
    };
    let budget = match about {
        About::Budget(b) => Some(&b.budget),
        About::Held(..) | About::Decision(..) => None,
    };
    Some(Document {
        schema: SCHEMA,
        event: about.which().name(),
        seq: stamped.seq,
        time: humantime::format_rfc3339_nanos(stamped.time).to_string(),
        host: &stamped.host,
        hold,
        budget,
        agent: agent.map(|a| a.name.as_str()),
        owner: agent.map(|a| a.owner.as_str()),
        on_behalf_of: agent.and_then(|a| a.on_behalf_of.as_deref()),
        purpose: agent.map(|a| a.purpose.as_str()),
        what,
        target: op,
        process: DocProcess {
            pid: process.pid,
            exe: process.exe.as_deref(),
            cmdline: process.cmdline.as_ref(),
        },
        rule,
        time_left_secs,
        summary,
        link: page.map(|p| match id {
            Some(id) => format!("{p}/#hold={}", id.0),
            None => format!("{p}/"),
        }),
    })
}

/// Follows the event stream and hands each hold and decision to every
/// webhook that wants it. Never blocks the emitter (it reads from a
/// bounded queue, whose overflow is itself reported).
/// Subscribes at once (so no hold emitted after this call is missed), then
/// returns the task.
pub fn run(
    shared: Arc<Shared>,
    hooks: Vec<Arc<Webhook>>,
    page: Option<String>,
    metrics: Arc<Metrics>,
) -> impl std::future::Future<Output = Result<()>> {
    let rx = events::with(&shared.emitter, |e| {
        e.watch(WATCHER, events::sinks::stream::SUBSCRIBER_QUEUE)
    });
    follow(shared, rx, hooks, page, metrics)
}

async fn follow(
    shared: Arc<Shared>,
    mut rx: tokio::sync::mpsc::Receiver<Arc<Stamped>>,
    hooks: Vec<Arc<Webhook>>,
    page: Option<String>,
    metrics: Arc<Metrics>,
) -> Result<()> {
    while let Some(stamped) = rx.recv().await {
        if let Event::Daemon(DaemonEvent::Loss(l)) = &stamped.event {
            // Our own queue overflowed: holds or decisions never seen.
            if l.loss.reason == LossReason::SubscriberSlow
                && l.loss.sink.as_deref() == Some(WATCHER)
            {
                events::emit_now(
                    &shared.emitter,
                    DaemonEvent::NotifyFailed(NotifyFailed {
                        outcome: Failed::Failed,
                        notify: NotifyFailure::EventsLost {
                            channel: Channel::Webhook,
                            reason: EventsLost::EventsLost,
                            count: l.loss.count,
                            will_retry: false,
                        },
                    }),
                );
            }
            continue;
        }
        let Some(about) = About::of(&stamped.event) else {
            continue;
        };
        let (which, id) = (about.which(), about.id());
        let left_ms = id
            .filter(|_| which == NotifyEvent::Held)
            .and_then(|id| shared.holds.left(id.0))
            .map(|d| d.as_millis() as u64);
        let Some(doc) = document(&stamped, left_ms, page.as_deref()) else {
            continue;
        };
        let body = match serde_json::to_vec(&doc) {
            Ok(b) => bytes::Bytes::from(b),
            Err(err) => {
                tracing::error!(%err, "webhook document could not be serialized");
                continue;
            }
        };
        for hook in hooks.iter().filter(|h| about.wanted_by(&h.events)) {
            if hook.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
                hook.in_flight.fetch_sub(1, Ordering::Relaxed);
                metrics.webhook_dropped(&hook.url);
                failed(
                    &shared,
                    &metrics,
                    hook,
                    which,
                    id,
                    0,
                    false,
                    "too many deliveries in flight",
                );
                continue;
            }
            tokio::spawn(deliver(
                shared.clone(),
                metrics.clone(),
                hook.clone(),
                which,
                id,
                body.clone(),
            ));
        }
    }
    Ok(())
}

/// POSTs one document, retrying with backoff.
async fn deliver(
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    hook: Arc<Webhook>,
    which: NotifyEvent,
    hold: Option<HoldId>,
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
                metrics.webhook_delivered(&hook.url);
                hook.in_flight.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            Ok(resp) => format!("HTTP {}", resp.status()),
            Err(err) => chain(&err),
        };
        metrics.webhook_failed_attempt(&hook.url);
        let will_retry = attempt < ATTEMPTS;
        if !will_retry {
            metrics.webhook_dropped(&hook.url);
        }
        failed(
            &shared, &metrics, &hook, which, hold, attempt, will_retry, &error,
        );
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
#[expect(clippy::too_many_arguments, reason = "one field of the event each")]
fn failed(
    shared: &Shared,
    metrics: &Metrics,
    hook: &Webhook,
    which: NotifyEvent,
    hold: Option<HoldId>,
    attempt: u32,
    will_retry: bool,
    error: &str,
) {
    tracing::warn!(url = %hook.url, hold = ?hold.map(|h| h.0), attempt, will_retry, error, "webhook delivery failed");
    events::emit_now(
        &shared.emitter,
        DaemonEvent::NotifyFailed(NotifyFailed {
            outcome: Failed::Failed,
            notify: NotifyFailure::Attempt {
                channel: Channel::Webhook,
                url: hook.url.clone(),
                event: match which {
                    NotifyEvent::Held => NotifyWhat::Held,
                    NotifyEvent::Decision => NotifyWhat::Decision,
                    NotifyEvent::Budget => NotifyWhat::Budget,
                },
                hold,
                attempt,
                attempts_max: ATTEMPTS,
                will_retry,
                error: Text::message(error),
                failures: metrics.webhook_failures(&hook.url),
            },
        }),
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
        let stamped = |event| Stamped {
            seq: 7,
            time: std::time::SystemTime::UNIX_EPOCH,
            host: "h".into(),
            event,
        };
        let examples = crate::events::examples::all();
        let held = examples
            .iter()
            .find(|e| e.kind() == "file.unlink" && e.outcome() == "held")
            .cloned()
            .map(stamped)
            .expect("a held delete");
        let doc = document(&held, Some(299_500), Some("https://g.example")).expect("a document");
        let doc = serde_json::to_value(&doc).expect("json");
        assert_eq!(doc["event"], "held");
        assert!(doc["hold"]["id"].is_string());
        assert_eq!(doc["agent"], "claims-bot");
        assert_eq!(doc["owner"], "claims-team@example.com");
        assert_eq!(doc["what"], "file.unlink");
        assert_eq!(doc["process"]["exe"], "/usr/bin/rm");
        assert_eq!(doc["process"]["cmdline"][0], "rm");
        assert_eq!(doc["purpose"], "files insurance claims");
        assert_eq!(doc["hold"]["context"]["ancestry"][0]["comm"], "sh");
        assert_eq!(doc["time_left_secs"], 299);
        let id = doc["hold"]["id"].as_str().expect("id");
        assert_eq!(doc["link"], format!("https://g.example/#hold={id}"));
        let decided = examples
            .iter()
            .find(|e| e.kind() == "hold.decision")
            .cloned()
            .map(stamped)
            .expect("a decision");
        let doc = document(&decided, None, None).expect("a document");
        let doc = serde_json::to_value(&doc).expect("json");
        assert_eq!(doc["event"], "decision");
        assert!(doc.get("link").is_none());
        assert!(
            doc["summary"]
                .as_str()
                .is_some_and(|s| s.contains("approved by alice"))
        );
    }

    #[test]
    fn a_spent_budget_is_a_document_for_budget_and_held_hooks() {
        let spent = crate::events::examples::all()
            .into_iter()
            .find(|e| e.kind() == "agent.budget")
            .map(|event| Stamped {
                seq: 9,
                time: std::time::SystemTime::UNIX_EPOCH,
                host: "h".into(),
                event,
            })
            .expect("a spent budget");
        let about = About::of(&spent.event).expect("notified");
        assert!(about.wanted_by(&[NotifyEvent::Budget]));
        assert!(about.wanted_by(&[NotifyEvent::Held]));
        assert!(!about.wanted_by(&[NotifyEvent::Decision]));
        let doc = document(&spent, None, Some("https://g.example")).expect("a document");
        let doc = serde_json::to_value(&doc).expect("json");
        assert_eq!(doc["event"], "budget");
        assert!(doc.get("hold").is_none() && doc.get("rule").is_none());
        assert_eq!(doc["budget"]["name"], "deletes");
        assert_eq!(doc["budget"]["count"], 40);
        assert_eq!(doc["what"], "file.unlink");
        assert_eq!(doc["agent"], "claims-bot");
        assert_eq!(doc["link"], "https://g.example/");
        assert!(
            doc["summary"]
                .as_str()
                .is_some_and(|s| s.contains("spent its deletes budget (40/min)")
                    && s.contains("held for a decision")),
            "{doc}"
        );
    }
}
