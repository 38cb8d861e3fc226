//! Fuzzing what strangers can send: the control protocol (framing and
//! parsing of request lines, fds included), the web page's requests, the
//! policy parser and the kernel-record decoder. Each target must never
//! panic, and what it answers must stay well-formed.
//!
//! Every target first replays its corpus, `fuzz/corpus/TARGET/` at the
//! repository root: seeds, and every input that ever broke it (a crash
//! is a test forever). Then it runs property-based cases (proptest):
//! corpus entries mutated byte by byte and spliced, plus inputs built from
//! the target's own grammar. A plain `cargo test` runs a few hundred; the
//! fuzz tier of `cargo xtask test` sets `AGENT_GUARD_FUZZ_SECS` (about a
//! minute each). A failure is shrunk, saved into the corpus as
//! `crash-HASH`, and fails the test: commit that file with the fix.
#![expect(clippy::unwrap_used, reason = "a fuzz harness fails loudly")]

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use guard_common::{ConnectRecord, EventHeader, EventKind, FileRecord, ObservedDeleteRecord};
use guard_userspace::{
    control::{Envelope, Reply},
    daemon::attribute,
    daemon::{access::Caller, approvals::ScopeRequest, registry},
    events::{Event, Stamped, decode, enrich::Enricher, model::Refusal},
    policy, web,
};
use proptest::{
    prelude::*,
    sample::select,
    test_runner::{Config, TestError, TestRunner},
};
use serde_json::{Value, json};
use sha2::Digest as _;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!inputs.is_empty(), "{}: an empty corpus", dir.display());
    inputs
}

/// Corpus entries with a few byte edits (replace, insert, delete) and, at
/// times, the tail of another entry spliced on.
fn mutated(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..4u8), 0..12);
    (
        select(seeds.clone()),
        select(seeds),
        edits,
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut input, other, edits, cut)| {
            for (at, byte, op) in edits {
                let i = if input.is_empty() {
                    0
                } else {
                    at.index(input.len())
                };
                match op {
                    0 if !input.is_empty() => input[i] = byte,
                    1 => input.insert(i, byte),
                    2 if !input.is_empty() => {
                        input.remove(i);
                    }
                    _ => {
                        let from = cut.index(other.len().max(1));
                        input.truncate(i);
                        input.extend_from_slice(other.get(from..).unwrap_or_default());
                    }
                }
            }
            input
        })
        .boxed()
}

