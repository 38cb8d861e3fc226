//! Serving the control socket. Each connection is a conversation of JSON
//! lines; malformed input gets an error reply and never ends the daemon.
use std::{os::fd::OwnedFd, path::Path, sync::Arc};

use anyhow::{Context as _, Result};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream, unix::UCred},
};

use super::{
    Shared, admin,
    approvals::{Approver, ScopeRequest, decide, kill, revoke},
    sessions,
};
use crate::{
    control::{Envelope, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request},
    events, supervise,
};

/// Binds the socket. A leftover socket file from a dead daemon is replaced;
/// a live daemon on the same path is an error, not a takeover.
pub fn bind(path: &Path) -> Result<UnixListener> {
    // Anyone may connect; each request is authorized from SO_PEERCRED.
    crate::unix_socket::bind(path, 0o666, |path| {
        format!(
            "another agent-guard daemon is already serving {}; stop it or pass --socket",
            path.display()
        )
    })
}

pub async fn serve(listener: UnixListener, shared: Arc<Shared>) -> Result<()> {
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .context("accepting on control socket")?;
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(err) = handle(stream, shared).await {
                tracing::warn!(%err, "control connection ended with an error");
            }
        });
    }
}

async fn handle(stream: UnixStream, shared: Arc<Shared>) -> Result<()> {
    let cred = stream.peer_cred().context("SO_PEERCRED")?;
    let mut conv = sessions::Conversation::default();
    // The first message may carry a file descriptor (a run's seccomp
    // listener rides on its join request), so it is read with recvmsg.
    // It stops at the first newline, leaving later lines for the reader.
    let mut stream = stream;
    let (first, fds) = match supervise::recv_with_fds(&stream, MAX_REQUEST_BYTES + 1).await {
        Ok(first) => first,
        Err(err) if err.kind() == std::io::ErrorKind::InvalidData => {
            let reply = Reply::err(format!("malformed request: {err}"));
            send(&mut stream, &reply).await?;
            return Ok(());
        }
        Err(err) => return Err(err.into()),
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
        let reply = match Envelope::parse(&line) {
            Ok(Envelope {
                v: PROTOCOL_VERSION,
                request: Request::Subscribe { agent },
            }) => {
                // From here on this connection carries the event stream.
                let mut rx = events::with(&shared.emitter, |e| {
                    e.subscribe(
                        "control",
                        agent,
                        crate::policy::sink::Format::V1,
                        events::sinks::stream::SUBSCRIBER_QUEUE,
                    )
                });
                send(&mut write, &Reply::ok(json!({}))).await?;
                while let Some(line) = rx.recv().await {
                    if write.write_all(&line.bytes).await.is_err() {
                        break;
                    }
                }
                return Ok(());
            }
            Err(err) => Reply::err(format!("malformed request: {err}")),
            Ok(env) if env.v != PROTOCOL_VERSION => Reply::err(format!(
                "unsupported protocol version {} (this daemon speaks {PROTOCOL_VERSION})",
                env.v
            )),
            Ok(env) => dispatch(
                env.request,
                fds.take().unwrap_or_default(),
                &cred,
                &shared,
                &mut conv,
            ),
        };
        send(&mut write, &reply).await?;
        line = Vec::new();
        (&mut reader)
            .take(MAX_REQUEST_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
    }
    if let (Some(cgroup_id), false) = (conv.session, conv.closed) {
        sessions::close(&shared, cgroup_id, None, None, "control connection lost");
    }
    Ok(())
}

async fn send(write: &mut (impl tokio::io::AsyncWrite + Unpin), reply: &Reply) -> Result<()> {
    let mut bytes = serde_json::to_vec(reply)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    Ok(())
}

fn dispatch(
    request: Request,
    fds: Vec<OwnedFd>,
    cred: &UCred,
    shared: &Arc<Shared>,
    conv: &mut sessions::Conversation,
) -> Reply {
    let result = match request {
        Request::SessionOpen {
            agent,
            on_behalf_of,
            argv,
        } => sessions::open(shared, conv, cred, &agent, on_behalf_of, argv),
        Request::SessionJoin { session, token } => {
            sessions::join(shared, cred, &session, &token, fds)
        }
        Request::SessionResume { session, token } => {
            sessions::resume(shared, conv, cred, &session, &token, fds)
        }
        Request::SessionClose { exit_code, signal } => match conv.session {
            Some(id) if !conv.closed => {
                conv.closed = true;
                sessions::close(shared, id, exit_code, signal, "exited");
                Ok(json!({}))
            }
            _ => Err(anyhow::anyhow!("no open session on this connection")),
        },
        Request::Status {} => Ok(status(shared)),
        Request::Reload { force } => admin::reload(shared, cred, force),
        Request::Agents {} => Ok(admin::agents(shared)),
        Request::SetMode {
            agent,
            freeze,
            reason,
        } => admin::set_mode(shared, cred, &agent, freeze, reason),
        Request::Pending {} => Ok(json!({ "holds": shared.holds.pending() })),
        Request::Decide {
            id,
            approve,
            reason,
            scope,
            for_secs,
            path,
        } => decide(
            shared,
            &Approver::Peer(*cred),
            &id,
            approve,
            reason,
            ScopeRequest {
                scope,
                for_secs,
                path,
            },
        ),
        Request::Grants {} => Ok(json!({ "grants": shared.grants.list() })),
        // Handled before dispatch: it takes over the connection.
        Request::Subscribe { .. } => Err(anyhow::anyhow!("subscribe must be the request's own")),
        Request::Revoke { id } => revoke(shared, &Approver::Peer(*cred), id),
        Request::Kill { hold, agent } => kill(shared, &Approver::Peer(*cred), hold, agent),
    };
    match result {
        Ok(data) => Reply::ok(data),
        Err(err) => Reply::err(format!("{err:#}")),
    }
}

fn status(shared: &Shared) -> serde_json::Value {
    let registry = match shared.registry.read() {
        Ok(r) => r,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut out = json!({
        "pid": std::process::id(),
        "policy": registry.policy.file,
        "agents": registry.agent_names(),
        "sessions": registry.sessions.len(),
        "held": shared.holds.count(),
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
