//! Loading the embedded eBPF object, attaching it to agent cgroups, and
//! writing policy into its maps. Everything that touches aya's program and
//! policy-map APIs lives here.
use std::{fs::File, io, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSockAddr, ProgramError, links::FdLink},
};
use guard_common::{
    AgentEntry, BudgetCell, BudgetKey, Config, Grant, NetGrantKey, NetKey, NetRuleSet, PathKey,
    PathRuleValue,
};

use thiserror::Error;

mod guard;
mod handles;
mod lsm;
mod offsets;
mod pins;
mod policy_maps;
mod refused;
mod unix_programs;

pub use guard::GuardStatus;
pub use handles::{KernelHolds, LossCounters};
use lsm::load_lsm;
use pins::{Attachment, Pins};
pub use refused::RefusalCounters;

/// The kernel object, built by build.rs through aya-build.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard-ebpf"));

/// Maps pinned under `<state_dir>/bpf/maps` and reused by a successor.
pub(crate) const PINNED_MAPS: [&str; 3] = ["HOLDS", "EVENTS", "LOSSES"];

/// The pin file of map `name`: the HOLDS map's carries its entry layout,
/// so that a daemon never takes up held calls it would misread (a
/// predecessor's pin of another layout is retired, see `pin_links`).
/// bpffs refuses names with a dot.
pub(crate) fn pin_file(name: &str) -> String {
    if name == "HOLDS" {
        format!("HOLDS_v{}", guard_common::HOLDS_LAYOUT)
    } else {
        name.to_owned()
    }
}

/// The kernel's grant maps, for the grant registry (daemon/grants.rs).
pub struct KernelGrants {
    pub agent: BpfHashMap<MapData, u32, Grant>,
    pub path: LpmTrie<MapData, PathKey, Grant>,
    pub net: BpfHashMap<MapData, NetGrantKey, Grant>,
    /// GRANTED: per slot of agent ids, how many grants its agents have in
    /// the three maps above; the programs skip their look-ups at 0.
    pub granted: Array<MapData, u32>,
}

/// The BUDGETS map, for the budget service (daemon/budgets.rs).
pub type BudgetMap = BpfHashMap<MapData, BudgetKey, BudgetCell>;

/// The program (and attachment name) that stops held connects.
const CONNECT_HOLD_STOPPER: &str = "sys_exit";

/// The socket-address programs on every agent cgroup, by name in the
/// object, with the section type users see in error messages.
const CONNECT_PROGRAMS: [(&str, &str); 4] = [
    (
        "connect4",
        "cgroup/connect4 (BPF_PROG_TYPE_CGROUP_SOCK_ADDR)",
    ),
    (
        "connect6",
        "cgroup/connect6 (BPF_PROG_TYPE_CGROUP_SOCK_ADDR)",
    ),
    (
        "sendmsg4",
        "cgroup/sendmsg4 (BPF_PROG_TYPE_CGROUP_SOCK_ADDR)",
    ),
    (
        "sendmsg6",
        "cgroup/sendmsg6 (BPF_PROG_TYPE_CGROUP_SOCK_ADDR)",
    ),
];

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("loading the eBPF object failed: {0}")]
    Object(#[source] aya::EbpfError),
    #[error(
        "the kernel refused to load {program}: {errno}. This kernel does not allow this \
         program type for agent-guard; run `agent-guard doctor` to see what it supports"
    )]
    Refused {
        program: &'static str,
        errno: String,
        #[source]
        source: ProgramError,
    },
    #[error("attaching {program} to cgroup {cgroup}: {source}")]
    Attach {
        program: &'static str,
        cgroup: String,
        #[source]
        source: ProgramError,
    },
    #[error("opening cgroup {path}: {source}")]
    OpenCgroup {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("program or map {0} is missing from the eBPF object (build mismatch)")]
    Missing(&'static str),
    #[error("program {0} in the eBPF object has an unexpected type (build mismatch)")]
    WrongType(&'static str),
    #[error("{what} {path}: {source}")]
    Pin {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("protecting {path} from agents: {source}")]
    Protect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("thread {tid} no longer holds hold {hold_id}")]
    StaleHold { tid: u32, hold_id: u64 },
}

