//! `[[notify]] type = "webhook"`: on-call's pager hears of every hold and
//! every decision, signed; a pager that is down delays nothing and its
//! failures are counted and reported. Needs: a delete backend that holds
//! (seccomp user notification here, BPF LSM in the VM tier).

use agent_guard_tests::*;
use hmac::{KeyInit as _, Mac as _};
use serde_json::Value;

const KEY: &str = "webhook-test-key-0123456789\n";

/// Receives one POST: (document, signature header, raw body); answers 200.
fn receive(server: &tiny_http::Server) -> (Value, String, Vec<u8>) {
    let mut req = server
        .recv_timeout(PATIENCE)
        .expect("receiver")
        .unwrap_or_else(|| panic!("no webhook within {PATIENCE:?}"));
    assert_eq!(req.method(), &tiny_http::Method::Post);
    let signature = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("X-Agent-Guard-Signature"))
        .map(|h| h.value.to_string())
        .expect("signature header");
    let mut body = Vec::new();
    req.as_reader().read_to_end(&mut body).expect("body");
    req.respond(tiny_http::Response::empty(200))
        .expect("respond");
    let doc = serde_json::from_slice(&body).expect("JSON document");
    (doc, signature, body)
}

/// What the receiver computes to check the sender: HMAC-SHA256 of the
/// body, keyed with the secret file's contents without the newline.
fn expected_signature(body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.trim_end().as_bytes()).expect("key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[test]
fn a_hold_and_its_decision_arrive_signed() {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("receiver");
    let port = server.server_addr().to_ip().expect("ip").port();
    let key = SecretFile::new("webhook-key", KEY);
    let tokens = SecretFile::new("webhook-tokens", "alice:webhook-test-token-0123456789\n");
    let cg = TestCgroups::new("webhook-signed");
    let scratch = Scratch::new("webhook-signed");
    let extra = format!(
        r#"
[web]
listen = "127.0.0.1:{}"
tokens_file = "{}"
url = "https://guard.example.com"

[[notify]]
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
events = ["held", "decision"]
secret_file = "{}"
"#,
        free_port(),
        tokens.s(),
        key.s()
    );
    let daemon = Daemon::start(&cleaner_policy(&cg, &scratch.s("prod"), &extra), cg);
    let file = scratch.file("prod/db.sqlite");
    let path = file.display().to_string();
    let (child, id) = held_delete(&daemon, &["rm", &path], &path);

    let (doc, signature, body) = receive(&server);
    assert_eq!(signature, expected_signature(&body), "signature verifies");
    assert_eq!(doc["schema"], "agent-guard/webhook/v1");
    assert_eq!(doc["event"], "held");
    assert_eq!(doc["hold"]["id"], id.as_str());
    assert_eq!(doc["agent"], "cleaner");
    assert_eq!(doc["owner"], "ops@example.com");
    assert_eq!(doc["what"], "file.unlink");
    assert_eq!(doc["target"]["path"], path.as_str());
    assert!(
        doc["process"]["pid"].as_u64().is_some_and(|p| p > 0),
        "{doc}"
    );
    assert!(
        doc["process"]["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("/rm")),
        "{doc}"
    );
    assert!(
        doc["time_left_secs"]
            .as_u64()
            .is_some_and(|t| t > 0 && t <= 300),
        "{doc}"
    );
    assert_eq!(
        doc["link"],
        format!("https://guard.example.com/#hold={id}").as_str()
    );
    // Held before it happened: the pager heard of it while the file is there.
    assert!(file.exists());

    let out = daemon
        .cli()
        .args(["approve", &id, "--reason", "paged and checked"])
        .output()
        .expect("approve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(child.wait_with_output().expect("rm").status.success());
    assert!(!file.exists());

    let (doc, signature, body) = receive(&server);
    assert_eq!(signature, expected_signature(&body), "signature verifies");
    assert_eq!(doc["event"], "decision");
    assert_eq!(doc["hold"]["id"], id.as_str());
    assert_eq!(doc["hold"]["decision"], "approved");
    assert_eq!(doc["hold"]["by"]["uid"], 0);
    assert_eq!(doc["hold"]["reason"], "paged and checked");
    assert_eq!(doc["what"], "file.unlink");
    assert_eq!(doc["agent"], "cleaner");
    // A tampered body does not verify.
    let mut forged = body.clone();
    forged[0] ^= 1;
    assert_ne!(signature, expected_signature(&forged));
}

#[test]
fn while_the_receiver_is_down_enforcement_goes_on_and_failures_are_counted() {
    // Nobody listens on this port: every delivery is refused.
    let down = free_port();
    let metrics = free_port();
    let key = SecretFile::new("webhook-down-key", KEY);
    let cg = TestCgroups::new("webhook-down");
    let scratch = Scratch::new("webhook-down");
    let url = format!("http://127.0.0.1:{down}/hook");
    let extra = format!(
        r#"
[metrics]
listen = "127.0.0.1:{metrics}"

[[notify]]
type = "webhook"
url = "{url}"
events = ["held", "decision"]
secret_file = "{}"
"#,
        key.s()
    );
    let daemon = Daemon::start(&cleaner_policy(&cg, &scratch.s("prod"), &extra), cg);

    // An allowed delete is not held up by the failing pager.
    let free = scratch.file("tmp/scratch.txt");
    let out = daemon.run_agent("cleaner", &["rm", &free.display().to_string()]);
    assert!(out.status.success());
    assert!(!free.exists());

    let file = scratch.file("prod/x");
    let path = file.display().to_string();
    let (child, id) = held_delete(&daemon, &["rm", &path], &path);
    // The pager is failing, and says so, while the call is held.
    let first = daemon.wait_event("notify.failed", |e| {
        e["notify"]["hold"] == id.as_str() && e["notify"]["attempt"] == 1
    });
    assert_eq!(first["notify"]["url"], url.as_str());
    assert_eq!(first["notify"]["event"], "held");
    assert_eq!(first["notify"]["will_retry"], true);
    // On-call decides anyway; the call completes at once.
    let out = daemon
        .cli()
        .args(["approve", &id])
        .output()
        .expect("approve");
    assert!(out.status.success());
    assert!(child.wait_with_output().expect("rm").status.success());
    assert!(!file.exists());
    let decision = daemon.wait_event("hold.decision", |e| e["hold"]["id"] == id.as_str());

    // The held document is given up only after every retry, long after the
    // decision: delivery ran beside enforcement, never in front of it.
    let last = daemon.wait_event("notify.failed", |e| {
        e["notify"]["hold"] == id.as_str()
            && e["notify"]["event"] == "held"
            && e["notify"]["will_retry"] == false
    });
    assert!(
        decision["seq"].as_u64() < last["seq"].as_u64(),
        "the decision (seq {}) came while the held webhook was still being retried (gave up at seq {})",
        decision["seq"],
        last["seq"]
    );
    let attempts = last["notify"]["attempts_max"]
        .as_u64()
        .expect("attempts_max");
    assert_eq!(last["notify"]["attempt"].as_u64(), Some(attempts));
    assert!(
        last["notify"]["failures"]
            .as_u64()
            .is_some_and(|f| f >= attempts),
        "{last}"
    );

    // Counted where operators alert on it.
    let (status, _, text) = http_get(&format!("http://127.0.0.1:{metrics}/metrics"), None);
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("metrics parse");
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("url") == Some(url.as_str()))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{name}: unexpected {other:?}"),
            })
            .unwrap_or_else(|| panic!("{name}{{url={url}}} missing:\n{text}"))
    };
    assert!(value("agent_guard_webhook_failures_total") >= attempts as f64);
    assert!(value("agent_guard_webhook_dropped_total") >= 1.0);
}