/// Runs `check` on the corpus, then on `inputs` until the budget is spent.
fn fuzz(target: &str, inputs: BoxedStrategy<Vec<u8>>, check: impl Fn(&[u8])) {
    for (i, input) in corpus(target).iter().enumerate() {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(input)));
        assert!(run.is_ok(), "{target}: corpus entry {i} fails");
    }
    let budget = std::env::var("AGENT_GUARD_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let deadline = Instant::now() + budget.unwrap_or_default();
    let mut cases = 0u64;
    loop {
        // A fresh runner (and seed) for each round of cases.
        let mut runner = TestRunner::new(Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&inputs, |input| {
            check(&input);
            Ok(())
        });
        cases += 256;
        if let Err(TestError::Fail(why, input)) = result {
            let hash = sha2::Sha256::digest(&input);
            let name: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
            let file = corpus_dir(target).join(format!("crash-{name}"));
            std::fs::write(&file, &input).unwrap();
            panic!(
                "{target}: {why}; the input is saved as {} (commit it with the fix)",
                file.display()
            );
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    if budget.is_some() {
        eprintln!("fuzz {target}: {cases} cases, no failure");
    }
}

// ----- the control protocol -----

/// Request lines built from the protocol's own words.
fn control_lines() -> BoxedStrategy<Vec<u8>> {
    let ops = select(vec![
        "session_open",
        "session_join",
        "session_resume",
        "session_close",
        "status",
        "reload",
        "agents",
        "set_mode",
        "pending",
        "kill",
        "decide",
        "grants",
        "subscribe",
        "revoke",
        "rm_rf",
    ]);
    let keys = select(vec![
        "agent",
        "on_behalf_of",
        "argv",
        "session",
        "token",
        "exit_code",
        "signal",
        "force",
        "freeze",
        "reason",
        "hold",
        "id",
        "approve",
        "scope",
        "for_secs",
        "path",
        "v",
    ]);
    let value = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        prop::collection::vec(".{0,8}", 0..4).prop_map(Value::from),
    ];
    (
        prop_oneof![Just(1u64), any::<u64>()],
        ops,
        prop::collection::vec((keys, value), 0..6),
        any::<bool>(),
    )
        .prop_map(|(v, op, fields, newline)| {
            let mut obj = serde_json::Map::new();
            obj.insert("v".into(), v.into());
            obj.insert("op".into(), op.into());
            for (k, val) in fields {
                obj.insert(k.into(), val);
            }
            let mut line = serde_json::to_vec(&obj).unwrap();
            if newline {
                line.push(b'\n');
            }
            line
        })
        .boxed()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn fuzz_control_protocol() {
    let rt = runtime();
    let seeds = corpus("control");
    let inputs = prop_oneof![mutated(seeds), control_lines()].boxed();
    fuzz("control", inputs, |bytes| {
        // Parsing: never a panic; what parses, serializes and parses back.
        for line in bytes.split(|b| *b == b'\n') {
            if let Ok(env) = Envelope::parse(line) {
                let wire = serde_json::to_vec(&env).unwrap();
                let again = Envelope::parse(&wire).unwrap();
                assert_eq!(format!("{:?}", again.request), format!("{:?}", env.request));
            }
            let err = Reply::err(String::from_utf8_lossy(line));
            assert!(
                serde_json::to_string(&err)
                    .unwrap()
                    .starts_with(r#"{"v":1,"ok":false"#)
            );
        }
        // Framing, as the server reads a connection: whole lines, bounded.
        rt.block_on(async {
            let (a, b) = tokio::net::UnixStream::pair().unwrap();
            let (mut a, max) = (a, 1024);
            let write = async move {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut a, bytes).await;
            };
            let read = async {
                let mut total = 0;
                while let Ok((line, fds)) =
                    guard_userspace::supervise::recv_with_fds(&b, max, 1).await
                {
                    assert!(line.len() <= max && line.ends_with(b"\n"), "{line:?}");
                    assert!(fds.is_empty());
                    total += line.len();
                }
                assert!(total <= bytes.len());
            };
            tokio::join!(write, read);
        });
    });
}

// ----- the web page's requests -----

const TOKEN: &str = "fuzz-token-0123456789abcdef";

/// A daemon stand-in: the page's own handling is under test.
struct Stub;

impl web::Backend for Stub {
    fn pending(&self) -> Vec<Value> {
        vec![json!({"id": "12", "kind": "file.unlink", "agent": "bot", "target": {"path": "/x"}})]
    }
    fn grants(&self) -> Vec<Value> {
        vec![json!({"id": 1, "agent": "bot"})]
    }
    fn budgets(&self) -> Vec<Value> {
        vec![json!({"agent": "bot", "frozen": false,
                    "budget": {"deletes": {"used": 3, "limit": 40, "window": "1min", "exhausted": false},
                               "on_exceed": "ask"}})]
    }
    fn decide(
        &self,
        who: &Caller,
        id: &str,
        _approve: bool,
        reason: Option<String>,
        scope: ScopeRequest,
    ) -> anyhow::Result<Value> {
        assert_eq!(who.user, "alice", "only a token's user decides");
        let _ = (reason, scope.path);
        let id: u64 = id.parse()?;
        Ok(json!({"hold": id, "scope": scope.scope, "for_secs": scope.for_secs}))
    }
    fn kill(&self, who: &Caller, hold: String) -> anyhow::Result<Value> {
        assert_eq!(who.user, "alice");
        Ok(json!({"hold": hold.parse::<u64>()?}))
    }
    fn revoke(&self, who: &Caller, grant: u32) -> anyhow::Result<Value> {
        assert_eq!(who.user, "alice");
        Ok(json!({"grant": grant}))
    }
    fn refuse(&self, _source: &str, control: Refusal) {
        assert!(!control.op.as_str().is_empty() && !control.reason.as_str().is_empty());
    }
    fn events(&self) -> tokio::sync::mpsc::Receiver<std::sync::Arc<Stamped>> {
        tokio::sync::mpsc::channel(1).1
    }
}

/// A request as bytes: method, then path, authorization, fetch site and
/// body, separated by 0xFF.
fn web_requests() -> BoxedStrategy<Vec<u8>> {
    let path = prop_oneof![
        select(vec![
            "/",
            "/app.js",
            "/app.css",
            "/api/state",
            "/api/holds/12/decide",
            "/api/holds/12/kill",
            "/api/grants/1/revoke",
            "/api/holds/%2e%2e/decide",
            "/api/grants/99999999999/revoke",
            "/api/holds//decide",
        ])
        .prop_map(String::from),
        "/[a-z0-9/%._-]{0,40}",
    ];
    let auth = prop_oneof![
        Just(format!("Bearer {TOKEN}")),
        Just("Bearer ".to_owned()),
        ".{0,40}",
    ];
    let body = prop_oneof![
        Just(r#"{"approve":true}"#.to_owned()),
        Just(
            r#"{"approve":false,"reason":"no","scope":"subtree","for_secs":60,"path":"/x"}"#
                .to_owned()
        ),
        ".{0,80}",
    ];
    (
        select(vec!["GET", "POST", "PUT", "DELETE"]),
        path,
        auth,
        select(vec!["same-origin", "cross-site", "same-site", "none", ""]),
        body,
    )
        .prop_map(|(m, p, a, s, b)| {
            [m, p.as_str(), a.as_str(), s, b.as_str()]
                .join("\u{ff}")
                .into_bytes()
        })
        .boxed()
}

#[test]
fn fuzz_web_requests() {
    use axum::http::{Request, header};
    use tower::ServiceExt as _;

    let rt = runtime();
    let tokens = Arc::new(web::Tokens::parse("fuzz", &format!("alice:{TOKEN}\n")).unwrap());
    let (router, _recent) = web::router(Arc::new(Stub), tokens);
    let seeds = corpus("web");
    let inputs = prop_oneof![mutated(seeds), web_requests()].boxed();
    fuzz("web", inputs, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let mut parts = text.split('\u{ff}');
        let method = parts.next().unwrap_or("GET");
        let path = parts.next().unwrap_or("/");
        let auth = parts.next().unwrap_or("");
        let site = parts.next().unwrap_or("");
        let body = parts.next().unwrap_or("").to_owned();
        let mut req = Request::builder().method(method).uri(path);
        for (name, value) in [
            (header::AUTHORIZATION.as_str(), auth),
            ("sec-fetch-site", site),
            (header::CONTENT_TYPE.as_str(), "application/json"),
        ] {
            if !value.is_empty() {
                req = req.header(name, value);
            }
        }
        // Not a request hyper would hand us (a bad method, URI or header).
        let Ok(mut req) = req.body(axum::body::Body::from(body)) else {
            return;
        };
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                4242,
            ))));
        let resp = rt.block_on(router.clone().oneshot(req)).unwrap();
        assert!(
            resp.status().as_u16() < 500,
            "{method} {path}: {}",
            resp.status()
        );
        assert!(
            resp.headers().contains_key(header::CONTENT_SECURITY_POLICY),
            "every response carries the page's CSP"
        );
    });
}