/// Whether the BPF LSM hooks are in force, and if not, why.
#[derive(Clone, Debug)]
pub enum LsmStatus {
    Attached {
        /// How unlink/rmdir paths are built ("bpf_d_path" or "dentry walk").
        paths: &'static str,
        /// Every hook attached.
        hooks: Vec<&'static str>,
        /// Optional hooks this kernel refused, with why.
        missing: Vec<(&'static str, String)>,
    },
    /// With the reason, naming the program type and errno where the kernel refused.
    Unavailable(String),
}

impl LsmStatus {
    pub fn has(&self, hook: &str) -> bool {
        matches!(self, LsmStatus::Attached { hooks, .. } if hooks.contains(&hook))
    }

    /// "lsm/a, lsm/b, ..." of the attached hooks.
    pub fn hook_list(&self) -> String {
        match self {
            LsmStatus::Attached { hooks, .. } => hooks
                .iter()
                .map(|h| format!("lsm/{h}"))
                .collect::<Vec<_>>()
                .join(", "),
            LsmStatus::Unavailable(_) => String::new(),
        }
    }
}

/// How `unix:` rules are enforced on this kernel.
#[derive(Clone, Debug)]
pub enum UnixBackend {
    /// lsm/unix_stream_connect and lsm/unix_may_send: the peer's real path.
    Lsm,
    /// cgroup/connect_unix and sendmsg_unix (6.7+): the path as written.
    Cgroup,
    /// Neither: unix rules cannot be enforced, with why.
    None(String),
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { map, source }
}

/// Whether seccomp user notification (the delete backend for `run` where
/// BPF LSM is missing) is available.
pub fn seccomp_user_notif_available() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .is_ok_and(|a| a.split_whitespace().any(|x| x == "user_notif"))
}

/// Describes an errno the way a user can search for it: "EPERM (Operation not permitted)".
fn describe_load_error(err: &ProgramError) -> String {
    let io = match err {
        ProgramError::LoadError { io_error, .. } => Some(io_error),
        ProgramError::SyscallError(e) => Some(&e.io_error),
        _ => None,
    };
    let mut text = match io.and_then(io::Error::raw_os_error) {
        Some(code) => {
            let name = nix::errno::Errno::from_raw(code);
            format!("{name:?} ({})", io::Error::from_raw_os_error(code))
        }
        None => err.to_string(),
    };
    // The verifier's last words say what it rejected; an empty log with
    // EPERM means the kernel refuses the program type outright.
    if let ProgramError::LoadError { verifier_log, .. } = err {
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        if !tail.is_empty() {
            let start = tail.len().saturating_sub(6);
            text.push_str("; verifier: ");
            text.push_str(&tail[start..].join(" | "));
        }
    }
    text
}

pub struct Kernel {
    ebpf: Ebpf,
    /// The event ring buffer and loss counters are a predecessor's, taken
    /// back from their pins: unread records and counted losses carry over.
    pub reused_stream: bool,
    /// Every attachment, owned here: dropping one detaches it. Once pinned
    /// (see `pin_links`), an attachment outlives this process.
    links: Vec<Attachment>,
    pins: Option<Pins>,
    /// Set by pin_links: new attachments are pinned as they are made.
    pinning: bool,
    pub lsm: LsmStatus,
    pub unix: UnixBackend,
    /// cgroup/connect_unix and sendmsg_unix, where they are the unix backend.
    unix_programs: Option<unix_programs::UnixPrograms>,
    /// Self-defense in the kernel: escape detection and the tamper hooks.
    pub guard: GuardStatus,
    /// What CONFIG holds (written whole).
    config: Config,
}

/// Program `name` of the object, as the type this build expects it to be.
pub(super) fn typed_program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, KernelError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(KernelError::Missing(name))?
        .try_into()
        .map_err(|_| KernelError::WrongType(name))
}

