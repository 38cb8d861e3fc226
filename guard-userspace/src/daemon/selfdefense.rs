//! Self-defense, the daemon's part: which files agents may not touch,
//! which processes are the guard's, which processes already belong to an
//! agent, what `run` confines its command with where the kernel's BPF
//! LSM hooks are not in force, and where agents may not connect to the
//! daemon (its page and metrics endpoint).
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use guard_common::{
    InodeKey, LISTEN_KEY_PORT_BITS, ListenKey, ROLE_DAEMON, ROLE_LAUNCHER, SURFACE_METRICS,
    SURFACE_WEB,
};

use crate::{
    cgroup::Hierarchy,
    confine::Confinement,
    kernel::{GuardStatus, Kernel},
    policy::{Policy, sink::SinkKind},
};

/// What self-defense is in force, for the daemon's tasks and for `run`.
pub struct Guard {
    /// What the kernel programs do (escape detection, tamper hooks).
    pub status: GuardStatus,
    /// Files and directories agents may neither read nor change.
    pub protected: Vec<PathBuf>,
    /// What each `run` applies to its command: empty where the tamper
    /// hooks already cover every agent process.
    pub confine: Confinement,
    /// The per-agent allowance of the refusals the daemon reports itself.
    pub allowance: super::suppressed::Allowance,
}

impl Guard {
    /// The protected path that `path` (absolute, resolved) is or lies
    /// under, if any: whole components only.
    pub fn covering(&self, path: &str) -> Option<&Path> {
        let path = Path::new(path);
        self.protected
            .iter()
            .find(|p| path.starts_with(p))
            .map(PathBuf::as_path)
    }

    /// The `self_defense` object of `daemon.start`.
    pub fn summary(&self) -> crate::events::model::SelfDefense {
        let state = |r: &Result<(), String>| match r {
            Ok(()) => "in force".to_owned(),
            Err(why) => format!("unavailable: {why}"),
        };
        crate::events::model::SelfDefense {
            escape: state(&self.status.escape),
            lsm: state(&self.status.lsm),
            refusals: if self.status.lsm.is_ok() {
                "reported by the BPF LSM hooks".to_owned()
            } else {
                state(&self.status.refusals)
            },
            run_confinement: if self.confine.is_empty() {
                "none (BPF LSM hooks)"
            } else {
                "landlock"
            }
            .into(),
            protected: self
                .protected
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        }
    }
}

