//! Serving the control socket. Each connection is a conversation of JSON
//! lines; malformed input gets an error reply and never ends the daemon.
use std::{
    fs,
    io::Read as _,
    os::{fd::OwnedFd, unix::fs::PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream, unix::UCred},
};

use super::{
    Shared,
    approvals::{ScopeRequest, decide, kill, revoke},
    deletes::SessionDecider,
    registry::SessionState,
};
use crate::{
    cgroup,
    control::{Envelope, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request},
    events, supervise,
};

/// How long a closed session stays known for attributing records still in
/// the ring buffer.
const SESSION_LINGER: Duration = Duration::from_secs(2);

/// Binds the socket. A leftover socket file from a dead daemon is replaced;
/// a live daemon on the same path is an error, not a takeover.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another agent-guard daemon is already serving {}; stop it or pass --socket",
                path.display()
            );
        }
        fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    // Anyone may connect; each request is authorized from SO_PEERCRED.
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
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

/// Per-connection state: at most one session, owned by this connection.
#[derive(Default)]
struct Conversation {
    session: Option<u64>,
    closed: bool,
}

async fn handle(stream: UnixStream, shared: Arc<Shared>) -> Result<()> {
    let cred = stream.peer_cred().context("SO_PEERCRED")?;
    let mut conv = Conversation::default();
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
        close_session(&shared, cgroup_id, None, None, "control connection lost");
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
    conv: &mut Conversation,
) -> Reply {
    let result = match request {
        Request::SessionOpen {
            agent,
            on_behalf_of,
            argv,
        } => open_session(shared, conv, cred, &agent, on_behalf_of, argv),
        Request::SessionJoin { session, token } => join(shared, cred, &session, &token, fds),
        Request::SessionClose { exit_code, signal } => match conv.session {
            Some(id) if !conv.closed => {
                conv.closed = true;
                close_session(shared, id, exit_code, signal, "exited");
                Ok(json!({}))
            }
            _ => Err(anyhow::anyhow!("no open session on this connection")),
        },
        Request::Status {} => Ok(status(shared)),
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
            cred,
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
        Request::Revoke { id } => revoke(shared, cred, id),
        Request::Kill { hold, agent } => kill(shared, cred, hold, agent),
    };
    match result {
        Ok(data) => Reply::ok(data),
        Err(err) => Reply::err(format!("{err:#}")),
    }
}

