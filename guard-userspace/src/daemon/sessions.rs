//! Runs of `agent-guard run` (sessions): opened by a launcher, joined by
//! its command before exec, resumed by the launcher after a daemon restart,
//! closed when the command ends.
//!
//! Sessions are persisted in `state_dir/sessions.json` (write, fsync,
//! rename), so a restarted daemon still attributes a run's events to it
//! and can take back its supervision: the launcher keeps a copy of the
//! run's seccomp listener and hands it to the successor (`SessionResume`),
//! which answers the calls its predecessor left waiting (see `journal`).
use std::{
    fs,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;

use super::{
    Shared,
    access::{Caller, Need},
    deletes::SessionDecider,
    journal::{self, NotifJournal},
    registry::{Registry, SessionState},
};
use crate::{
    cgroup,
    events::{
        self,
        model::{
            AgentExit, AgentStart, Cmdline, DaemonEvent, Launcher, Process, Refusal, RunEnded,
            RunStarted, Subject, Success,
        },
    },
    statefile::StateFile,
    supervise::{self, Resume},
};
use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How long a closed session stays known for attributing records still in
/// the ring buffer.
const SESSION_LINGER: Duration = Duration::from_secs(2);

/// Per-connection state: at most one session, owned by this connection.
#[derive(Default)]
pub struct Conversation {
    pub session: Option<u64>,
    pub closed: bool,
}

/// Where sessions are persisted; saves are serialized so the file always
/// holds the newest snapshot.
pub struct Store {
    file: StateFile<Vec<Saved>>,
    state_dir: PathBuf,
    saving: Mutex<()>,
}

/// A session as persisted. The agent is named, not numbered: numbers are
/// assigned per daemon start.
#[derive(Serialize, Deserialize)]
struct Saved {
    id: String,
    agent: String,
    dir: PathBuf,
    on_behalf_of: Option<String>,
    argv: Vec<String>,
    token: String,
    opener_pid: u32,
    opener_uid: u32,
    supervised: bool,
    #[serde(default)]
    allow_mounts: bool,
    #[serde(default)]
    allow_io_uring: bool,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            file: StateFile::new(state_dir.join("sessions.json")),
            state_dir: state_dir.to_owned(),
            saving: Mutex::new(()),
        }
    }

    /// Takes back the sessions a previous daemon left whose cgroup still
    /// exists and whose agent is still in the policy.
    pub fn load(&self, registry: &mut Registry) {
        let saved = match self.file.load() {
            Ok(saved) => saved.unwrap_or_default(),
            Err(err) => {
                tracing::error!(%err, "runs started before the restart lose their attribution");
                return;
            }
        };
        for s in saved {
            let Some(agent_id) = registry.agent_by_name(&s.agent).map(|a| a.agent_id) else {
                tracing::warn!(session = %s.id, agent = %s.agent, "a run of an agent no longer in the policy; not taken back");
                continue;
            };
            let Ok(cgroup_id) = cgroup::id(&s.dir) else {
                continue; // ended while no daemon was running
            };
            tracing::info!(session = %s.id, agent = %s.agent, "took back a run started before the restart");
            registry.sessions.insert(
                cgroup_id,
                SessionState {
                    id: s.id,
                    agent_id,
                    dir: s.dir,
                    on_behalf_of: s.on_behalf_of,
                    argv: s.argv,
                    token: s.token,
                    opener_pid: s.opener_pid,
                    opener_uid: s.opener_uid,
                    supervised: s.supervised,
                    filter: crate::supervise::FilterOptions {
                        allow_mounts: s.allow_mounts,
                        allow_io_uring: s.allow_io_uring,
                    },
                },
            );
        }
    }

    /// Writes the registry's sessions.
    pub fn save(&self, shared: &Shared) {
        let _saving = self.saving.lock();
        let list: Vec<Saved> = {
            let registry = shared.registry.read();
            registry
                .sessions
                .values()
                .filter_map(|s| {
                    Some(Saved {
                        id: s.id.clone(),
                        agent: registry.agents.get(&s.agent_id)?.def.name.clone(),
                        dir: s.dir.clone(),
                        on_behalf_of: s.on_behalf_of.clone(),
                        argv: s.argv.clone(),
                        token: s.token.clone(),
                        opener_pid: s.opener_pid,
                        opener_uid: s.opener_uid,
                        supervised: s.supervised,
                        allow_mounts: s.filter.allow_mounts,
                        allow_io_uring: s.filter.allow_io_uring,
                    })
                })
                .collect()
        };
        if let Err(err) = self.file.save(&list) {
            tracing::error!(%err, "saving sessions; a restart would lose their attribution");
        }
    }

    /// After a clean stop no launcher resumes (they see the socket gone and
    /// let their listener go), so nothing in flight can be answered later.
    pub fn forget_journals(&self) {
        let _ = fs::remove_dir_all(self.state_dir.join("seccomp"));
    }
}