/// Everything agents must not read or change: the state directory, the
/// policy file, the chain key, the event logs (each file sink's directory,
/// which holds its rotations) and the surfaces' secrets.
pub fn protected_paths(
    policy: &Policy,
    state_dir: &Path,
    policy_path: Option<&Path>,
    chain_key: Option<&Path>,
) -> Vec<PathBuf> {
    // The bpffs with the pinned links is a filesystem of its own: its root
    // is protected by itself (the kernel looks for protection within one
    // filesystem).
    let mut paths = vec![state_dir.to_path_buf(), state_dir.join("bpf")];
    paths.extend(policy_path.map(Path::to_path_buf));
    paths.extend(chain_key.map(Path::to_path_buf));
    for sink in &policy.sinks {
        if let SinkKind::File { path, .. } = &sink.kind {
            if let Some(dir) = path.parent() {
                // The sink makes it a moment later anyway; it has to exist
                // now to be protected.
                if let Err(err) = std::fs::create_dir_all(dir) {
                    tracing::warn!(%err, dir = %dir.display(), "creating a file sink's directory");
                }
                paths.push(dir.to_path_buf());
            }
        }
    }
    paths.extend(policy.web.as_ref().map(|w| w.tokens_file.clone()));
    paths.extend(policy.notify.iter().map(|n| n.secret_file.clone()));
    // As the kernel resolves them (symlinks, relative paths).
    for p in &mut paths {
        if let Ok(real) = std::fs::canonicalize(&*p) {
            *p = real;
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// Arms self-defense in the kernel: the daemon's own process, the
/// protected files, and the processes already in each agent (whose later
/// forks the kernel follows itself). Returns what is in force and the
/// protected files' kernel keys (events name them).
pub fn arm<'a>(
    kernel: &mut Kernel,
    hierarchy: &Hierarchy,
    agents: impl Iterator<Item = (u64, &'a Path)>,
    protected: Vec<PathBuf>,
) -> (Guard, Vec<(InodeKey, PathBuf)>) {
    if let Err(err) = kernel.protect_process(std::process::id(), ROLE_DAEMON) {
        tracing::error!(%err, "the daemon could not mark itself as a guard process");
    }
    for (cgroup_id, dir) in agents {
        track(kernel, cgroup_id, dir);
    }
    let mut keys = Vec::new();
    for path in &protected {
        match kernel.protect_path(path) {
            Ok(key) => keys.push((key, path.clone())),
            // A file that does not exist yet (a sink's first file) is
            // covered through its directory; anything else is said.
            Err(err) => tracing::warn!(%err, "not protected from agents"),
        }
    }
    let lsm = kernel.guard.lsm.is_ok();
    if !lsm {
        // Landlock and the seccomp filter refuse silently: report their
        // refusals from system call exit, but leave the calls a run's
        // supervisor judges to it (one attempt, one event).
        kernel.watch_refusals(crate::supervise::SUPERVISED_WATCHED);
        if let Err(why) = &kernel.guard.refusals {
            tracing::warn!(%why, "refusals of agents' reach for the guard are not reported");
        }
    }
    // Landlock as far as this kernel has it; what it lacks, doctor names.
    let abi = crate::confine::abi_version();
    let confine = if lsm || abi < 1 {
        if !lsm {
            tracing::warn!(
                "no BPF LSM and no Landlock: runs cannot be confined (see `agent-guard doctor`)"
            );
        }
        Confinement::default()
    } else {
        Confinement {
            hidden: protected.clone(),
            read_only: Hierarchy::all_mounts().unwrap_or_else(|err| {
                tracing::warn!(%err, "listing cgroup mounts; confining runs from the cgroup2 root only");
                vec![hierarchy.root().to_path_buf()]
            }),
            scope_signals: abi >= 6,
        }
    };
    let guard = Guard {
        status: kernel.guard.clone(),
        protected,
        confine,
        allowance: Default::default(),
    };
    (guard, keys)
}

/// Records the processes already in an agent's cgroup tree as the agent's.
pub fn track(kernel: &mut Kernel, cgroup_id: u64, dir: &Path) {
    match kernel.track_agent_processes(cgroup_id, dir) {
        Ok(n) if n > 0 => {
            tracing::info!(cgroup = %dir.display(), processes = n, "agent processes tracked")
        }
        Ok(_) => {}
        Err(err) => tracing::error!(%err, cgroup = %dir.display(), "tracking agent processes"),
    }
}

/// A run's launcher is a guard process while its run lasts.
pub fn protect_launcher(kernel: &mut Kernel, pid: u32) {
    if let Err(err) = kernel.protect_process(pid, ROLE_LAUNCHER) {
        tracing::error!(%err, pid, "marking a run's launcher as a guard process");
    }
}

/// What the daemon serves on TCP, by surface number
/// (guard_common::SURFACE_*), with the bound address.
pub type Listeners = Vec<(u32, SocketAddr)>;

/// The name a surface goes by in events (`rule.match` of a refused connect).
pub fn surface_rule(surface: u32) -> String {
    let what = match surface {
        SURFACE_WEB => "the approval page ([web])",
        SURFACE_METRICS => "the metrics endpoint ([metrics])",
        _ => "a listener of the daemon",
    };
    format!("self-defense: {what}")
}

/// How often the host's addresses are read again while a surface listens
/// on a wildcard address (an address added since is refused from then on).
const ADDRESSES_EVERY: Duration = Duration::from_secs(2);

/// Puts the daemon's listeners out of every agent's reach (GUARD_LISTEN),
/// whatever its policy. Returns the host addresses used, for
/// [`watch_addresses`].
pub fn close_listeners(kernel: &mut crate::kernel::Kernel, listeners: &Listeners) -> Vec<IpAddr> {
    let local = local_addresses();
    let entries = listen_entries(listeners, &local);
    match kernel.set_guard_listeners(&entries) {
        Ok(()) if !listeners.is_empty() => tracing::info!(
            listeners = ?listeners.iter().map(|(_, a)| a).collect::<Vec<_>>(),
            prefixes = entries.len(),
            "agents may not connect to the daemon's listeners"
        ),
        Ok(()) => {}
        Err(err) => tracing::error!(%err, "agents could reach the daemon's listeners"),
    }
    local
}

/// Whether any listener takes every local address (0.0.0.0 or ::): then
/// the host's addresses are followed by [`watch_addresses`].
pub fn any_wildcard(listeners: &Listeners) -> bool {
    listeners.iter().any(|(_, a)| a.ip().is_unspecified())
}

/// Keeps GUARD_LISTEN in step with the host's addresses, for listeners on
/// a wildcard address. `known`: the addresses written at start.
pub async fn watch_addresses(
    shared: Arc<super::Shared>,
    listeners: Listeners,
    mut known: Vec<IpAddr>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(ADDRESSES_EVERY);
    loop {
        tick.tick().await;
        let local = local_addresses();
        if local == known {
            continue;
        }
        let entries = listen_entries(&listeners, &local);
        let written = match shared.kernel.lock().as_mut() {
            Some(kernel) => kernel.set_guard_listeners(&entries),
            None => return Ok(()), // released: stopping
        };
        written?;
        tracing::info!(addresses = ?local, "the daemon's listeners follow the host's addresses");
        known = local;
    }
}

/// The host's addresses now (every interface, up or not), sorted.
fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => {
            for a in addrs {
                let Some(addr) = a.address else { continue };
                if let Some(v4) = addr.as_sockaddr_in() {
                    out.push(IpAddr::V4(v4.ip()));
                } else if let Some(v6) = addr.as_sockaddr_in6() {
                    out.push(IpAddr::V6(v6.ip()));
                }
            }
        }
        Err(err) => tracing::warn!(%err, "listing the host's addresses"),
    }
    out.sort();
    out.dedup();
    out
}

/// GUARD_LISTEN's entries ((prefix length, key, surface)) for the
/// daemon's listeners, given the host's addresses:
/// - a listener on one address: that address; a dual-stack v6 socket on a
///   v4-mapped address is the same key, as the kernel sees it;
/// - on 0.0.0.0: all of 127.0.0.0/8 and every local IPv4 address; on ::
///   (dual-stack) those and ::1 and every local IPv6 address;
/// - always 0.0.0.0 and ::, which a connect turns into a local address.
///
/// IPv4 is stored IPv4-mapped, so a v6 socket's `::ffff:a.b.c.d` meets the
/// same entry.
pub fn listen_entries(listeners: &Listeners, local: &[IpAddr]) -> Vec<(u32, ListenKey, u32)> {
    let mut out = Vec::new();
    for &(surface, addr) in listeners {
        let mut prefixes: Vec<(Ipv6Addr, u32)> = vec![
            (Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 128),
            (Ipv6Addr::UNSPECIFIED, 128),
        ];
        let v4_any = |prefixes: &mut Vec<(Ipv6Addr, u32)>| {
            prefixes.push((Ipv4Addr::new(127, 0, 0, 0).to_ipv6_mapped(), 96 + 8));
            for ip in local {
                if let IpAddr::V4(v4) = ip {
                    prefixes.push((v4.to_ipv6_mapped(), 128));
                }
            }
        };
        match addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => v4_any(&mut prefixes),
            IpAddr::V6(v6) if v6.is_unspecified() => {
                // Dual-stack unless IPV6_V6ONLY: refusing v4 too errs on the
                // safe side.
                v4_any(&mut prefixes);
                prefixes.push((Ipv6Addr::LOCALHOST, 128));
                for ip in local {
                    if let IpAddr::V6(v6) = ip {
                        prefixes.push((*v6, 128));
                    }
                }
            }
            IpAddr::V4(v4) => prefixes.push((v4.to_ipv6_mapped(), 128)),
            IpAddr::V6(v6) => prefixes.push((v6, 128)),
        }
        for (ip, bits) in prefixes {
            let key = ListenKey {
                port: addr.port().to_be_bytes(),
                addr: ip.octets(),
            };
            out.push((LISTEN_KEY_PORT_BITS + bits, key, surface));
        }
    }
    out.sort_by_key(|(len, key, _)| (key.port, key.addr, *len));
    out.dedup_by_key(|(len, key, _)| (key.port, key.addr, *len));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(entries: &[(u32, ListenKey, u32)], ip: IpAddr, port: u16) -> Option<u32> {
        // The longest prefix that holds (ip, port), as the trie finds it.
        let bytes = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let bits = |a: &[u8; 16], b: &[u8; 16], n: u32| {
            (0..n as usize).all(|i| (a[i / 8] >> (7 - i % 8)) & 1 == (b[i / 8] >> (7 - i % 8)) & 1)
        };
        entries
            .iter()
            .filter(|(len, key, _)| {
                key.port == port.to_be_bytes()
                    && bits(&key.addr, &bytes, len - LISTEN_KEY_PORT_BITS)
            })
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, _, s)| *s)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_loopback_listener_is_closed_at_its_address_and_the_unspecified_ones() {
        let l = vec![(SURFACE_WEB, "127.0.0.1:8787".parse().expect("addr"))];
        let e = listen_entries(&l, &[ip("10.0.0.5")]);
        for reach in ["127.0.0.1", "::ffff:127.0.0.1", "0.0.0.0", "::"] {
            assert_eq!(has(&e, ip(reach), 8787), Some(SURFACE_WEB), "{reach}");
        }
        // Another port, another loopback address, the host's own address
        // (the page does not listen there): open.
        assert_eq!(has(&e, ip("127.0.0.1"), 8788), None);
        assert_eq!(has(&e, ip("127.0.0.2"), 8787), None);
        assert_eq!(has(&e, ip("10.0.0.5"), 8787), None);
        assert_eq!(has(&e, ip("::1"), 8787), None);
    }

    #[test]
    fn a_wildcard_listener_is_closed_at_every_local_address() {
        let local = [ip("10.0.0.5"), ip("fe80::1"), ip("127.0.0.1"), ip("::1")];
        let v4 = vec![(SURFACE_METRICS, "0.0.0.0:9100".parse().expect("addr"))];
        let e = listen_entries(&v4, &local);
        for reach in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.5",
            "::ffff:10.0.0.5",
            "0.0.0.0",
        ] {
            assert_eq!(has(&e, ip(reach), 9100), Some(SURFACE_METRICS), "{reach}");
        }
        // A remote host's port 9100 stays open.
        assert_eq!(has(&e, ip("10.0.0.6"), 9100), None);
        assert_eq!(has(&e, ip("192.0.2.1"), 9100), None);
        let v6 = vec![(SURFACE_METRICS, "[::]:9100".parse().expect("addr"))];
        let e = listen_entries(&v6, &local);
        for reach in [
            "::1",
            "fe80::1",
            "::",
            "127.0.0.1",
            "10.0.0.5",
            "::ffff:127.0.0.9",
        ] {
            assert_eq!(has(&e, ip(reach), 9100), Some(SURFACE_METRICS), "{reach}");
        }
        assert_eq!(has(&e, ip("2001:db8::1"), 9100), None);
    }

    #[test]
    fn surfaces_are_named_as_self_defense() {
        assert!(surface_rule(SURFACE_WEB).starts_with("self-defense: "));
        assert!(surface_rule(SURFACE_METRICS).contains("[metrics]"));
    }
}
