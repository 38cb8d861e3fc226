//! QEMU tier: boots Debian kernels with BPF LSM active under QEMU (TCG) and
//! runs the privileged test binaries inside, in a chroot of the host's root
//! filesystem shared read-only. See KERNEL.md ("A second kernel for LSM
//! tests") for the measurements behind the choices here.
mod console;
mod guest;
mod initramfs;
mod kernel;

use std::{
    env,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{build, setup};
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
}

/// Hard limit for one kernel, boot to power-off. A boot costs seconds; the
/// rest is the tests, which run about 17x slower than on the host (and
/// slower still on a busy machine); the bound keeps CI under 40 minutes.
pub(crate) const VM_TIMEOUT: Duration = Duration::from_secs(22 * 60);
/// Guest memory. virtio-fs maps all of it from a shared memfd.
pub(crate) const GUEST_MEM_MIB: u32 = 2048;
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
    let tests = build::build_privileged_tests()?;
    let path = guest_path();
    let root = build::workspace_root();
    let tests_dir = root.join("tests");
    let workdir = if tests_dir.is_dir() {
        tests_dir
    } else {
        root.clone()
    };

    let mut outcomes = Vec::new();
    for kernel in &kernels {
        let share = Share::for_kernel(kernel)?;
        let modules = kernel.modules_in_load_order(&share.modules(kernel))?;
        let plan = GuestPlan {
            share,
            modules: &modules,
            tests: &tests,
            daemon: &daemon,
            filter: args.filter.as_deref(),
            path: &path,
            workdir: &workdir,
        };
        let dir = root.join("target/vm").join(&kernel.release);
        let label = format!("vm {}", kernel.label());
        let run = guest::run(kernel, &plan, &dir, &label);
        outcomes.push((kernel, share, dir.join("console.log"), run));
    }

    eprintln!(
        "xtask: vm-test summary (total {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let mut failures = Vec::new();
    for (kernel, share, log, run) in &outcomes {
        let verdict = if run.result.is_ok() { "PASS" } else { "FAIL" };
        eprintln!(
            "  {verdict}  {}  ({}, {}, {:.1} s)  console: {}",
            kernel.release,
            kernel.package,
            share.name(),
            run.took.as_secs_f64(),
            log.display()
        );
        print_times(&run.console);
        if let Err(err) = &run.result {
            failures.push(format!("{}: {err:#}", kernel.release));
        }
    }
    if !failures.is_empty() {
        bail!(
            "vm-test failed on {} of {} kernel(s):\n  {}",
            failures.len(),
            outcomes.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// The guest time of each test binary, longest first, then the slowest tests.
fn print_times(console: &console::Console) {
    let mut binaries: Vec<_> = console.binaries.iter().collect();
    binaries.sort_by(|a, b| b.secs.total_cmp(&a.secs));
    for run in binaries {
        eprintln!(
            "        {:>7.1} s  {} (exit {})",
            run.secs, run.name, run.status
        );
    }
    let mut tests: Vec<_> = console.tests.iter().collect();
    tests.sort_by(|a, b| b.secs.total_cmp(&a.secs));
    eprintln!("      slowest tests:");
    for run in tests.iter().take(15) {
        eprintln!("        {:>7.1} s  {}::{}", run.secs, run.binary, run.test);
    }
}

/// PATH inside the chroot: the real bin folder of the host's python3 first
/// (here a pyenv build; its shims are shell scripts that need pyenv's state),
/// then the host's PATH, then the standard folders.
fn guest_path() -> String {
    let python = setup::output(Command::new("python3").args([
        "-c",
        "import os, sys; print(os.path.dirname(os.path.realpath(sys.executable)))",
    ]));
    let host = env::var("PATH").unwrap_or_default();
    let standard = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut dirs: Vec<&str> = Vec::new();
    for dir in python
        .iter()
        .map(|p| p.trim())
        .chain(host.split(':'))
        .chain(standard.split(':'))
    {
        if !dir.is_empty() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.join(":")
}