impl Kernel {
    /// Loads the object and the connect programs (not yet attached), then
    /// tries the LSM delete hooks. A kernel that refuses LSM programs is not
    /// an error here: `lsm` says why, and the caller picks another backend.
    ///
    /// With a state directory, the HOLDS map is pinned in the bpffs there
    /// (reused if a previous daemon left it), so held calls outlive a
    /// daemon restart; without one (doctor, tests) nothing is pinned.
    pub fn load(state_dir: Option<&Path>) -> Result<Self, KernelError> {
        let offsets = offsets::kernel_offsets();
        let mut loader = EbpfLoader::new();
        if let Ok(offsets) = &offsets {
            loader.override_global("KERNEL_OFFSETS", offsets, true);
        }
        let guard_offsets = guard::guard_offsets();
        if let Ok(offsets) = &guard_offsets {
            loader.override_global("GUARD_OFFSETS", offsets, true);
        }
        let refused_offsets = refused::refused_offsets();
        if let Ok(offsets) = &refused_offsets {
            loader.override_global("REFUSED_OFFSETS", offsets, true);
        }
        let pins = match state_dir {
            Some(dir) => Some(Pins::mount(dir)?),
            None => None,
        };
        // Held calls, and what the programs report while no daemon reads
        // (a crash): a successor takes the same maps back and reads on.
        let mut reused = false;
        if let Some(p) = &pins {
            for name in PINNED_MAPS {
                let path = p.root.join("maps").join(pin_file(name));
                reused |= name == "EVENTS" && path.exists();
                loader.map_pin_path(name, path);
            }
        }
        let mut ebpf = loader.load(OBJECT).map_err(KernelError::Object)?;
        for (name, program) in CONNECT_PROGRAMS {
            let prog: &mut CgroupSockAddr = typed_program(&mut ebpf, name)?;
            prog.load().map_err(|source| KernelError::Refused {
                program,
                errno: describe_load_error(&source),
                source,
            })?;
        }
        let mut links = Vec::new();
        let lsm = match &offsets {
            Ok(o) => load_lsm(&mut ebpf, &mut links, o.unix_sock_path != 0),
            Err(err) => LsmStatus::Unavailable(format!("struct offsets unavailable: {err}")),
        };
        let (unix, unix_programs) = if lsm.has("unix_stream_connect") && lsm.has("unix_may_send") {
            (UnixBackend::Lsm, None)
        } else {
            match &offsets {
                Ok(o) if o.sock_addr_kern_uaddr == 0 => (
                    UnixBackend::None(
                        "this kernel's BTF has no struct bpf_sock_addr_kern.uaddr".into(),
                    ),
                    None,
                ),
                Ok(_) => match unix_programs::UnixPrograms::load(&ebpf, OBJECT) {
                    Ok(p) => (UnixBackend::Cgroup, Some(p)),
                    Err(why) => (
                        UnixBackend::None(format!(
                            "no BPF LSM, and the kernel refused cgroup/connect_unix (6.7+): {why}"
                        )),
                        None,
                    ),
                },
                Err(err) => (
                    UnixBackend::None(format!("struct offsets unavailable: {err}")),
                    None,
                ),
            }
        };
        let guard_lsm = match (&lsm, &guard_offsets) {
            (_, Err(err)) => Err(format!("struct offsets unavailable: {err}")),
            (LsmStatus::Attached { .. }, Ok(_)) => guard::load_tamper(&mut ebpf, &mut links),
            (LsmStatus::Unavailable(why), Ok(_)) => Err(why.clone()),
        };
        let mut kernel = Self {
            ebpf,
            reused_stream: reused,
            links,
            // Links are pinned once everything is attached (pin_links).
            pins,
            pinning: false,
            lsm,
            unix,
            unix_programs,
            guard: GuardStatus::unavailable("not attached"),
            config: Config::default(),
        };
        kernel.guard = GuardStatus {
            escape: match &guard_offsets {
                Ok(_) => kernel.attach_escape_guard(),
                Err(err) => Err(format!("struct offsets unavailable: {err}")),
            },
            lsm: guard_lsm,
            // Put in force by the daemon (watch_refusals) where needed.
            refusals: match refused_offsets {
                Ok(_) => Err(refused::NOT_WATCHED.into()),
                Err(err) => Err(format!("struct offsets unavailable: {err}")),
            },
        };
        Ok(kernel)
    }

    /// Attaches the connect programs to an agent cgroup with a bpf_link. A
    /// cgroup link always coexists with programs others attached (systemd,
    /// container runtimes) and the kernel rejects any attach flag on it, so
    /// the mode passed is the flag-less one.
    pub fn attach_cgroup(&mut self, cgroup_id: u64, dir: &Path) -> Result<(), KernelError> {
        let file = File::open(dir).map_err(|source| KernelError::OpenCgroup {
            path: dir.display().to_string(),
            source,
        })?;
        for (name, program) in CONNECT_PROGRAMS {
            let prog: &mut CgroupSockAddr = typed_program(&mut self.ebpf, name)?;
            let id = prog
                .attach(&file, CgroupAttachMode::Single)
                .map_err(|source| KernelError::Attach {
                    program,
                    cgroup: dir.display().to_string(),
                    source,
                })?;
            let link = prog.take_link(id).and_then(|l| {
                FdLink::try_from(l).map_err(|e| ProgramError::IOError(io::Error::other(e)))
            });
            let link = link.map_err(|source| KernelError::Attach {
                program,
                cgroup: dir.display().to_string(),
                source,
            })?;
            self.keep(format!("{name}-{cgroup_id}"), link)?;
        }
        if let Some(unix) = &self.unix_programs {
            use std::os::fd::AsRawFd as _;
            let links = unix
                .attach(file.as_raw_fd())
                .map_err(|source| KernelError::Attach {
                    program: "cgroup/connect_unix, cgroup/sendmsg_unix (BPF_PROG_TYPE_CGROUP_SOCK_ADDR)",
                    cgroup: dir.display().to_string(),
                    source: ProgramError::IOError(source),
                })?;
            for (name, link) in links {
                self.keep_raw(format!("{name}-{cgroup_id}"), link)?;
            }
        }
        Ok(())
    }

