//! QEMU tier: boots Debian kernels with BPF LSM active under QEMU (TCG) and
//! runs the privileged test binaries inside, in a chroot of the host's root
//! filesystem shared read-only. See KERNEL.md ("A second kernel for LSM
//! tests") for the measurements behind the choices here.
mod initramfs;
mod kernel;

use std::{
    env,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

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
const VM_TIMEOUT: Duration = Duration::from_secs(22 * 60);
/// Guest memory. virtio-fs maps all of it from a shared memfd.
const GUEST_MEM_MIB: u32 = 2048;
/// BPF LSM must be in the active list; Debian's default lsm= leaves it out.
/// loglevel=5 hides boot chatter but keeps warnings and oops traces.
const KERNEL_CMDLINE: &str =
    "console=ttyS0 lsm=lockdown,capability,landlock,yama,bpf panic=-1 loglevel=5";
/// The C virtiofsd that bookworm's qemu-system-common ships.
const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
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
            conformance: &conformance,
            filter: args.filter.as_deref(),
            path: &path,
            workdir: &workdir,
        };
        let boot_started = Instant::now();
        let dir = root.join("target/vm").join(&kernel.release);
        let result = run_guest(kernel, &plan, &dir);
        outcomes.push((
            kernel,
            share,
            dir.join("console.log"),
            boot_started.elapsed(),
            result,
        ));
    }

    eprintln!(
        "xtask: vm-test summary (total {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let mut failures = Vec::new();
    for (kernel, share, log, took, result) in &outcomes {
        let verdict = if result.is_ok() { "PASS" } else { "FAIL" };
        eprintln!(
            "  {verdict}  {}  ({}, {}, {:.1} s)  console: {}",
            kernel.release,
            kernel.package,
            share.name(),
            took.as_secs_f64(),
            log.display()
        );
        if let Err(err) = result {
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

/// Kills and reaps a child process when dropped, so no error path leaves a
/// QEMU or virtiofsd behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Errors mean it has already exited, which is what we want.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running virtiofsd and its socket, which is removed with it.
struct VirtioFsd {
    _process: KillOnDrop,
    socket: PathBuf,
}

impl Drop for VirtioFsd {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.socket);
    }
}

/// Boots one kernel, streams its console, and turns `VMTEST: exit=N` into
/// the result.
fn run_guest(kernel: &Kernel, plan: &GuestPlan<'_>, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let initrd = initramfs::pack(dir, plan)?;
    let log_path = dir.join("console.log");
    let label = format!("vm {}", kernel.label());
    eprintln!(
        "xtask: booting {} ({}, sharing / read-only over {}), console in {}",
        kernel.release,
        kernel.package,
        plan.share.name(),
        log_path.display()
    );

    let mut qemu = Command::new("qemu-system-x86_64");
    // TCG only: /dev/kvm on this machine kind cannot run a stock kernel, and
    // -smp 2 under multi-threaded TCG oopses while tracepoints toggle.
    qemu.args(["-accel", "tcg,thread=multi", "-smp", "1"])
        .args(["-M", "q35", "-cpu", "max"])
        .args(["-m", &format!("{GUEST_MEM_MIB}M")])
        // No default NIC, VGA or monitor: less to probe, nothing on stdio but the console.
        .args(["-nodefaults", "-no-user-config", "-no-reboot"])
        .args(["-display", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(kernel.vmlinuz())
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", KERNEL_CMDLINE]);

    // Declared before QEMU so that it is dropped (killed) after QEMU.
    let _virtiofsd = match plan.share {
        Share::VirtioFs => {
            let daemon = start_virtiofsd(dir)?;
            let socket = &daemon.socket;
            qemu.arg("-chardev")
                .arg(format!("socket,id=hostfs,path={}", socket.display()))
                .args(["-device", "vhost-user-fs-pci,chardev=hostfs,tag=host"])
                // vhost-user needs guest memory that virtiofsd can map.
                .args([
                    "-object",
                    &format!("memory-backend-memfd,id=mem,size={GUEST_MEM_MIB}M,share=on"),
                ])
                .args(["-numa", "node,memdev=mem"]);
            Some(daemon)
        }
        Share::NineP => {
            // readonly is enforced by QEMU; remap keeps inode numbers unique across host mounts.
            qemu.args([
                "-virtfs",
                "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
            ]);
            None
        }
    };

    let log = Arc::new(Mutex::new(
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?,
    ));
    let started = Instant::now();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("QEMU stdout")?;
    let stderr = child.stderr.take().context("QEMU stderr")?;
    let mut qemu = KillOnDrop(child);
    let console = {
        let (log, label) = (Arc::clone(&log), label.clone());
        thread::spawn(move || stream(stdout, &label, &log))
    };
    let errors = {
        let (log, label) = (Arc::clone(&log), format!("{label} qemu"));
        thread::spawn(move || stream(stderr, &label, &log))
    };

    let mut timed_out = false;
    loop {
        if qemu.0.try_wait().context("waiting for QEMU")?.is_some() {
            break;
        }
        if started.elapsed() > VM_TIMEOUT {
            timed_out = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    drop(qemu);
    let exit = console.join().ok().flatten();
    let _ = errors.join();
    eprintln!(
        "xtask: {} ran for {:.1} s",
        kernel.release,
        started.elapsed().as_secs_f64()
    );

    let log_path = log_path.display();
    match exit {
        _ if timed_out => bail!(
            "the guest did not finish within {} s and was killed; see {log_path}",
            VM_TIMEOUT.as_secs()
        ),
        None => bail!(
            "the guest stopped without printing `VMTEST: exit=N`: the kernel panicked or /init failed before \
             the tests finished; see {log_path}"
        ),
        Some(0) => Ok(()),
        Some(96) => bail!("a kernel module did not load in the guest (exit=96); see {log_path}"),
        Some(97) => bail!(
            "BPF LSM was not active in the guest, so the LSM backend went untested (exit=97); see {log_path}"
        ),
        Some(98) => bail!("setting up the guest's chroot failed (exit=98); see {log_path}"),
        Some(n) => bail!(
            "privileged tests failed in the guest (first non-zero exit status {n}); see {log_path}"
        ),
    }
}

/// Copies QEMU output line by line to the terminal (prefixed) and the log,
/// and returns N from the last `VMTEST: exit=N` line.
fn stream(from: impl Read, label: &str, log: &Mutex<File>) -> Option<i32> {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    let mut exit = None;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return exit,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if let Some(rest) = text.split("VMTEST: exit=").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            exit = digits.parse().ok();
        }
        // Not eprintln!, which panics when stderr is a closed pipe (`| head`):
        // the log and the verdict must not depend on the terminal.
        let _ = writeln!(std::io::stderr().lock(), "[{label}] {text}");
        if let Ok(mut file) = log.lock() {
            // A full disk should not abort the run; the terminal still has it.
            let _ = writeln!(file, "{text}");
        }
    }
}

/// Starts virtiofsd sharing the host's / read-only, and waits for its socket.
///
/// The C virtiofsd has no read-only option, so it runs in a private mount
/// namespace on a recursive bind of / whose every mount is remounted
/// read-only; the guest also mounts it ro. `sandbox=chroot` because the
/// default namespace sandbox fails here with pivot_root EBUSY.
fn start_virtiofsd(dir: &Path) -> Result<VirtioFsd> {
    if !Path::new(VIRTIOFSD).exists() {
        bail!("{VIRTIOFSD} is missing (it comes with qemu-system-common)");
    }
    let mountpoint = dir.join("host-ro");
    fs::create_dir_all(&mountpoint)
        .with_context(|| format!("creating {}", mountpoint.display()))?;
    // A socket path must fit sockaddr_un (108 bytes), which a deep workspace may not.
    let socket = env::temp_dir().join(format!("agent-guard-vm-{}.sock", std::process::id()));
    if socket.exists() {
        fs::remove_file(&socket).with_context(|| format!("removing stale {}", socket.display()))?;
    }
    let log_path = dir.join("virtiofsd.log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    // The mount list goes through a variable because dash has no pipefail:
    // a failing findmnt in a pipe would silently remount nothing. The awk
    // check then proves that the visible (topmost) mount at every point is ro.
    let script = r#"
        mount --rbind / "$1"
        mounts=$(findmnt --raw --noheadings --output TARGET --submounts --mountpoint "$1")
        printf '%s\n' "$mounts" | while read -r m; do mount -o remount,bind,ro "$m"; done
        awk -v root="$1" '$5 == root || index($5, root "/") == 1 { top[$5] = $6 }
            END { for (m in top) if (top[m] !~ /^ro/) { print "still writable: " m; bad = 1 }; exit bad }' \
            /proc/self/mountinfo
        exec "$3" --socket-path="$2" -o source="$1" -o sandbox=chroot -o cache=always
    "#;
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-euc",
            script,
            "virtiofsd-ro",
        ])
        .arg(&mountpoint)
        .arg(&socket)
        .arg(VIRTIOFSD)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("virtiofsd log")?)
        .stderr(log)
        .spawn()
        .context("starting virtiofsd (through unshare)")?;
    let mut daemon = KillOnDrop(child);
    // From here on, dropping `daemon` on an error kills it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if let Some(status) = daemon.0.try_wait().context("waiting for virtiofsd")? {
            bail!(
                "virtiofsd exited with {status} before QEMU could connect; see {}",
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "virtiofsd made no socket within 10 s; see {}",
                log_path.display()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(VirtioFsd {
        _process: daemon,
        socket,
    })
}