fn random_id() -> Result<String> {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn open_session(
    shared: &Shared,
    conv: &mut Conversation,
    cred: &UCred,
    agent: &str,
    on_behalf_of: Option<String>,
    argv: Vec<String>,
) -> Result<serde_json::Value> {
    if conv.session.is_some() {
        bail!("this connection already has a session");
    }
    let mut registry = shared
        .registry
        .write()
        .map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
    let Some(state) = registry.agent_by_name(agent) else {
        bail!(
            "unknown agent {agent:?}; the policy declares: {}",
            registry.agent_names().join(", ")
        );
    };
    if !super::approvals::is_member(&state.def.runners, cred) {
        let user = super::approvals::user_name(cred);
        events::emit_now(
            &shared.emitter,
            json!({"kind": "control.refused", "outcome": "denied",
                   "control": {"op": "run", "agent": agent,
                               "by": {"uid": cred.uid(), "pid": cred.pid(), "user": user},
                               "reason": "not a runner of this agent ([[agent]] runners)"}}),
        );
        bail!(
            "uid {} ({user}) may not start runs of agent {agent:?}; see `runners` in its \
             [[agent]] table",
            cred.uid()
        );
    }
    let opener_pid = cred.pid().context("peer pid unknown")? as u32;
    let id = random_id()?;
    let token = random_id()?;
    let dir: PathBuf = state.cgroup_dir.join(format!("run-{id}"));
    fs::create_dir(&dir).with_context(|| format!("creating session cgroup {}", dir.display()))?;
    let cgroup_id = cgroup::id(&dir)?;
    let agent_id = state.agent_id;
    let relative = format!("{}/run-{id}", state.def.cgroup);
    registry.sessions.insert(
        cgroup_id,
        SessionState {
            id: id.clone(),
            agent_id,
            dir,
            on_behalf_of,
            argv,
            token: token.clone(),
            opener_pid,
            opener_uid: cred.uid(),
            supervised: shared.supervise_deletes,
        },
    );
    conv.session = Some(cgroup_id);
    Ok(json!({
        "session": id,
        "token": token,
        "cgroup": relative,
        "supervise_deletes": shared.supervise_deletes,
    }))
}

/// Moves the calling process (identified by SO_PEERCRED, not by anything it
/// says) into the session. It must hold the session's token and be a direct
/// child of the launcher that opened it, so nobody can move strangers.
fn join(
    shared: &Arc<Shared>,
    cred: &UCred,
    session_id: &str,
    token: &str,
    mut fds: Vec<OwnedFd>,
) -> Result<serde_json::Value> {
    let pid = cred.pid().context("peer pid unknown")? as u32;
    let registry = shared
        .registry
        .read()
        .map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
    let Some((&cgroup_id, session)) = registry.sessions.iter().find(|(_, s)| s.id == session_id)
    else {
        bail!("no session {session_id:?}");
    };
    if session.token != token {
        bail!("wrong token for session {session_id}");
    }
    let ppid = super::lock_enricher(shared).details(pid).ppid;
    if ppid != Some(session.opener_pid) {
        bail!(
            "pid {pid} is not a child of the launcher (pid {})",
            session.opener_pid
        );
    }
    // Fail closed: a run that must be supervised does not start without
    // its listener.
    let listener = match (session.supervised, fds.len()) {
        (true, 1) => fds.pop(),
        (true, n) => {
            bail!("this run needs delete supervision; expected its seccomp listener, got {n} fds")
        }
        (false, 0) => None,
        (false, n) => bail!("unexpected {n} fds with the join request"),
    };
    cgroup::move_pid(&session.dir, pid)?;
    if let Some(listener) = listener {
        let decider = Arc::new(SessionDecider::new(
            shared.clone(),
            session.agent_id,
            cgroup_id,
        ));
        let id = session.id.clone();
        tokio::spawn(async move {
            match supervise::supervise(listener, decider).await {
                Ok(()) => {
                    tracing::debug!(session = %id, "delete supervision ended: no process left")
                }
                Err(err) => tracing::error!(
                    session = %id, %err,
                    "delete supervision failed; the run's deletes now fail (ENOSYS)"
                ),
            }
        });
    }
    let agent = registry.agent_ref(session.agent_id, cgroup_id);
    let (user, group) = {
        let mut e = super::lock_enricher(shared);
        (e.user(cred.uid()), e.group(cred.gid()))
    };
    events::emit_now(
        &shared.emitter,
        json!({
            "kind": "agent.start",
            "outcome": "success",
            "agent": agent,
            "process": {"pid": pid, "ppid": session.opener_pid, "uid": cred.uid(),
                        "gid": cred.gid(), "user": user, "group": group,
                        "cmdline": session.argv},
            "session": {"id": session.id, "started_by": {"pid": session.opener_pid,
                        "uid": session.opener_uid}},
        }),
    );
    Ok(json!({}))
}

fn close_session(
    shared: &Arc<Shared>,
    cgroup_id: u64,
    exit_code: Option<i32>,
    signal: Option<i32>,
    why: &str,
) {
    let (agent, dir, id) = {
        let registry = match shared.registry.read() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(session) = registry.sessions.get(&cgroup_id) else {
            return;
        };
        (
            registry.agent_ref(session.agent_id, cgroup_id),
            session.dir.clone(),
            session.id.clone(),
        )
    };
    events::emit_now(
        &shared.emitter,
        json!({
            "kind": "agent.exit",
            "outcome": "success",
            "agent": agent,
            "session": {"id": id, "exit_code": exit_code, "signal": signal, "reason": why},
        }),
    );
    // The run's processes are gone or going: their cached details with them.
    super::lock_enricher(shared).sweep();
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        // Processes the command left behind keep the session (and its
        // attribution) alive; only an empty session is removed.
        if cgroup::populated(&dir).unwrap_or(false) {
            tracing::info!(session = %id, "run ended but processes remain in its cgroup; keeping it");
            return;
        }
        if let Err(err) = cgroup::remove(&dir) {
            tracing::warn!(%err, "session cgroup left in place");
            return;
        }
        std::thread::sleep(SESSION_LINGER);
        if let Ok(mut registry) = shared.registry.write() {
            registry.sessions.remove(&cgroup_id);
        }
    });
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