    /// Attaches tp_btf/sys_enter, which reports agents' deletes that no
    /// backend can block. Only worth its cost where BPF LSM is unavailable:
    /// it runs on every system call of the host.
    pub fn attach_delete_observer(&mut self) -> Result<(), KernelError> {
        self.attach_tracepoint("sys_enter", "tp_btf/sys_enter (BPF_PROG_TYPE_TRACING)")
    }

    /// Attaches tp_btf/sys_exit, which stops threads whose connect is held.
    /// Needed only when some agent can `ask` on connect.
    /// Idempotent: a reload or a freeze may ask again.
    pub fn attach_connect_hold_stopper(&mut self) -> Result<(), KernelError> {
        if self.has_connect_hold_stopper() {
            return Ok(());
        }
        self.attach_tracepoint(
            CONNECT_HOLD_STOPPER,
            "tp_btf/sys_exit (BPF_PROG_TYPE_TRACING)",
        )
    }

    fn attach_tracepoint(
        &mut self,
        name: &'static str,
        program: &'static str,
    ) -> Result<(), KernelError> {
        let btf = aya::Btf::from_sys_fs().map_err(|e| KernelError::Refused {
            program,
            errno: format!("kernel BTF unavailable: {e}"),
            source: ProgramError::Btf(e),
        })?;
        let prog: &mut BtfTracePoint = typed_program(&mut self.ebpf, name)?;
        prog.load(name, &btf)
            .map_err(|source| KernelError::Refused {
                program,
                errno: describe_load_error(&source),
                source,
            })?;
        let id = prog.attach().map_err(|source| KernelError::Attach {
            program,
            cgroup: "-".into(),
            source,
        })?;
        let link = prog.take_link(id).map_err(|source| KernelError::Attach {
            program,
            cgroup: "-".into(),
            source,
        })?;
        self.keep(name.to_owned(), link.into())
    }

    pub fn insert_path_rules(
        &mut self,
        entries: &[(u32, PathKey, PathRuleValue)],
    ) -> Result<(), KernelError> {
        self.insert_lpm("PATH_RULES", entries)
    }

    pub fn insert_subtree_rules(
        &mut self,
        entries: &[(u32, PathKey, PathRuleValue)],
    ) -> Result<(), KernelError> {
        self.insert_lpm("SUBTREE_RULES", entries)
    }

    pub fn insert_unix_rules(
        &mut self,
        entries: &[(u32, PathKey, PathRuleValue)],
    ) -> Result<(), KernelError> {
        self.insert_lpm("UNIX_RULES", entries)
    }

