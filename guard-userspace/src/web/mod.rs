//! The web approval page (`[web]`): static HTML, JS and CSS under a strict
//! Content-Security-Policy, and a small JSON API behind a bearer token.
//! Decisions go through the same functions as the control socket
//! ([`crate::daemon::approvals`]); the approver is the token's user.
//!
//! CSRF: the token travels only in an `Authorization` header that the
//! page's script sets (no cookies), which a cross-site form or script cannot
//! send without a CORS preflight this server never grants; POSTs also need
//! a JSON body and are refused when the browser marks them cross-site.
mod tokens;

use std::{collections::VecDeque, net::SocketAddr, sync::Arc};

use parking_lot::Mutex;

use anyhow::{Context as _, Result};
use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

pub use tokens::Tokens;

use crate::{
    daemon::{access::Caller, approvals::ScopeRequest},
    events::{
        Event, Stamped,
        model::{DaemonEvent, Peer, Refusal, Via},
    },
};

/// What the page needs of the daemon, and nothing more: the held calls
/// and grants to show, the one decision path every surface shares, and
/// where refusals and decisions go. The daemon implements it
/// (`daemon::surfaces`); tests and the fuzz tier drive the page with
/// their own.
pub trait Backend: Send + Sync + 'static {
    fn pending(&self) -> Vec<Value>;
    fn grants(&self) -> Vec<Value>;
    /// Each agent with a budget: its use (used/limit per window).
    fn budgets(&self) -> Vec<Value>;
    fn decide(
        &self,
        who: &Caller,
        id: &str,
        approve: bool,
        reason: Option<String>,
        scope: ScopeRequest,
    ) -> Result<Value>;
    fn kill(&self, who: &Caller, hold: String) -> Result<Value>;
    fn revoke(&self, who: &Caller, grant: u32) -> Result<Value>;
    /// Reports a refused request (rate-limited per `source`).
    fn refuse(&self, source: &str, control: Refusal);
    /// The typed event stream, from now on (for the page's recent
    /// decisions).
    fn events(&self) -> tokio::sync::mpsc::Receiver<std::sync::Arc<Stamped>>;
}

/// Decisions kept for the page's "recent decisions".
const RECENT: usize = 50;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

struct App {
    backend: Arc<dyn Backend>,
    tokens: Arc<Tokens>,
    recent: Mutex<VecDeque<Value>>,
}

/// Serves the page on `listener` until the daemon stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    backend: Arc<dyn Backend>,
    tokens: Arc<Tokens>,
) -> Result<()> {
    let (router, recent) = router(backend, tokens);
    let follow = tokio::spawn(recent);
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .context("serving [web]");
    follow.abort();
    served
}

/// The page's routes, and the task that keeps its recent decisions (to be
/// spawned beside it). Requests need a `ConnectInfo<SocketAddr>`.
pub fn router(
    backend: Arc<dyn Backend>,
    tokens: Arc<Tokens>,
) -> (
    Router,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Arc::new(App {
        backend,
        tokens,
        recent: Mutex::new(VecDeque::with_capacity(RECENT)),
    });
    let recent = follow_decisions(app.clone());
    let router = Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/api/state", get(state))
        .route("/api/holds/{id}/decide", post(decide))
        .route("/api/holds/{id}/kill", post(kill))
        .route("/api/grants/{id}/revoke", post(revoke))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(app);
    (router, recent)
}

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn secure_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Keeps the last decisions, from the event stream. Subscribes at once,
/// so no decision after the router is built is missed.
fn follow_decisions(app: Arc<App>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let rx = app.backend.events();
    follow(app, rx)
}

async fn follow(app: Arc<App>, mut rx: tokio::sync::mpsc::Receiver<Arc<Stamped>>) {
    while let Some(stamped) = rx.recv().await {
        let Event::Daemon(DaemonEvent::HoldDecision(d)) = &stamped.event else {
            continue;
        };
        let entry = json!({
            "time": humantime::format_rfc3339_nanos(stamped.time).to_string(),
            "hold": d.hold.id,
            "agent": d.agent.known().map(|a| &a.name),
            "target": d.op.target_json(),
            "decision": d.hold.decision,
            "by": d.hold.by.user,
            "reason": d.hold.reason,
            "scope": d.hold.scope,
        });
        let mut recent = app.recent.lock();
        if recent.len() == RECENT {
            recent.pop_back();
        }
        recent.push_front(entry);
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"ok": false, "error": message.into()}))).into_response()
}

/// The token's user, or the refusal to send. A wrong token is an event.
fn authorize(
    app: &App,
    headers: &HeaderMap,
    peer: SocketAddr,
    op: &str,
) -> Result<Caller, Box<Response>> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = presented.filter(|t| !t.is_empty()) else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "a token is required (Authorization: Bearer TOKEN)",
        )));
    };
    match app.tokens.user(token) {
        Some(user) => Ok(Caller::web(user.to_owned())),
        None => {
            let by = Peer {
                remote: Some(peer.to_string()),
                via: Some(Via::Web),
                ..Peer::default()
            };
            app.backend.refuse(
                &format!("web client {}", peer.ip()),
                Refusal::new(op, by, "unknown web token"),
            );
            Err(Box::new(error(StatusCode::UNAUTHORIZED, "token refused")))
        }
    }
}

/// A state-changing request must not be one a browser flagged cross-site.
fn same_origin(headers: &HeaderMap) -> Result<(), Box<Response>> {
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("cross-site" | "same-site") => Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "cross-site requests are refused",
        ))),
        _ => Ok(()),
    }
}

async fn state(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let who = match authorize(&app, &headers, peer, "web.view") {
        Ok(who) => who,
        Err(resp) => return *resp,
    };
    let user = who.user.clone();
    let recent: Vec<Value> = app.recent.lock().iter().cloned().collect();
    Json(json!({
        "ok": true,
        "user": user,
        "holds": app.backend.pending(),
        "grants": app.backend.grants(),
        "budgets": app.backend.budgets(),
        "decisions": recent,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    approve: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    for_secs: Option<u64>,
    #[serde(default)]
    path: Option<String>,
}

fn outcome(result: Result<Value>) -> Response {
    match result {
        Ok(data) => Json(json!({"ok": true, "result": data})).into_response(),
        Err(err) => error(StatusCode::CONFLICT, format!("{err:#}")),
    }
}

async fn decide(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<DecideBody>,
) -> Response {
    let op = if body.approve { "approve" } else { "deny" };
    let who = match same_origin(&headers).and_then(|()| authorize(&app, &headers, peer, op)) {
        Ok(who) => who,
        Err(resp) => return *resp,
    };
    let reason = body.reason.filter(|r| !r.trim().is_empty());
    outcome(app.backend.decide(
        &who,
        &id,
        body.approve,
        reason,
        ScopeRequest {
            scope: body.scope,
            for_secs: body.for_secs,
            path: body.path,
        },
    ))
}

async fn kill(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let who = match same_origin(&headers).and_then(|()| authorize(&app, &headers, peer, "kill")) {
        Ok(who) => who,
        Err(resp) => return *resp,
    };
    outcome(app.backend.kill(&who, id))
}

async fn revoke(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<u32>,
    headers: HeaderMap,
) -> Response {
    let who = match same_origin(&headers).and_then(|()| authorize(&app, &headers, peer, "revoke")) {
        Ok(who) => who,
        Err(resp) => return *resp,
    };
    outcome(app.backend.revoke(&who, id))
}