/// Whether the launcher of session `id` is still running (so it still
/// holds its run's seccomp listener).
pub fn launcher_alive(shared: &Shared, id: &str) -> bool {
    let registry = shared.registry.read();
    registry
        .sessions
        .values()
        .find(|s| s.id == id)
        .is_some_and(|s| Path::new(&format!("/proc/{}", s.opener_pid)).exists())
}

fn random_id() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("the OS's random source: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Opens a run of `agent` for the caller (the launcher). A process that is
/// already inside an agent cannot start a run of any agent.
pub fn open(
    shared: &Shared,
    conv: &mut Conversation,
    who: &Caller,
    agent: &str,
    on_behalf_of: Option<String>,
    argv: Vec<String>,
) -> Result<serde_json::Value> {
    if conv.session.is_some() {
        bail!("this connection already has a session");
    }
    who.require(
        shared,
        Need::Outside,
        "run",
        Some(Subject::Agent(agent.into())),
    )?;
    let mut registry = shared.registry.write();
    let Some(state) = registry.agent_by_name(agent) else {
        bail!(
            "unknown agent {agent:?}; the policy declares: {}",
            registry.agent_names().join(", ")
        );
    };
    if !who.is_member(&state.def.runners) {
        shared.refusals.report(
            &who.source(),
            Refusal::new(
                "run",
                who.peer(),
                "not a runner of this agent ([[agent]] runners)",
            )
            .about(Some(Subject::Agent(agent.into()))),
        );
        bail!(
            "uid {} ({}) may not start runs of agent {agent:?}; see `runners` in its \
             [[agent]] table",
            who.uid().unwrap_or_default(),
            who.user
        );
    }
    if state.def.expired(super::expiry::now()) {
        bail!(
            "agent {agent:?} expired at {}: it starts no more runs (its owner is {}); extend \
             or remove `expires` in its [[agent]] table and reload to use it again",
            state.def.expires_text().unwrap_or_default(),
            state.def.owner
        );
    }
    let opener_pid = who.pid().context("peer pid unknown")?;
    let id = random_id()?;
    let token = random_id()?;
    let dir: PathBuf = state.cgroup_dir.join(format!("run-{id}"));
    fs::create_dir(&dir).with_context(|| format!("creating session cgroup {}", dir.display()))?;
    let cgroup_id = cgroup::id(&dir)?;
    let agent_id = state.agent_id;
    let relative = format!("{}/run-{id}", state.def.cgroup);
    let filter = crate::supervise::FilterOptions {
        allow_mounts: state.def.allow_mounts,
        allow_io_uring: state.def.allow_io_uring,
    };
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
            opener_uid: who.uid().context("peer uid unknown")?,
            supervised: shared.supervise_deletes,
            filter,
        },
    );
    drop(registry);
    conv.session = Some(cgroup_id);
    shared.sessions.save(shared);
    if let Some(kernel) = super::lock_kernel(shared).as_mut() {
        super::selfdefense::protect_launcher(kernel, opener_pid);
    }
    Ok(json!({
        "session": id,
        "token": token,
        "cgroup": relative,
        "supervise_deletes": shared.supervise_deletes,
        // What the run's seccomp filter leaves out, by the agent's policy.
        "allow_mounts": filter.allow_mounts,
        "allow_io_uring": filter.allow_io_uring,
        "confine": shared.guard.confine,
    }))
}

/// Moves the calling process (identified by SO_PEERCRED, not by anything it
/// says) into the session. It must hold the session's token and be a direct
/// child of the launcher that opened it, so nobody can move strangers, and
/// it must not already be inside an agent.
pub fn join(
    shared: &Arc<Shared>,
    who: &Caller,
    session_id: &str,
    token: &str,
    mut fds: Vec<OwnedFd>,
) -> Result<serde_json::Value> {
    who.require(
        shared,
        Need::Outside,
        "join",
        Some(Subject::Session(session_id.into())),
    )?;
    let pid = who.pid().context("peer pid unknown")?;
    let registry = shared.registry.read();
    let (cgroup_id, session) = authenticated(&registry, session_id, token, "")?;
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
        supervise_run(shared, session, cgroup_id, listener)?;
    }
    let agent = registry.agent_ref(session.agent_id, cgroup_id);
    let (user, group) = {
        let mut e = super::lock_enricher(shared);
        let (uid, gid) = (who.uid().unwrap_or_default(), who.gid().unwrap_or_default());
        (e.user(uid), e.group(gid))
    };
    events::emit_now(
        &shared.emitter,
        DaemonEvent::AgentStart(AgentStart {
            outcome: Success::Success,
            agent,
            process: Process {
                pid,
                ppid: Some(session.opener_pid),
                uid: who.uid().unwrap_or_default(),
                gid: who.gid().unwrap_or_default(),
                user,
                group,
                cmdline: Some(Cmdline::capped(session.argv.clone())),
                ..Process::default()
            },
            session: RunStarted {
                id: session.id.clone(),
                started_by: Launcher {
                    pid: session.opener_pid,
                    uid: session.opener_uid,
                },
            },
        }),
    );
    Ok(json!({}))
}

