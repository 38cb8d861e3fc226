//! QEMU tier: boots Debian kernels with BPF LSM active under QEMU (TCG) and
//! runs the privileged test binaries inside, in a chroot of the host's root
//! filesystem shared read-only. See KERNEL.md ("A second kernel for LSM
//! tests") for the measurements behind the choices here.
mod console;
mod guest;
mod initramfs;
mod kernel;
mod split;

use std::{
    env, fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{build, setup};
use guest::GuestRun;
use initramfs::GuestPlan;
use kernel::Kernel;

#[derive(clap::Args, Default, Clone)]
pub struct VmTestArgs {
    /// Kernel to boot: a Debian package name, a .deb path, or a version like 6.12.
    #[arg(long, conflicts_with = "all_kernels")]
    pub kernel: Option<String>,
    /// Run every kernel of the matrix in sequence.
    #[arg(long)]
    pub all_kernels: bool,
    /// Only run tests whose name contains this filter.
    #[arg(long)]
    pub filter: Option<String>,
    /// Guests to boot side by side, each running its share of the tests on
    /// one core [default: one per core, at most 4].
    #[arg(long)]
    pub guests: Option<usize>,
}

/// More guests than this need more memory than a small machine has, and
/// each boot adds its own cost.
const MAX_DEFAULT_GUESTS: usize = 4;

/// Hard limit for one guest, boot to power-off; the guests of a kernel run
/// side by side, so it bounds the kernel too. A boot costs seconds; the
/// rest is the tests, which run about 17x slower than on the host (and
/// slower still on a busy machine). Two guests took 924 to 1481 s each in
/// clean-clone CI runs of 2026-12-07 on the same tree size. TCG time swings
/// with the host's CPU, whatever our load: on a machine of the same kind
/// on 2026-12-08 (a newer build of its kernel, where a bare unlink cost
/// twice as much) they needed about 2 400 s, and 1 920 s cut both short
/// with every test so far passing. The bound leaves room above that,
/// since a guest cut short fails CI.
pub(crate) const VM_TIMEOUT: Duration = Duration::from_secs(50 * 60);
/// Guest memory. virtio-fs maps all of it from a shared memfd.
pub(crate) const GUEST_MEM_MIB: u32 = 2048;
/// Host memory one guest may take: its RAM, QEMU's own (TCG's translation
/// cache among it) and virtiofsd's.
const GUEST_HOST_MIB: u64 = GUEST_MEM_MIB as u64 + 512;
/// BPF LSM must be in the active list; Debian's default lsm= leaves it out.
/// loglevel=5 hides boot chatter but keeps warnings and oops traces.
pub(crate) const KERNEL_CMDLINE: &str =
    "console=ttyS0 lsm=lockdown,capability,landlock,yama,bpf panic=-1 loglevel=5";
/// The C virtiofsd that bookworm's qemu-system-common ships.
pub(crate) const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
/// Set to "9p" or "virtiofs" to override the per-kernel choice of `Share`.
const SHARE_OVERRIDE_ENV: &str = "XTASK_VM_SHARE";

/// How the guest sees the host's root filesystem.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Preferred: faster, and the only option on the cloud kernels, which
    /// have no 9p at all. Built in on 6.12, a module on 6.1.
    VirtioFs,
    /// Fallback for kernels without virtio-fs. Among Debian's kernels only
    /// the generic flavour has 9p, as modules.
    NineP,
}

impl Share {
    fn for_kernel(kernel: &Kernel) -> Result<Self> {
        let has = |option| matches!(kernel.config(option), Some("y" | "m"));
        match env::var(SHARE_OVERRIDE_ENV).ok().as_deref() {
            Some("9p") => return Ok(Self::NineP),
            Some("virtiofs") => return Ok(Self::VirtioFs),
            Some(other) => bail!("{SHARE_OVERRIDE_ENV}={other}: expected 9p or virtiofs"),
            None => {}
        }
        if has("CONFIG_VIRTIO_FS") {
            Ok(Self::VirtioFs)
        } else if has("CONFIG_9P_FS") && has("CONFIG_NET_9P_VIRTIO") {
            Ok(Self::NineP)
        } else {
            bail!(
                "kernel {} has neither virtio-fs nor 9p over virtio",
                kernel.release
            )
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::VirtioFs => "virtio-fs",
            Self::NineP => "9p",
        }
    }

    /// Modules the guest must insmod before it can mount the share.
    fn modules(self, kernel: &Kernel) -> Vec<&'static str> {
        let wanted: &[(&str, &str)] = match self {
            Self::VirtioFs => &[
                ("CONFIG_VIRTIO_PCI", "virtio_pci"),
                ("CONFIG_VIRTIO_FS", "virtiofs"),
            ],
            Self::NineP => &[
                ("CONFIG_VIRTIO_PCI", "virtio_pci"),
                ("CONFIG_NET_9P_VIRTIO", "9pnet_virtio"),
                ("CONFIG_9P_FS", "9p"),
            ],
        };
        wanted
            .iter()
            .filter(|(option, _)| kernel.config(option) == Some("m"))
            .map(|(_, module)| *module)
            .collect()
    }
}

