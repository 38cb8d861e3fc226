//! The daemon: loads policy and kernel programs, serves the control socket,
//! and streams events until SIGINT/SIGTERM.
mod approvals;
mod control_server;
mod deletes;
mod demo;
pub mod grants;
pub mod holds;
mod reader;
pub mod registry;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use anyhow::{Context as _, Result, bail};
use guard_common::Config;
use serde_json::json;

use crate::{
    cgroup::{self, Hierarchy},
    events::{self, Emitter, SharedEmitter},
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
    pub started: std::time::Instant,
    /// Process details, read once per process (pid + start time).
    pub enricher: std::sync::Mutex<events::enrich::Enricher>,
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

/// The shared process-details cache, even if a panicking holder poisoned it.
pub fn lock_enricher(shared: &Shared) -> std::sync::MutexGuard<'_, events::enrich::Enricher> {
    match shared.enricher.lock() {
        Ok(e) => e,
        Err(poisoned) => poisoned.into_inner(),
    }
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
    let policy = load_policy(opts.policy_path.as_deref())?;
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
        LsmStatus::Attached { paths } => {
            tracing::info!(
                "unlink/rmdir: BPF LSM (lsm/path_unlink, lsm/path_rmdir; paths by {paths}), host-wide for every agent process"
            );
            "bpf_lsm"
        }
        LsmStatus::Unavailable(why) => {
            tracing::warn!(
                "unlink/rmdir: BPF LSM unavailable ({why}); deletes are enforced only for \
                 processes started with `agent-guard run` (seccomp supervision). Run \
                 `agent-guard doctor` for details"
            );
            "seccomp"
        }
    };
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
    if policy.agents.iter().any(|a| {
        a.mode == guard_common::Mode::Enforce
            && (a.connect.default == guard_common::Verdict::Ask
                || a.connect
                    .rules
                    .iter()
                    .any(|r| r.verdict == guard_common::Verdict::Ask))
    }) {
        kernel.attach_connect_hold_stopper()?;
    }
    if !lsm {
        // Processes placed in an agent cgroup by other means than `run`
        // cannot be blocked here; at least every delete they make is seen.
        kernel.attach_delete_observer()?;
    }
    let mut levels = 0u64;
    let mut agents = Vec::new();
    for (index, agent) in policy.agents.iter().enumerate() {
        let agent_id = index as u32 + 1;
        let created = hierarchy
            .ensure(&agent.cgroup)
            .with_context(|| format!("agent {}", agent.name))?;
        let dir = hierarchy.path(&agent.cgroup);
        let cgroup_id = cgroup::id(&dir)?;
        kernel
            .insert_net_rules(&policy::compile_net(agent_id, &agent.connect))
            .with_context(|| format!("writing connect rules of agent {}", agent.name))?;
        kernel
            .insert_path_rules(&policy::compile_path(agent_id, &agent.delete))
            .with_context(|| format!("writing delete rules of agent {}", agent.name))?;
        kernel.set_agent(cgroup_id, policy::agent_entry(agent_id, agent))?;
        kernel
            .attach_cgroup(cgroup_id, &dir)
            .with_context(|| format!("agent {}", agent.name))?;
        levels |= 1u64 << agent.cgroup_level();
        tracing::info!(agent = %agent.name, cgroup = %dir.display(), cgroup_id, mode = ?agent.mode, "agent guarded");
        agents.push(AgentState {
            agent_id,
            def: agent.clone(),
            cgroup_dir: dir,
            cgroup_id,
            created,
        });
    }
    let mut registry = Registry::new(policy);
    for agent in agents {
        registry.agents.insert(agent.agent_id, agent);
    }
    kernel.set_config(Config {
        agent_levels: levels,
    })?;

    let summary = json!({
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "policy": registry.policy.file,
        "socket": socket.display().to_string(),
        "agents": registry.agent_names(),
        "backends": {"connect": "cgroup_sock_addr", "delete": delete_backend},
        "sinks": registry.policy.sinks.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "chain": {"alg": if opts.chain_key.is_some() { "hmac-sha256" } else { "sha256" },
                  "state": state_dir.join("chain.json").display().to_string()},
    });
    let sinks = registry.policy.sinks.clone();
    let emitter = Emitter::start(events::Config {
        sinks,
        format: opts.format,
        alg,
        state_file: Some(state_dir.join("chain.json")),
    })?;
    let unix_sinks = events::with(&emitter, |e| std::mem::take(&mut e.unix_sinks));
    let shared = Arc::new(Shared {
        registry: RwLock::new(registry),
        emitter,
        started: std::time::Instant::now(),
        enricher: std::sync::Mutex::new(events::enrich::Enricher::default()),
        supervise_deletes: delete_backend == "seccomp",
        holds: holds::Holds::default(),
        kernel_holds: kernel.take_holds()?,
        grants: grants::Grants::new(kernel.take_grants()?),
    });
    // Every program is attached: pin them all, so that enforcement outlives
    // a crashed daemon, and only then retire a crashed predecessor's pins.
    kernel
        .pin_links()
        .with_context(|| format!("pinning the programs under {}", state_dir.display()))?;
    // Calls held when a previous daemon died are still held: take them back.
    shared.holds.resume(&shared, state_dir.join("holds.json"));
    let ring = kernel.take_events()?;
    let losses = kernel.take_losses()?;
    let listener = control_server::bind(&socket)?;

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(reader::read_events(ring, shared.clone()));
    tasks.spawn(reader::poll_losses(losses, shared.clone()));
    tasks.spawn(control_server::serve(listener, shared.clone()));
    tasks.spawn(holds::expire_loop(shared.clone()));
    let mut sink_names = Vec::new();
    for sink in unix_sinks {
        let listener = events::sinks::stream::bind(&sink.path)
            .with_context(|| format!("event sink {:?}", sink.name))?;
        sink_names.push(sink.path.clone());
        tasks.spawn(events::sinks::stream::serve(
            listener,
            sink.name,
            sink.format,
            sink.queue,
            shared.emitter.clone(),
        ));
    }

    events::emit_now(
        &shared.emitter,
        events::daemon_event("daemon.start", summary),
    );
    tracing::info!(socket = %socket.display(), "agent-guard is guarding");
    if opts.demo {
        tasks.spawn(demo::run(socket.clone()));
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); Ok(()) }
        _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); Ok(()) }
        Some(done) = tasks.join_next() => match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.context("a daemon task failed")),
            Err(err) => Err(anyhow::anyhow!("a daemon task panicked: {err}")),
        },
    };
    tasks.abort_all();
    shutdown(&shared, &socket, kernel);
    for path in sink_names {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Clean shutdown releases enforcement: every pending hold is denied (a
/// stopped process must not wait for a daemon that is not coming back), the
/// programs are unpinned and detach, and agents run unguarded from here on,
/// which `daemon.stop` says. A crash, by contrast, leaves everything pinned
/// and enforcing. Removes the cgroups it created.
fn shutdown(shared: &Arc<Shared>, socket: &Path, kernel: Kernel) {
    shared.holds.deny_all(shared, "the daemon stopped");
    kernel.release();
    let _ = std::fs::remove_file(socket);
    let registry = match shared.registry.read() {
        Ok(r) => r,
        Err(poisoned) => poisoned.into_inner(),
    };
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
        events::daemon_event(
            "daemon.stop",
            json!({"pid": std::process::id(), "enforcement": "released"}),
        ),
    );
    events::with(&shared.emitter, events::Emitter::close);
}
