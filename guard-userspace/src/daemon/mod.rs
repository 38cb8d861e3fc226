//! The daemon: loads policy and kernel programs, serves the control socket,
//! and streams events until SIGINT/SIGTERM.
pub mod access;
mod admin;
pub mod approvals;
pub mod attribute;
pub mod budgets;
mod context;
mod control_server;
mod deletes;
mod demo;
mod expiry;
mod frozen;
pub mod grants;
pub mod holds;
mod journal;
mod limits;
mod memory;
mod reader;
mod refusals;
mod refused;
pub mod registry;
mod reload;
pub mod selfdefense;
mod sessions;
mod signals;
mod suppressed;
mod surfaces;
mod tasks;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use anyhow::{Context as _, Result, bail};

use crate::{
    cgroup::{self, Hierarchy},
    events::{
        self, Emitter, SharedEmitter,
        model::{
            Backends, ChainSetup, DaemonEvent, DaemonStart, DaemonStop, Released, Started, Stopped,
            Success,
        },
    },
    kernel::{Kernel, LsmStatus},
    policy::{self, Policy},
};
use registry::{AgentState, Registry};

/// State the daemon's tasks share.
pub struct Shared {
    pub registry: RwLock<Registry>,
    pub emitter: SharedEmitter,
    /// No BPF LSM: every `run` gets seccomp supervision of its deletes.
    pub supervise_deletes: bool,
    pub holds: holds::Holds,
    pub kernel_holds: crate::kernel::KernelHolds,
    pub grants: grants::Grants,
    pub budgets: budgets::Budgets,
    pub sessions: sessions::Store,
    /// The loaded programs and maps; taken out on shutdown.
    pub kernel: Mutex<Option<Kernel>>,
    pub hierarchy: Hierarchy,
    /// The policy file (None: the embedded default), for reloads.
    pub policy_path: Option<PathBuf>,
    pub lsm: bool,
    /// Serializes reloads and mode switches.
    pub reloading: Mutex<()>,
    /// Next kernel-side agent id; ids are never reused within a run.
    next_id: AtomicU32,
    pub started: std::time::Instant,
    /// Process details, read once per process (pid + start time).
    pub enricher: Mutex<events::enrich::Enricher>,
    /// Calls per agent, counted by an observer of the emitter.
    pub counts: events::counts::CallCounts,
    /// `control.refused` events, rate-limited per caller.
    pub refusals: refusals::Refusals,
    /// Self-defense in force (and what runs are confined with).
    pub guard: selfdefense::Guard,
    /// Which agents on-call froze, kept across restarts.
    pub frozen: frozen::Frozen,
}

impl Shared {
    /// The registry for reading.
    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read()
    }

    pub fn next_agent_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Writes agent `def`'s rules under `agent_id` (not in force until an
/// AGENTS entry names that id).
fn write_rules(kernel: &mut Kernel, agent_id: u32, def: &policy::Agent) -> Result<()> {
    kernel
        .insert_net_rules(&policy::compile_net(agent_id, &def.connect))
        .with_context(|| format!("writing connect rules of agent {}", def.name))?;
    kernel
        .insert_path_rules(&policy::compile_path(agent_id, &def.delete))
        .with_context(|| format!("writing delete rules of agent {}", def.name))?;
    kernel
        .insert_subtree_rules(&policy::compile_subtree(agent_id, &def.delete))
        .with_context(|| format!("writing the rename rules of agent {}", def.name))?;
    kernel
        .insert_unix_rules(&policy::compile_unix(agent_id, &def.connect))
        .with_context(|| format!("writing unix socket rules of agent {}", def.name))?;
    Ok(())
}