/// The launcher of a run takes its session back from a restarted daemon;
/// a supervised run hands over its copy of the seccomp listener, and the
/// calls the previous daemon received and never answered are handled again.
pub fn resume(
    shared: &Arc<Shared>,
    conv: &mut Conversation,
    who: &Caller,
    session_id: &str,
    token: &str,
    mut fds: Vec<OwnedFd>,
) -> Result<serde_json::Value> {
    if conv.session.is_some() {
        bail!("this connection already has a session");
    }
    who.require(
        shared,
        Need::Outside,
        "resume",
        Some(Subject::Session(session_id.into())),
    )?;
    let pid = who.pid().context("peer pid unknown")?;
    let registry = shared.registry.read();
    let (cgroup_id, session) = authenticated(
        &registry,
        session_id,
        token,
        " (it was not saved, or its cgroup is gone)",
    )?;
    if pid != session.opener_pid {
        bail!(
            "only the launcher that opened session {session_id} (pid {}) may resume it",
            session.opener_pid
        );
    }
    match (session.supervised, fds.len()) {
        (true, 1) => {
            let listener = fds.pop().context("listener")?;
            supervise_run(shared, session, cgroup_id, listener)?;
        }
        (true, n) => bail!("this run is supervised; expected its seccomp listener, got {n} fds"),
        (false, 0) => {}
        (false, n) => bail!("unexpected {n} fds with the resume request"),
    }
    tracing::info!(session = %session_id, pid, "a run's launcher resumed its session");
    conv.session = Some(cgroup_id);
    Ok(json!({}))
}

/// Session `id` (with its cgroup id), if `token` is its secret; `missing`
/// is added to the error when there is no such session.
fn authenticated<'r>(
    registry: &'r Registry,
    id: &str,
    token: &str,
    missing: &str,
) -> Result<(u64, &'r SessionState)> {
    let Some((&cgroup_id, session)) = registry.sessions.iter().find(|(_, s)| s.id == id) else {
        bail!("no session {id:?}{missing}");
    };
    if session.token != token {
        bail!("wrong token for session {id}");
    }
    Ok((cgroup_id, session))
}

/// Supervises the deletes of a run behind `listener`, journaled so that a
/// successor can answer what this daemon leaves waiting.
fn supervise_run(
    shared: &Arc<Shared>,
    session: &SessionState,
    cgroup_id: u64,
    listener: OwnedFd,
) -> Result<()> {
    let file = journal::path(&shared.sessions.state_dir, &session.id);
    let (journal, received) = NotifJournal::open(file.clone())
        .with_context(|| format!("opening the seccomp journal {}", file.display()))?;
    if !received.is_empty() {
        tracing::warn!(session = %session.id, calls = received.len(), "answering calls received before the restart");
    }
    let decider = Arc::new(SessionDecider::new(
        shared.clone(),
        session.agent_id,
        cgroup_id,
        session.id.clone(),
        session.filter,
    ));
    let resume = Resume {
        journal: Some(Arc::new(journal)),
        received,
    };
    let id = session.id.clone();
    tokio::spawn(async move {
        match supervise::supervise_resuming(listener, decider, resume).await {
            Ok(()) => {
                tracing::debug!(session = %id, "delete supervision ended: no process left")
            }
            Err(err) => tracing::error!(
                session = %id, %err,
                "delete supervision failed; the run's supervised calls now wait in the kernel (its launcher keeps the listener) until a restarted daemon answers them, or fail with ENOSYS once the launcher is gone"
            ),
        }
    });
    Ok(())
}

pub fn close(
    shared: &Arc<Shared>,
    cgroup_id: u64,
    exit_code: Option<i32>,
    signal: Option<i32>,
    why: &str,
) {
    let (agent, dir, id, launcher) = {
        let registry = shared.registry.read();
        let Some(session) = registry.sessions.get(&cgroup_id) else {
            return;
        };
        (
            registry.agent_ref(session.agent_id, cgroup_id),
            session.dir.clone(),
            session.id.clone(),
            session.opener_pid,
        )
    };
    if let Some(kernel) = super::lock_kernel(shared).as_mut() {
        kernel.unprotect_process(launcher);
    }
    events::emit_now(
        &shared.emitter,
        DaemonEvent::AgentExit(AgentExit {
            outcome: Success::Success,
            agent,
            session: RunEnded {
                id: id.clone(),
                exit_code,
                signal,
                reason: why.to_owned(),
            },
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
        shared.registry.write().sessions.remove(&cgroup_id);
        shared.sessions.save(&shared);
    });
}