// ----- the policy parser -----

fn policy_texts() -> BoxedStrategy<Vec<u8>> {
    let key = select(vec![
        "name",
        "owner",
        "purpose",
        "cgroup",
        "mode",
        "default",
        "allow",
        "ask",
        "deny",
        "approvers",
        "readers",
        "runners",
        "labels",
        "listen",
        "tokens_file",
        "path",
        "type",
        "approval_timeout_secs",
        "on_remove",
        "accept_observe_only",
        "max_bytes",
    ]);
    let value = prop_oneof![
        Just("\"agent-guard/x\"".to_owned()),
        Just("[\"10.0.0.0/8:443\", \"[::1]:*\", \"/srv/data\"]".to_owned()),
        Just("{ uids = [0], groups = [\"a\"] }".to_owned()),
        "-?[0-9]{1,20}",
        "\"[ -~]{0,30}\"",
        "\\[\"[ -~]{0,20}\"\\]",
    ];
    let table = select(vec![
        "[daemon]",
        "[[agent]]",
        "[agent.connect]",
        "[agent.delete]",
        "[web]",
        "[[sink]]",
        "[[notify]]",
        "[metrics]",
    ]);
    prop::collection::vec((table, prop::collection::vec((key, value), 0..6)), 0..6)
        .prop_map(|tables| {
            let mut text = String::new();
            for (t, kv) in tables {
                text.push_str(t);
                text.push('\n');
                for (k, v) in kv {
                    text.push_str(&format!("{k} = {v}\n"));
                }
            }
            text.into_bytes()
        })
        .boxed()
}