    /// Writes (prefix length, key, value) entries into the LPM trie `name`.
    fn insert_lpm<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        entries: &[(u32, K, V)],
    ) -> Result<(), KernelError> {
        let map = self.ebpf.map_mut(name).ok_or(KernelError::Missing(name))?;
        let mut trie: LpmTrie<_, K, V> = LpmTrie::try_from(map).map_err(map_err(name))?;
        for (prefix_len, key, value) in entries {
            trie.insert(&Key::new(*prefix_len, *key), value, 0)
                .map_err(map_err(name))?;
        }
        Ok(())
    }

    /// The AGENTS map: agent cgroup id to its entry.
    fn agents_map(
        &mut self,
    ) -> Result<BpfHashMap<&mut aya::maps::MapData, u64, AgentEntry>, KernelError> {
        let map = self
            .ebpf
            .map_mut("AGENTS")
            .ok_or(KernelError::Missing("AGENTS"))?;
        BpfHashMap::try_from(map).map_err(map_err("AGENTS"))
    }

    pub fn set_agent(&mut self, cgroup_id: u64, entry: AgentEntry) -> Result<(), KernelError> {
        self.agents_map()?
            .insert(cgroup_id, entry, 0)
            .map_err(map_err("AGENTS"))
    }

    /// Sets which cgroup levels hold agents (`Config::agent_levels`).
    pub fn set_agent_levels(&mut self, agent_levels: u64) -> Result<(), KernelError> {
        self.write_config(Config {
            agent_levels,
            ..self.config
        })
    }

    /// Records that the HOLDS map was empty when the programs' count of
    /// holds made read `made` (`Config::holds_settled`): until they make
    /// another, counted calls skip looking for a hold. The caller reads
    /// the count before it finds the map empty (`KernelHolds::quiet`).
    pub fn settle_holds(&mut self, made: u64) -> Result<(), KernelError> {
        if self.config.holds_settled == made {
            return Ok(());
        }
        self.write_config(Config {
            holds_settled: made,
            ..self.config
        })
    }

    fn write_config(&mut self, config: Config) -> Result<(), KernelError> {
        let map = self
            .ebpf
            .map_mut("CONFIG")
            .ok_or(KernelError::Missing("CONFIG"))?;
        let mut array: Array<_, Config> = Array::try_from(map).map_err(map_err("CONFIG"))?;
        array.set(0, config, 0).map_err(map_err("CONFIG"))?;
        self.config = config;
        Ok(())
    }

    pub fn insert_net_rules(
        &mut self,
        entries: &[(u32, NetKey, NetRuleSet)],
    ) -> Result<(), KernelError> {
        self.insert_lpm("NET_RULES", entries)
    }

    /// Our loaded programs by name and kernel id, for run-time metrics.
    pub fn program_ids(&self) -> Vec<(String, u32)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| Some((name.to_owned(), p.info().ok()?.id())))
            .collect()
    }

    /// Hands the event ring buffer to its reader task.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(KernelError::Missing("EVENTS"))?;
        RingBuf::try_from(map).map_err(map_err("EVENTS"))
    }

    /// Hands the grant maps to the grant registry.
    pub fn take_grants(&mut self) -> Result<KernelGrants, KernelError> {
        let mut take =
            |name: &'static str| self.ebpf.take_map(name).ok_or(KernelError::Missing(name));
        let agent = take("AGENT_GRANTS")?;
        let path = take("PATH_GRANTS")?;
        let net = take("NET_GRANTS")?;
        let granted = take("GRANTED")?;
        Ok(KernelGrants {
            agent: BpfHashMap::try_from(agent).map_err(map_err("AGENT_GRANTS"))?,
            path: LpmTrie::try_from(path).map_err(map_err("PATH_GRANTS"))?,
            net: BpfHashMap::try_from(net).map_err(map_err("NET_GRANTS"))?,
            granted: Array::try_from(granted).map_err(map_err("GRANTED"))?,
        })
    }

    /// Hands the BUDGETS map to the budget service.
    pub fn take_budgets(&mut self) -> Result<BudgetMap, KernelError> {
        let map = self
            .ebpf
            .take_map("BUDGETS")
            .ok_or(KernelError::Missing("BUDGETS"))?;
        BpfHashMap::try_from(map).map_err(map_err("BUDGETS"))
    }

    /// Hands the HOLDS map, and the programs' count of holds made, to the
    /// hold registry.
    pub fn take_holds(&mut self) -> Result<KernelHolds, KernelError> {
        let map = self
            .ebpf
            .take_map("HOLDS")
            .ok_or(KernelError::Missing("HOLDS"))?;
        let made = self
            .ebpf
            .take_map("HOLDS_MADE")
            .ok_or(KernelError::Missing("HOLDS_MADE"))?;
        Ok(KernelHolds {
            map: parking_lot::Mutex::new(BpfHashMap::try_from(map).map_err(map_err("HOLDS"))?),
            made: Array::try_from(made).map_err(map_err("HOLDS_MADE"))?,
        })
    }

    /// Hands the loss counters to their poller.
    pub fn take_losses(&mut self) -> Result<LossCounters, KernelError> {
        let map = self
            .ebpf
            .take_map("LOSSES")
            .ok_or(KernelError::Missing("LOSSES"))?;
        Ok(LossCounters(
            PerCpuArray::try_from(map).map_err(map_err("LOSSES"))?,
        ))
    }
}