pub fn vm_test(args: &VmTestArgs) -> Result<()> {
    let started = Instant::now();
    let specs: Vec<&str> = match (&args.kernel, args.all_kernels) {
        (Some(_), true) => bail!("--kernel and --all-kernels exclude each other"),
        (Some(kernel), false) => vec![kernel.as_str()],
        (None, true) => kernel::ALL_LINES.to_vec(),
        (None, false) => vec![kernel::DEFAULT_LINE],
    };
    // kmod: depmod for the modules.dep a .deb lacks. xz-utils: 6.12's modules.
    setup::apt_install(&[
        "qemu-system-x86",
        "busybox-static",
        "cpio",
        "kmod",
        "xz-utils",
    ])?;
    let kernels = specs
        .iter()
        .map(|spec| kernel::fetch(&kernel::resolve(spec)?))
        .collect::<Result<Vec<_>>>()?;
    for kernel in &kernels {
        if kernel.config("CONFIG_BPF_LSM") != Some("y") {
            bail!(
                "kernel {} is built without CONFIG_BPF_LSM; it cannot run this tier",
                kernel.release
            );
        }
    }

    let daemon = build::build_daemon()?;
    let conformance = crate::conformance::prepare(&daemon)?;
    let binaries = build::build_privileged_tests()?;
    let filter = args.filter.as_deref();
    let mut listed = Vec::new();
    let mut host_tier = 0;
    for (binary, tests) in split::list(&binaries, filter)? {
        match host_only(&binary) {
            Some(why) => {
                eprintln!(
                    "xtask: vm: not in the guest, host tier only: {} ({} tests): {why}",
                    console::binary_name(&binary.to_string_lossy()),
                    tests.len()
                );
                host_tier += 1;
            }
            None => listed.push((binary, tests)),
        }
    }
    if listed.is_empty() {
        bail!(
            "no privileged test name contains {:?}{}: nothing to run in the guest",
            filter.unwrap_or_default(),
            if host_tier == 0 {
                ""
            } else {
                " outside the host-only binaries above"
            }
        );
    }
    let path = setup::agent_path();
    let root = build::workspace_root();
    let tests_dir = root.join("tests");
    let workdir = if tests_dir.is_dir() {
        tests_dir
    } else {
        root.clone()
    };
    let vm_dir = root.join("target/vm");
    let durations_path = vm_dir.join("durations.txt");
    let durations = split::Durations::load(&durations_path);
    let guests = split::assign(&listed, filter, &durations, guest_count(args)?);

    let mut outcomes = Vec::new();
    for kernel in &kernels {
        let share = Share::for_kernel(kernel)?;
        let modules = kernel.modules_in_load_order(&share.modules(kernel))?;
        let dir = vm_dir.join(&kernel.release);
        // Fresh each run: a guest folder left by a run with more guests
        // would pass for this run's.
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        eprintln!(
            "xtask: vm {}: {} tests of {} binaries in {} guest(s) side by side, one core each; \
             estimated guest time:",
            kernel.label(),
            listed.iter().map(|(_, tests)| tests.len()).sum::<usize>(),
            listed.len(),
            guests.len()
        );
        for (i, jobs) in guests.iter().enumerate() {
            let names: Vec<String> = jobs.iter().map(split::Job::describe).collect();
            eprintln!(
                "xtask:   guest {} {:>6.0} s  {}",
                i + 1,
                jobs.iter().map(|j| j.estimate).sum::<f64>(),
                names.join(", ")
            );
        }
        let runs: Vec<GuestRun> = thread::scope(|scope| {
            let handles: Vec<_> = guests
                .iter()
                .enumerate()
                .map(|(i, jobs)| {
                    let plan = GuestPlan {
                        share,
                        modules: &modules,
                        jobs,
                        daemon: &daemon,
                        conformance: &conformance,
                        path: &path,
                        workdir: &workdir,
                    };
                    let guest_dir = dir.join(format!("guest-{}", i + 1));
                    let label = format!("vm {} g{}", kernel.label(), i + 1);
                    scope.spawn(move || guest::run(kernel, &plan, &guest_dir, &label))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| GuestRun::failed("its xtask thread panicked"))
                })
                .collect()
        });
        let measured: Vec<_> = runs.iter().flat_map(|run| &run.console.tests).collect();
        if let Err(err) = split::Durations::record(&durations_path, &measured) {
            eprintln!("xtask: warning: the measured test times were not kept: {err:#}");
        }
        outcomes.push((kernel, share, dir, runs));
    }

    eprintln!(
        "xtask: vm-test summary (total {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let mut failures = Vec::new();
    for (kernel, share, dir, runs) in &outcomes {
        let failed = runs.iter().filter(|run| run.result.is_err()).count();
        eprintln!(
            "  {}  {}  ({}, {}, {} guest(s), longest {:.1} s)",
            if failed == 0 { "PASS" } else { "FAIL" },
            kernel.release,
            kernel.package,
            share.name(),
            runs.len(),
            runs.iter()
                .map(|r| r.took.as_secs_f64())
                .fold(0.0, f64::max),
        );
        for (i, (run, jobs)) in runs.iter().zip(&guests).enumerate() {
            let guest = format!("{} guest {}", kernel.release, i + 1);
            let console = dir.join(format!("guest-{}", i + 1)).join("console.log");
            let planned: usize = jobs.iter().map(|job| job.tests.len()).sum();
            let unproven = split::unproven(jobs, &run.console);
            let verdict = if run.result.is_ok() && unproven.is_empty() {
                "PASS"
            } else {
                "FAIL"
            };
            eprintln!(
                "    guest {}  {verdict}  {:.1} s (estimated {:.0} s), {} of {planned} planned tests reported, {} failed  console: {}",
                i + 1,
                run.took.as_secs_f64(),
                jobs.iter().map(|job| job.estimate).sum::<f64>(),
                run.console.tests.len(),
                run.console.failed.len(),
                console.display()
            );
            print_times(&run.console);
            for test in &run.console.failed {
                eprintln!("      FAILED   {test}");
            }
            for what in &unproven {
                eprintln!("      NOT RUN  {what}");
            }
            for what in &run.console.leftovers {
                eprintln!("      LEFTOVER {what} (killed before the next binary)");
            }
            // Each guest has its own /tmp, so its own skip log.
            if run.console.skipped.is_empty() {
                eprintln!("      every test of this guest ran (no skips)");
            }
            for line in &run.console.skipped {
                eprintln!("      skipped  {line}");
            }
            match &run.result {
                Err(err) => failures.push(format!("{guest}: {err:#}")),
                Ok(()) if !unproven.is_empty() => failures.push(format!(
                    "{guest}: exited 0, but not every planned test is proven to have run: {}; see {}",
                    unproven.join("; "),
                    console.display()
                )),
                Ok(()) => {}
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "vm-test failed in {} guest(s):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// Test binaries the guest does not run, and why: they test what happens
/// to events and commands after the daemon has them, which is the same
/// code whichever kernel hook made the event (the host tier runs them).
/// Their guest time (about 250 s under TCG) keeps CI within its budget.
const HOST_ONLY: [(&str, &str); 4] = [
    (
        "chain",
        "the hash chain and file rotation read typed events, not kernel hooks",
    ),
    (
        "sinks",
        "sinks and their queues get the same lines whatever hook made them",
    ),
    (
        "otlp",
        "the OTLP export gets the same lines whatever hook made them",
    ),
    (
        "webhook",
        "webhooks fire on holds and decisions, the same on every backend",
    ),
];

/// Why `binary` runs on the host tier only, if it does.
fn host_only(binary: &Path) -> Option<&'static str> {
    let name = console::binary_name(&binary.to_string_lossy());
    HOST_ONLY
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
}

/// How many guests share the tests: `--guests`, else one per core, at most
/// [`MAX_DEFAULT_GUESTS`] and as many as the host's free memory holds.
fn guest_count(args: &VmTestArgs) -> Result<usize> {
    let available = available_mib();
    let fits = available.map(|mib| (mib / GUEST_HOST_MIB) as usize);
    match args.guests {
        Some(0) => bail!("--guests 0: at least one guest must run the tests"),
        Some(n) => {
            if let Some(fits) = fits.filter(|fits| n > *fits) {
                bail!(
                    "--guests {n}: each guest needs about {GUEST_HOST_MIB} MiB, and the host has {} MiB \
                     available, enough for {fits}",
                    available.unwrap_or_default()
                );
            }
            Ok(n)
        }
        None => {
            let cores = thread::available_parallelism().map_or(1, usize::from);
            let n = cores.min(MAX_DEFAULT_GUESTS);
            match fits {
                Some(fits) if fits < n => {
                    eprintln!(
                        "xtask: {} MiB of memory available holds {fits} guest(s) of about {GUEST_HOST_MIB} MiB, \
                         not one per core ({n}); the guests will take longer",
                        available.unwrap_or_default()
                    );
                    Ok(fits.max(1))
                }
                _ => Ok(n),
            }
        }
    }
}

/// MemAvailable from /proc/meminfo, in MiB.
fn available_mib() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The guest time of each test binary, longest first.
fn print_times(console: &console::Console) {
    let mut binaries: Vec<_> = console.binaries.iter().collect();
    binaries.sort_by(|a, b| b.secs.total_cmp(&a.secs));
    for run in binaries {
        eprintln!(
            "        {:>7.1} s  {} (exit {})",
            run.secs, run.name, run.status
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_only_binaries_are_named_by_their_cargo_stem() {
        let deps = Path::new("/w/target/debug/deps");
        assert!(host_only(&deps.join("chain-0123abcdef")).is_some());
        assert!(host_only(&deps.join("webhook-9f")).is_some());
        assert!(host_only(&deps.join("holds-0123abcdef")).is_none());
        assert!(host_only(&deps.join("rogue_net-0123abcdef")).is_none());
    }
}