#[test]
fn fuzz_policy_parser() {
    let seeds = corpus("policy");
    let inputs = prop_oneof![mutated(seeds), policy_texts()].boxed();
    fuzz("policy", inputs, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        match policy::parse("fuzz.toml", &text) {
            // Errors name the place.
            Err(err) => assert!(err.to_string().starts_with("fuzz.toml:"), "{err}"),
            // What parses compiles to map entries.
            Ok(p) => {
                for (i, agent) in p.agents.iter().enumerate() {
                    let id = i as u32 + 1;
                    let _ = policy::compile_net(id, &agent.connect);
                    let _ = policy::compile_path(id, &agent.delete);
                    let _ = policy::agent_entry(id, agent);
                }
            }
        }
    });
}

// ----- the kernel-record decoder -----

fn registry() -> registry::Registry {
    let policy = policy::parse("fuzz.toml", policy::DEFAULT_POLICY).unwrap();
    let mut r = registry::Registry::new(policy.clone());
    for (i, def) in policy.agents.iter().enumerate() {
        let id = i as u32 + 1;
        r.agents.insert(
            id,
            registry::AgentState {
                agent_id: id,
                def: def.clone(),
                cgroup_dir: "/nonexistent".into(),
                cgroup_id: 7,
                created: false,
                frozen: false,
            },
        );
    }
    r
}

/// Records with a plausible header (a known kind, agent 0-2) and any body.
fn records() -> BoxedStrategy<Vec<u8>> {
    let kinds: Vec<u16> = EventKind::ALL
        .iter()
        .map(|k| k.raw())
        .chain([0, 999])
        .collect();
    let sizes = select(vec![
        size_of::<EventHeader>(),
        size_of::<ConnectRecord>(),
        size_of::<FileRecord>(),
        size_of::<ObservedDeleteRecord>(),
        0,
        7,
    ]);
    (
        select(kinds),
        0..3u32,
        sizes,
        prop::collection::vec(any::<u8>(), 600),
    )
        .prop_map(|(kind, agent, len, mut bytes)| {
            bytes[0..2].copy_from_slice(&kind.to_ne_bytes());
            bytes[4..8].copy_from_slice(&agent.to_ne_bytes());
            // A pid nobody has: details come from the record alone.
            bytes[40..44].copy_from_slice(&u32::MAX.to_ne_bytes());
            bytes.truncate(len);
            bytes
        })
        .boxed()
}

#[test]
fn fuzz_kernel_record_decoder() {
    let registry = registry();
    let clock = decode::BootClock::new();
    let mut enricher = Enricher::default();
    let seeds = corpus("decode");
    let inputs = prop_oneof![mutated(seeds), records()].boxed();
    let enricher = std::sync::Mutex::new(&mut enricher);
    fuzz("decode", inputs, |bytes| {
        let mut e = enricher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Ok(record) = decode::decode(bytes, &clock) else {
            return;
        };
        if let Some(call) = attribute::kernel_call(record, &registry, &mut e) {
            let event = Event::Call(call);
            let body = serde_json::to_value(&event).unwrap();
            assert_eq!(body["kind"], event.kind(), "{body:?}");
            assert_eq!(body["outcome"], event.outcome(), "{body:?}");
        }
    });
}
