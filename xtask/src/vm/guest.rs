//! One guest: packs its initramfs, starts virtiofsd and QEMU, streams the
//! console into a log (each line stamped with the host's seconds since
//! boot) and turns `VMTEST: exit=N` into the result, under a hard timeout.
use std::{
    env,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    GUEST_MEM_MIB, KERNEL_CMDLINE, Share, VIRTIOFSD, VM_TIMEOUT,
    console::Console,
    initramfs::{self, GuestPlan},
    kernel::Kernel,
};

/// How one guest ended.
pub struct GuestRun {
    /// Its console, parsed.
    pub console: Console,
    pub took: Duration,
    pub result: Result<()>,
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

impl GuestRun {
    /// A guest that never got to boot.
    pub fn failed(why: &str) -> Self {
        Self {
            console: Console::default(),
            took: Duration::ZERO,
            result: Err(anyhow::anyhow!("{why}")),
        }
    }
}

/// Boots one kernel in `dir` (its own initramfs, console log, virtiofsd and
/// socket), runs `plan` and waits for it, at most [`VM_TIMEOUT`]. `label`
/// prefixes its console lines on the terminal.
pub fn run(kernel: &Kernel, plan: &GuestPlan<'_>, dir: &Path, label: &str) -> GuestRun {
    let started = Instant::now();
    let mut console = Console::default();
    let result = boot(kernel, plan, dir, label, &mut console);
    GuestRun {
        console,
        took: started.elapsed(),
        result,
    }
}

fn boot(
    kernel: &Kernel,
    plan: &GuestPlan<'_>,
    dir: &Path,
    label: &str,
    parsed: &mut Console,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let initrd = initramfs::pack(dir, plan)?;
    let log_path = dir.join("console.log");
    eprintln!(
        "xtask: {label}: booting {} ({}, sharing / read-only over {}), console in {}",
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
        let (log, label) = (Arc::clone(&log), label.to_owned());
        thread::spawn(move || stream(stdout, &label, &log, started))
    };
    let errors = {
        let (log, label) = (Arc::clone(&log), format!("{label} qemu"));
        thread::spawn(move || stream(stderr, &label, &log, started))
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
    if let Ok(console) = console.join() {
        *parsed = console;
    }
    let _ = errors.join();
    eprintln!(
        "xtask: {label}: ran for {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let exit = parsed.exit;

    let log_path = log_path.display();
    let during = parsed
        .running()
        .map(|what| format!(" during {what}"))
        .unwrap_or_default();
    match exit {
        _ if timed_out => bail!(
            "the guest did not finish within {} s and was killed{during}; see {log_path}",
            VM_TIMEOUT.as_secs()
        ),
        None => bail!(
            "the guest stopped without printing `VMTEST: exit=N`{during}: the kernel panicked or /init \
             failed before the tests finished; see {log_path}"
        ),
        Some(0) => Ok(()),
        Some(96) => bail!("a kernel module did not load in the guest (exit=96); see {log_path}"),
        Some(97) => bail!(
            "BPF LSM was not active in the guest, so the LSM backend went untested (exit=97); see {log_path}"
        ),
        Some(98) => bail!("setting up the guest's chroot failed (exit=98); see {log_path}"),
        Some(n) => {
            // libtest's FAILED lines, else the binaries that died without one.
            let mut which = parsed.failed.clone();
            if which.is_empty() {
                which = parsed
                    .binaries
                    .iter()
                    .filter(|b| b.status != 0)
                    .map(|b| format!("{} (exit {})", b.name, b.status))
                    .collect();
            }
            bail!(
                "privileged tests failed in the guest: {} (first non-zero exit status {n}); see {log_path}",
                which.join(", ")
            )
        }
    }
}

/// Copies QEMU output line by line to the terminal (prefixed with `label`)
/// and the log (prefixed with the seconds since `boot`), and parses it.
fn stream(from: impl Read, label: &str, log: &Mutex<File>, boot: Instant) -> Console {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    let mut console = Console::default();
    loop {
        line.clear();
        // At the end a partial line (a test that never finished) still counts.
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return console,
            Ok(_) => {}
        }
        let at = boot.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        console.line(text, at);
        // Not eprintln!, which panics when stderr is a closed pipe (`| head`):
        // the log and the verdict must not depend on the terminal.
        let _ = writeln!(std::io::stderr().lock(), "[{label}] {text}");
        if let Ok(mut file) = log.lock() {
            // A full disk should not abort the run; the terminal still has it.
            let _ = writeln!(file, "{at:7.1} {text}");
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
    // One socket per guest: guests run side by side, each with its own virtiofsd.
    static SOCKETS: AtomicU32 = AtomicU32::new(0);
    let socket = env::temp_dir().join(format!(
        "agent-guard-vm-{}-{}.sock",
        std::process::id(),
        SOCKETS.fetch_add(1, Ordering::Relaxed)
    ));
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