/// Takes agent `def`'s rules under `agent_id` out (best effort: a rule
/// left behind is unreachable, since no AGENTS entry names the id).
fn remove_rules(kernel: &mut Kernel, agent_id: u32, def: &policy::Agent) {
    let net = kernel.remove_net_rules(&policy::compile_net(agent_id, &def.connect));
    let path = kernel.remove_path_rules(&policy::compile_path(agent_id, &def.delete));
    let subtree = kernel.remove_subtree_rules(&policy::compile_subtree(agent_id, &def.delete));
    let unix = kernel.remove_unix_rules(&policy::compile_unix(agent_id, &def.connect));
    if let Err(err) = net.and(path).and(subtree).and(unix) {
        tracing::warn!(%err, agent = %def.name, "removing rules no longer used");
    }
}

/// Puts an agent in force whose rules are written under `agent_id`: its
/// cgroup (made if missing, adopted if it exists), its AGENTS entry, and
/// the connect programs on its cgroup.
fn install_agent(
    kernel: &mut Kernel,
    hierarchy: &Hierarchy,
    agent_id: u32,
    def: &policy::Agent,
    frozen: bool,
) -> Result<AgentState> {
    let created = hierarchy
        .ensure(&def.cgroup)
        .with_context(|| format!("agent {}", def.name))?;
    let dir = hierarchy.path(&def.cgroup);
    let cgroup_id = cgroup::id(&dir)?;
    let mut entry = policy::agent_entry(agent_id, def);
    if frozen {
        entry.mode = guard_common::Mode::Freeze.raw();
    }
    kernel.set_agent(cgroup_id, entry)?;
    kernel
        .attach_cgroup(cgroup_id, &dir)
        .with_context(|| format!("agent {}", def.name))?;
    tracing::info!(agent = %def.name, cgroup = %dir.display(), cgroup_id, adopted = !created, mode = ?def.mode, "agent guarded");
    Ok(AgentState {
        agent_id,
        def: def.clone(),
        cgroup_dir: dir,
        cgroup_id,
        created,
        frozen,
    })
}

/// The `agent_levels` bits of these agents.
fn agent_levels<'a>(agents: impl Iterator<Item = &'a policy::Agent>) -> u64 {
    agents.fold(0, |l, a| l | 1u64 << a.cgroup_level())
}

/// Whether some agent may hold a connect (an `ask` on connect, freeze, or
/// a connects budget that asks or freezes when spent).
fn needs_connect_holds<'a>(mut agents: impl Iterator<Item = &'a policy::Agent>) -> bool {
    agents.any(|a| match a.mode {
        guard_common::Mode::Audit => false,
        guard_common::Mode::Freeze => true,
        guard_common::Mode::Enforce => {
            a.connect.default == guard_common::Verdict::Ask
                || a.connect
                    .rules
                    .iter()
                    .any(|r| r.verdict == guard_common::Verdict::Ask)
                || a.budget.as_ref().is_some_and(|b| {
                    b.rate(guard_common::BudgetClass::Connects).is_some()
                        && b.on_exceed != guard_common::Exceed::Deny
                })
        }
    })
}

pub struct Options {
    pub policy_path: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// Overrides the policy's [daemon] state_dir.
    pub state_dir: Option<PathBuf>,
    pub demo: bool,
    /// Format of sinks that do not name one.
    pub format: crate::policy::sink::Format,
    /// HMAC key for the event chain (a root-only file).
    pub chain_key: Option<PathBuf>,
}

/// The loaded kernel (None once shut down).
pub fn lock_kernel(shared: &Shared) -> MutexGuard<'_, Option<Kernel>> {
    shared.kernel.lock()
}

/// The shared process-details cache.
pub fn lock_enricher(shared: &Shared) -> MutexGuard<'_, events::enrich::Enricher> {
    shared.enricher.lock()
}

/// Blocks the stop and reload signals in the calling thread (see `signals`);
/// call it before the runtime starts.
pub fn block_signals() -> Result<()> {
    signals::block()
}

pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "{what} needs root (CAP_BPF, CAP_SYS_ADMIN and write access to the cgroup tree); \
             run it with sudo"
        );
    }
    Ok(())
}

pub fn load_policy(path: Option<&Path>) -> Result<Policy> {
    let policy = match path {
        Some(path) => policy::load(path)?,
        None => policy::parse("<embedded default policy>", policy::DEFAULT_POLICY)?,
    };
    Ok(policy)
}

