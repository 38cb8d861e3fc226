//! Serving the control socket. Each connection is a conversation of JSON
//! lines; malformed input gets an error reply and never ends the daemon.
//!
//! Anyone may connect (the socket is 0666); what a caller may do is decided
//! per request from its process as it is then (`access`). Connections are
//! bounded in number (`limits`) and in idle time: the first request must
//! come within [`FIRST_LINE`], later ones within [`IDLE`] unless the
//! connection carries a run's session or the event stream, and a reply
//! nobody reads is given up after [`WRITE`].
use std::{os::fd::AsFd as _, os::fd::OwnedFd, path::Path, sync::Arc, time::Duration};

use anyhow::Result;
use guard_host::peer::Peer;
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};

use super::{
    Shared,
    access::{Caller, Need, Place},
    admin,
    approvals::{ScopeRequest, decide, kill, revoke},
    limits::{Limits, Pool, Slot},
    sessions,
};
use crate::{
    control::{Envelope, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request},
    events::{
        self,
        model::{Refusal, Subject},
    },
    supervise,
};

/// The first request line must arrive within this.
pub const FIRST_LINE: Duration = Duration::from_secs(10);
/// Later lines, on a connection without a session or stream.
pub const IDLE: Duration = Duration::from_secs(60);
/// A reply that cannot be written within this ends the connection.
const WRITE: Duration = Duration::from_secs(10);
/// File descriptors a request may carry: a run's seccomp listener.
const MAX_PASSED_FDS: usize = 1;

/// Binds the socket. A leftover socket file from a dead daemon is replaced;
/// a live daemon on the same path is an error, not a takeover.
pub fn bind(path: &Path) -> Result<UnixListener> {
    // Anyone may connect; each request is authorized from its peer.
    crate::unix_socket::bind(path, 0o666, |path| {
        format!(
            "another agent-guard daemon is already serving {}; stop it or pass --socket",
            path.display()
        )
    })
}

/// Admits readers to the unix event sinks, as `events --follow` is.
pub struct SinkGate {
    pub shared: Arc<Shared>,
    pub limits: Arc<Limits>,
}

impl events::sinks::stream::Gate for SinkGate {
    fn admit(&self, stream: &UnixStream, sink: &str) -> Option<Box<dyn Send>> {
        let (_, caller, slot) = admit(&self.shared, &self.limits, stream, sink)?;
        let subject = Some(Subject::Target(sink.into()));
        if let Err(err) = caller.require(&self.shared, Need::Reader, "subscribe", subject) {
            say_once(stream, &format!("{err:#}"));
            return None;
        }
        Some(Box::new(slot))
    }
}

/// An error reply to a connection about to be closed, written once without
/// waiting: a peer that does not read loses it.
fn say_once(stream: &UnixStream, error: &str) {
    if let Ok(mut line) = serde_json::to_vec(&Reply::err(error)) {
        line.push(b'\n');
        let _ = stream.try_write(&line);
    }
}

/// Identifies a new connection's peer and takes a slot for it, or refuses
/// it (a rate-limited `control.refused` event, op `connect`).
pub fn admit(
    shared: &Shared,
    limits: &Arc<Limits>,
    stream: &UnixStream,
    socket: &str,
) -> Option<(Peer, Caller, Slot)> {
    let peer = match Peer::of(stream.as_fd()) {
        Ok(peer) => peer,
        Err(err) => {
            tracing::debug!(%err, socket, "connection from an unidentifiable peer dropped");
            return None;
        }
    };
    let caller = Caller::of_peer(&shared.registry(), &peer);
    let pool = if caller.is_approver(&shared.registry().policy) {
        Pool::Operator
    } else {
        Pool::General
    };
    match limits.admit(&caller.source(), pool) {
        Ok(slot) => Some((peer, caller, slot)),
        Err(full) => {
            let reason = format!("connection refused: {full}");
            say_once(stream, &reason);
            shared.refusals.report(
                &caller.source(),
                Refusal::new("connect", caller.peer(), reason)
                    .about(Some(Subject::Target(socket.into()))),
            );
            None
        }
    }
}

pub async fn serve(listener: Arc<UnixListener>, shared: Arc<Shared>, limits: Arc<Limits>) {
    crate::unix_socket::accept_loop(&listener, "control", |stream| {
        let Some((peer, _, slot)) = admit(&shared, &limits, &stream, "control") else {
            return;
        };
        let (shared, limits) = (shared.clone(), limits.clone());
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(err) = handle(stream, peer, shared, &limits).await {
                tracing::debug!(%err, "control connection ended with an error");
            }
        });
    })
    .await;
}

async fn handle(
    stream: UnixStream,
    peer: Peer,
    shared: Arc<Shared>,
    limits: &Limits,
) -> Result<()> {
    let mut conv = sessions::Conversation::default();
    // The first message may carry a file descriptor (a run's seccomp
    // listener rides on its join request), so it is read with recvmsg.
    // It stops at the first newline, leaving later lines for the reader.
    let mut stream = stream;
    let first = tokio::time::timeout(
        FIRST_LINE,
        supervise::recv_with_fds(&stream, MAX_REQUEST_BYTES + 1, MAX_PASSED_FDS),
    )
    .await;
    let (first, fds) = match first {
        Err(_) => return Ok(()), // silent for FIRST_LINE: hang up
        Ok(Ok(first)) => first,
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::InvalidData => {
            let reply = Reply::err(format!("malformed request: {err}"));
            send(&mut stream, &reply).await?;
            return Ok(());
        }
        Ok(Err(err)) => return Err(err.into()),
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = first;
    let mut fds = Some(fds);
    loop {
        if line.is_empty() {
            break;
        }
        if line.len() > MAX_REQUEST_BYTES {
            // Cannot resynchronise inside an over-long line: answer and hang up.
            let reply = Reply::err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
            send(&mut write, &reply).await?;
            break;
        }
        // Judged per request: a process may have moved since the last one.
        let caller = Caller::of_peer(&shared.registry(), &peer);
        let reply = match Envelope::parse(&line) {
            Ok(Envelope {
                v: PROTOCOL_VERSION,
                request: Request::Subscribe { agent },
            }) => {
                let subject = agent.clone().map(Subject::Agent);
                match caller.require(&shared, Need::Reader, "subscribe", subject) {
                    Ok(()) => return stream_events(&shared, agent, write).await,
                    Err(err) => Reply::err(format!("{err:#}")),
                }
            }
            Err(err) => Reply::err(format!("malformed request: {err}")),
            Ok(env) if env.v != PROTOCOL_VERSION => Reply::err(format!(
                "unsupported protocol version {} (this daemon speaks {PROTOCOL_VERSION})",
                env.v
            )),
            Ok(env) => dispatch(
                env.request,
                fds.take().unwrap_or_default(),
                &caller,
                (&shared, limits),
                &mut conv,
            ),
        };
        send(&mut write, &reply).await?;
        line = Vec::new();
        let mut bounded = (&mut reader).take(MAX_REQUEST_BYTES as u64 + 1);
        let next = bounded.read_until(b'\n', &mut line);
        if conv.session.is_some() {
            // A run's launcher keeps its connection for the whole run.
            next.await?;
        } else if tokio::time::timeout(IDLE, next).await.is_err() {
            break;
        }
    }
    if let (Some(cgroup_id), false) = (conv.session, conv.closed) {
        sessions::close(&shared, cgroup_id, None, None, "control connection lost");
    }
    Ok(())
}

/// From here on the connection carries the event stream.
async fn stream_events(
    shared: &Shared,
    agent: Option<String>,
    mut write: tokio::net::unix::OwnedWriteHalf,
) -> Result<()> {
    let mut rx = events::with(&shared.emitter, |e| {
        e.subscribe(
            "control",
            agent,
            crate::policy::sink::Format::V1,
            events::sinks::stream::SUBSCRIBER_QUEUE,
        )
    });
    send(&mut write, &Reply::ok(json!({}))).await?;
    // A reader that stops reading keeps its place (a paused terminal is
    // not an attack; the caps bound how many): its bounded queue drops
    // what it cannot take, and the drops are reported as losses.
    while let Some(line) = rx.recv().await {
        if write.write_all(&line.bytes).await.is_err() {
            break;
        }
    }
    Ok(())
}

async fn send(write: &mut (impl tokio::io::AsyncWrite + Unpin), reply: &Reply) -> Result<()> {
    let mut bytes = serde_json::to_vec(reply)?;
    bytes.push(b'\n');
    tokio::time::timeout(WRITE, write.write_all(&bytes))
        .await
        .map_err(|_| anyhow::anyhow!("the peer does not read its replies"))??;
    Ok(())
}

fn dispatch(
    request: Request,
    fds: Vec<OwnedFd>,
    who: &Caller,
    (shared, limits): (&Arc<Shared>, &Limits),
    conv: &mut sessions::Conversation,
) -> Reply {
    let result = match request {
        Request::SessionOpen {
            agent,
            on_behalf_of,
            argv,
        } => sessions::open(shared, conv, who, &agent, on_behalf_of, argv),
        Request::SessionJoin { session, token } => {
            sessions::join(shared, who, &session, &token, fds)
        }
        Request::SessionResume { session, token } => {
            sessions::resume(shared, conv, who, &session, &token, fds)
        }
        Request::SessionClose { exit_code, signal } => match conv.session {
            Some(id) if !conv.closed => {
                conv.closed = true;
                sessions::close(shared, id, exit_code, signal, "exited");
                Ok(json!({}))
            }
            _ => Err(anyhow::anyhow!("no open session on this connection")),
        },
        Request::Status {} => who
            .require(shared, Need::Reader, "status", None)
            .map(|()| status(shared, limits)),
        Request::Reload { force } => admin::reload(shared, who, force),
        Request::Agents {} => admin::agents(shared, who),
        Request::SetMode {
            agent,
            freeze,
            reason,
        } => admin::set_mode(shared, who, &agent, freeze, reason),
        Request::Pending {} => pending(shared, who),
        Request::Decide {
            id,
            approve,
            reason,
            scope,
            for_secs,
            path,
        } => decide(
            shared,
            who,
            &id,
            approve,
            reason,
            ScopeRequest {
                scope,
                for_secs,
                path,
            },
        ),
        Request::Grants {} => who
            .require(shared, Need::Reader, "grants", None)
            .map(|()| json!({ "grants": shared.grants.list() })),
        // Handled before dispatch: it takes over the connection.
        Request::Subscribe { .. } => Err(anyhow::anyhow!("subscribe must be the request's own")),
        Request::Revoke { id } => revoke(shared, who, id),
        Request::Kill { hold, agent } => kill(shared, who, hold, agent),
    };
    match result {
        Ok(data) => Reply::ok(data),
        Err(err) => Reply::err(format!("{err:#}")),
    }
}

/// Held calls: all of them for readers; an agent's own only, for a caller
/// inside that agent, so that it can tell its user what waits.
fn pending(shared: &Shared, who: &Caller) -> Result<serde_json::Value> {
    let holds = shared.holds.pending();
    if let Place::Agent(agent) = &who.place {
        let own: Vec<_> = holds
            .into_iter()
            .filter(|h| h["agent"].as_str() == Some(agent.as_str()))
            .collect();
        return Ok(json!({ "holds": own, "agent": agent }));
    }
    who.require(shared, Need::Reader, "pending", None)?;
    Ok(json!({ "holds": holds }))
}

fn status(shared: &Shared, limits: &Limits) -> serde_json::Value {
    let registry = shared.registry();
    let (general, operator) = limits.in_use();
    let mut out = json!({
        "connections": {
            "general": {"open": general, "cap": limits.general},
            "operators": {"open": operator, "cap": limits.operator},
            "per_caller_cap": limits.per_source,
        },
        "pid": std::process::id(),
        "policy": registry.policy.file,
        "agents": registry.agent_names(),
        "sessions": registry.sessions.len(),
        "held": shared.holds.count(),
        // Exhausted budgets (agent.budget events) since the daemon started.
        "budget_hits": shared.budgets.hits(),
        "uptime_secs": shared.started.elapsed().as_secs(),
    });
    drop(registry);
    if let (serde_json::Value::Object(out), serde_json::Value::Object(stream)) =
        (&mut out, events::with(&shared.emitter, |e| e.status()))
    {
        out.extend(stream);
    }
    out
}