pub async fn run(opts: Options) -> Result<()> {
    require_root("the daemon")?;
    // Before anything is opened: the caps on connections follow this limit.
    let nofile = limits::raise_nofile();
    let policy = load_policy(opts.policy_path.as_deref())?;
    // `--demo` needs the `demo` agent; it names the approval page if [web] is on.
    let demo_page = opts
        .demo
        .then(|| demo::check(&policy).map(|()| policy.web.as_ref().map(|w| w.public_url())))
        .transpose()?;
    // Secrets and listening addresses first: a daemon that cannot serve
    // what the policy asks for refuses to start, before it enforces anything.
    let surfaces = surfaces::Surfaces::prepare(&policy).await?;
    // A bad key is a start-up error before anything is loaded.
    let alg = match &opts.chain_key {
        Some(path) => events::chain::Alg::HmacSha256(events::chain::read_key(path)?),
        None => events::chain::Alg::Sha256,
    };
    let socket = opts
        .socket
        .clone()
        .unwrap_or_else(|| policy.daemon.control_socket.clone());
    let hierarchy = Hierarchy::discover()?;
    tracing::info!(root = %hierarchy.root().display(), "cgroup2 hierarchy");

    let state_dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| policy.daemon.state_dir.clone());
    let mut kernel = Kernel::load(Some(&state_dir))
        .with_context(|| format!("loading the programs (state under {})", state_dir.display()))?;
    let delete_backend = match &kernel.lsm {
        LsmStatus::Attached {
            paths,
            hooks,
            missing,
        } => {
            tracing::info!(
                "file operations: BPF LSM ({}; unlink/rmdir paths by {paths}), host-wide for every agent process",
                hooks
                    .iter()
                    .map(|h| format!("lsm/{h}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for (hook, why) in missing {
                tracing::info!("lsm/{hook} not used on this kernel: {why}");
            }
            "bpf_lsm"
        }
        LsmStatus::Unavailable(why) => {
            tracing::warn!(
                "file operations: BPF LSM unavailable ({why}); deletes, renames, links, \
                 truncation, mounts and io_uring are governed only for processes started \
                 with `agent-guard run` (seccomp supervision). Run `agent-guard doctor` \
                 for details"
            );
            "seccomp"
        }
    };
    let unix_backend = match &kernel.unix {
        crate::kernel::UnixBackend::Lsm => "bpf_lsm",
        crate::kernel::UnixBackend::Cgroup => "cgroup_sock_addr",
        crate::kernel::UnixBackend::None(why) => {
            tracing::warn!("unix: rules cannot be enforced on this kernel: {why}");
            "none"
        }
    };
    for warning in policy::path_warnings(&policy) {
        tracing::warn!("{warning}");
    }
    let lsm = matches!(kernel.lsm, LsmStatus::Attached { .. });
    let refused =
        policy::unenforceable_deletes(&policy, lsm, crate::kernel::seccomp_user_notif_available());
    if !refused.is_empty() {
        bail!(
            "this kernel can neither block deletes (no BPF LSM) nor supervise them (no seccomp \
             user notification), so the delete rules of agent(s) {} cannot be enforced. Set \
             `accept_observe_only = true` in their [agent.delete] table to run with deletes \
             observed only, or use a kernel with BPF LSM (see `agent-guard doctor`)",
            refused.join(", ")
        );
    }
    if needs_connect_holds(policy.agents.iter()) {
        kernel.attach_connect_hold_stopper()?;
    }
    if !lsm {
        // Processes placed in an agent cgroup by other means than `run`
        // cannot be blocked here; at least every delete they make is seen.
        kernel.attach_delete_observer()?;
    }
    let frozen = frozen::Frozen::new(&state_dir);
    let frozen_names = frozen.load()?;
    if policy.agents.iter().any(|a| frozen_names.contains(&a.name)) {
        // Frozen connects are held: the stopper must be there first.
        kernel.attach_connect_hold_stopper()?;
    }
    let mut agents = Vec::new();
    let budgets = budgets::Budgets::new(kernel.take_budgets()?);
    for (index, agent) in policy.agents.iter().enumerate() {
        let agent_id = index as u32 + 1;
        write_rules(&mut kernel, agent_id, agent)?;
        budgets.set(agent_id, agent, None)?;
        let was_frozen = frozen_names.contains(&agent.name);
        if was_frozen {
            tracing::warn!(agent = %agent.name, "agent stays frozen, as on-call left it; `agent-guard thaw` ends it");
        }
        agents.push(install_agent(
            &mut kernel,
            &hierarchy,
            agent_id,
            agent,
            was_frozen,
        )?);
    }
    let levels = agent_levels(policy.agents.iter());
    let next_id = policy.agents.len() as u32 + 1;
    let mut registry = Registry::new(policy);
    for agent in agents {
        registry.agents.insert(agent.agent_id, agent);
    }
    // Runs started before a crash keep their attribution and can resume.
    let sessions = sessions::Store::new(&state_dir);
    sessions.load(&mut registry);
    kernel.set_agent_levels(levels)?;
    let protected = selfdefense::protected_paths(
        &registry.policy,
        &state_dir,
        opts.policy_path.as_deref(),
        opts.chain_key.as_deref(),
    );
    let (guard, keys) = selfdefense::arm(
        &mut kernel,
        &hierarchy,
        registry
            .agents
            .values()
            .map(|a| (a.cgroup_id, a.cgroup_dir.as_path())),
        protected,
    );
    registry.protected = keys;
    // The page and the metrics endpoint are for people, not agents: no
    // agent reaches them, whatever its policy or uid.
    let listeners = surfaces.listening();
    let addresses = selfdefense::close_listeners(&mut kernel, &listeners);
    registry.cgroup_mounts = crate::cgroup::Hierarchy::all_mounts().unwrap_or_else(|err| {
        tracing::warn!(%err, "listing cgroup mounts; refused cgroup writes are named for cgroup2 only");
        vec![hierarchy.root().to_path_buf()]
    });
    // Launchers of runs that outlived a crashed daemon are still the guard's.
    for session in registry.sessions.values() {
        selfdefense::protect_launcher(&mut kernel, session.opener_pid);
    }

    let summary = Started {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        policy: registry.policy.file.clone(),
        socket: socket.display().to_string(),
        agents: registry
            .agent_names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        backends: Backends {
            connect: "cgroup_sock_addr".into(),
            delete: delete_backend.into(),
            unix: unix_backend.into(),
        },
        sinks: registry
            .policy
            .sinks
            .iter()
            .map(|s| s.name.clone())
            .collect(),
        chain: ChainSetup {
            alg: alg.name().into(),
            state: state_dir.join("chain.json").display().to_string(),
        },
        self_defense: guard.summary(),
    };
    let sinks = registry.policy.sinks.clone();
    let emitter = Emitter::start(events::Config {
        sinks,
        format: opts.format,
        alg,
        state_file: Some(state_dir.join("chain.json")),
    })?;
    let counts = events::counts::CallCounts::default();
    let unix_sinks = events::with(&emitter, |e| {
        e.observe(counts.observer());
        std::mem::take(&mut e.unix_sinks)
    });
    let shared = Arc::new(Shared {
        registry: RwLock::new(registry),
        refusals: refusals::Refusals::new(emitter.clone()),
        emitter,
        started: std::time::Instant::now(),
        enricher: Mutex::new(events::enrich::Enricher::default()),
        counts,
        supervise_deletes: delete_backend == "seccomp",
        holds: holds::Holds::default(),
        kernel_holds: kernel.take_holds()?,
        grants: grants::Grants::new(kernel.take_grants()?),
        budgets,
        sessions,
        kernel: Mutex::new(None),
        hierarchy,
        policy_path: opts.policy_path.clone(),
        lsm,
        reloading: Mutex::new(()),
        next_id: AtomicU32::new(next_id),
        guard,
        frozen,
    });
    // Every program is attached: pin them all, so that enforcement outlives
    // a crashed daemon, and only then retire a crashed predecessor's pins.
    kernel
        .pin_links()
        .with_context(|| format!("pinning the programs under {}", state_dir.display()))?;
    // Calls held when a previous daemon died are still held: take them back.
    shared.holds.resume(&shared, state_dir.join("holds.json"));
    let reused_stream = kernel.reused_stream;
    if reused_stream {
        tracing::warn!("reading on the event stream of a daemon that did not stop cleanly");
    }
    let ring = kernel.take_events()?;
    let losses = kernel.take_losses()?;
    let suppressed = kernel.take_refusal_counters()?;
    let program_ids = kernel.program_ids();
    *shared.kernel.lock() = Some(kernel);
    let listener = control_server::bind(&socket)?;

    // Every task is kept running: a failure is reported and the task
    // restarted, never a reason to stop (let alone release enforcement).
    let mut tasks = tasks::Tasks::new(shared.emitter.clone());
    let ring = reader::register(ring)?;
    tasks.keep("event reader", {
        let shared = shared.clone();
        move || reader::read_events(ring.clone(), shared.clone())
    });
    let losses = tasks::Owned::new(reader::loss_poll(
        losses,
        &state_dir.join("losses.json"),
        reused_stream,
    ));
    tasks.keep("loss poller", {
        let (shared, file) = (shared.clone(), state_dir.join("losses.json"));
        move || reader::poll_losses(losses.clone(), shared.clone(), file.clone())
    });
    let limits = Arc::new(limits::Limits::for_nofile(nofile));
    tasks.keep("control socket", {
        let (listener, shared, limits) = (Arc::new(listener), shared.clone(), limits.clone());
        move || {
            let (listener, shared, limits) = (listener.clone(), shared.clone(), limits.clone());
            async move {
                control_server::serve(listener, shared, limits).await;
                Ok(())
            }
        }
    });
    tasks.keep("agent expiry", {
        let shared = shared.clone();
        move || expiry::watch(shared.clone())
    });
    tasks.keep("hold expiry", {
        let shared = shared.clone();
        move || holds::expire_loop(shared.clone())
    });
    let suppressed = tasks::Owned::new(suppressed::Suppressed::new(suppressed));
    tasks.keep("refusal counts", {
        let shared = shared.clone();
        move || suppressed::report(suppressed.clone(), shared.clone())
    });
    let mut sink_names = Vec::new();
    for sink in unix_sinks {
        let listener = Arc::new(
            events::sinks::stream::bind(&sink.path)
                .with_context(|| format!("event sink {:?}", sink.name))?,
        );
        sink_names.push(sink.path.clone());
        let gate: Arc<dyn events::sinks::stream::Gate> = Arc::new(control_server::SinkGate {
            shared: shared.clone(),
            limits: limits.clone(),
        });
        let emitter = shared.emitter.clone();
        tasks.keep(&format!("event sink {}", sink.name), move || {
            events::sinks::stream::serve(
                listener.clone(),
                sink.name.clone(),
                sink.format,
                sink.queue,
                emitter.clone(),
                gate.clone(),
            )
        });
    }
    if selfdefense::any_wildcard(&listeners) {
        tasks.keep("listener addresses", {
            let shared = shared.clone();
            move || {
                selfdefense::watch_addresses(shared.clone(), listeners.clone(), addresses.clone())
            }
        });
    }
    tasks.keep("memory trim", memory::trim_periodically);
    surfaces.spawn(&mut tasks, &shared, program_ids);

    events::emit_now(
        &shared.emitter,
        DaemonEvent::DaemonStart(DaemonStart {
            outcome: Success::Success,
            daemon: summary,
        }),
    );
    tracing::info!(socket = %socket.display(), "agent-guard is guarding");
    if let Some(page) = demo_page {
        let socket = socket.clone();
        tokio::spawn(async move {
            if let Err(err) = demo::run(socket, page).await {
                tracing::error!("the demo failed: {err:#}");
            }
        });
    }

    let result = serve_signals(&shared).await;
    tasks.abort_all();
    shutdown(&shared, &socket);
    for path in sink_names {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Acts on SIGTERM, SIGINT (stop) and SIGHUP (reload) until a stop from
/// outside every agent; the same signals from inside an agent, or from a
/// sender that cannot be identified, are refused. The signals are read on
/// a thread of their own (see `signals`); if that thread dies, another
/// takes its place: only a stop ends this, never a failure.
async fn serve_signals(shared: &Arc<Shared>) -> Result<()> {
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let _ = tx.send(read_signals(&thread_shared));
            });
        match spawned {
            Ok(_) => match rx.await {
                Ok(stopped) => return stopped,
                Err(_) => tracing::error!("the signal thread died; starting another"),
            },
            Err(err) => tracing::error!(%err, "starting the signal thread; retrying"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The signal thread: returns on a stop from outside every agent.
fn read_signals(shared: &Arc<Shared>) -> Result<()> {
    let mut signals = loop {
        match signals::Signals::new() {
            Ok(s) => break s,
            Err(err) => {
                // The signals stay blocked and queued: nothing is lost by
                // waiting, and failing here must not release enforcement.
                tracing::error!(error = %format!("{err:#}"), "opening the signalfd; retrying");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    };
    loop {
        let received = match signals.next(shared) {
            Ok(received) => received,
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "reading signals; retrying");
                std::thread::sleep(std::time::Duration::from_secs(1));
                if let Ok(fresh) = signals::Signals::new() {
                    signals = fresh;
                }
                continue;
            }
        };
        if !received.sender.may_control() {
            signals::refuse(shared, &received);
            continue;
        }
        if received.signal != nix::sys::signal::Signal::SIGHUP {
            tracing::info!(signal = ?received.signal, sender = ?received.sender, "shutting down");
            return Ok(());
        }
        // SIGHUP reloads the policy file (as `agent-guard reload` does);
        // its outcome is a policy.reload event either way.
        let by = holds::By {
            uid: None,
            user: "SIGHUP".into(),
        };
        let _ = reload::reload(shared, false, by);
    }
}

/// Clean shutdown releases enforcement: every pending hold is denied (a
/// stopped process must not wait for a daemon that is not coming back), the
/// programs are unpinned and detach, and agents run unguarded from here on,
/// which `daemon.stop` says. A crash, by contrast, leaves everything pinned
/// and enforcing. Removes the cgroups it created.
fn shutdown(shared: &Arc<Shared>, socket: &Path) {
    shared.holds.deny_all(shared, "the daemon stopped");
    shared.sessions.forget_journals();
    let kernel = shared.kernel.lock().take();
    if let Some(kernel) = kernel {
        kernel.release();
    }
    let _ = std::fs::remove_file(socket);
    let registry = shared.registry.read();
    for session in registry.sessions.values() {
        if let Err(err) = cgroup::remove(&session.dir) {
            tracing::warn!(%err, "session cgroup left in place");
        }
    }
    for agent in registry.agents.values().filter(|a| a.created) {
        match cgroup::populated(&agent.cgroup_dir) {
            Ok(false) => {
                if let Err(err) = cgroup::remove_tree(&agent.cgroup_dir) {
                    tracing::warn!(%err, "agent cgroup left in place");
                }
            }
            _ => {
                tracing::warn!(agent = %agent.def.name, "agent cgroup still has processes; left in place, now unguarded")
            }
        }
    }
    // Losses not yet reported are reported before the last word.
    events::with(&shared.emitter, events::Emitter::report_losses);
    events::emit_now(
        &shared.emitter,
        DaemonEvent::DaemonStop(DaemonStop {
            outcome: Success::Success,
            daemon: Stopped {
                pid: std::process::id(),
                enforcement: Released::Released,
            },
        }),
    );
    events::with(&shared.emitter, events::Emitter::close);
}
