//! The benchmark workloads: small loops run as their own processes (so the
//! bench can place them in an agent's cgroup, or start them under
//! `agent-guard run`), built in release so the loop itself costs next to
//! nothing beside the system call it measures. Each prints one JSON line.
use std::{
    ffi::CString,
    net::Ipv4Addr,
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

#[derive(clap::Args)]
pub struct WorkerArgs {
    #[command(subcommand)]
    pub job: Job,
}

#[derive(clap::Subcommand)]
pub enum Job {
    /// Create COUNT files in DIR (not timed), then time unlinking them.
    Unlink {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        count: u32,
    },
    /// Create FILE in DIR (not timed), then time COUNT open(O_RDONLY) and
    /// close of it: an ordinary open, which the guard must not slow.
    Open {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        count: u32,
    },
    /// Create a file in DIR (not timed), then time COUNT renames of it,
    /// back and forth between two names.
    Rename {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        count: u32,
    },
    /// Time COUNT UDP datagrams sent with sendto to 127.0.0.1:PORT, without
    /// connect (each one judged by cgroup/sendmsg4 for an agent).
    Udp {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        count: u32,
    },
    /// Time COUNT TCP connects to 127.0.0.1:PORT; each connection is reset
    /// at once (SO_LINGER 0), so no TIME_WAIT piles up.
    Connect {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        count: u32,
    },
    /// unlink() a path that does not exist, RATE times a second (0: as fast
    /// as possible) for SECS seconds or COUNT calls, whichever ends first.
    /// Inside an agent each call is one event from the delete observer.
    Flood {
        #[arg(long)]
        rate: u64,
        #[arg(long, default_value_t = 0.0)]
        secs: f64,
        #[arg(long, default_value_t = u64::MAX)]
        count: u64,
    },
    /// Time COUNT calls that fail as refused (EPERM): rt_sigqueueinfo to
    /// pid 1 with a non-negative si_code, which the kernel refuses to any
    /// caller before it looks at the target. The most the refusal observer
    /// at system call exit can cost a process that is not an agent's.
    Refused {
        #[arg(long)]
        count: u32,
    },
    /// COUNT held connects to 127.0.0.1:PORT, one after another; prints the
    /// CLOCK_BOOTTIME of each return (the kernel's hold ids use that clock).
    HeldConnect {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        count: u32,
    },
}

/// CLOCK_BOOTTIME in ns: the clock the kernel stamps holds with.
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn run(args: &WorkerArgs) -> Result<()> {
    let out = match &args.job {
        Job::Unlink { dir, count } => unlink(dir, *count)?,
        Job::Connect { port, count } => {
            let mut chunks = Vec::new();
            let mut chunk = Duration::ZERO;
            for i in 1..=*count {
                chunk += connect_once(*port)?;
                if i % CHUNK == 0 {
                    chunks.push(chunk);
                    chunk = Duration::ZERO;
                }
            }
            chunks.push(chunk);
            result(&chunks, *count)
        }
        Job::Open { dir, count } => open(dir, *count)?,
        Job::Rename { dir, count } => rename(dir, *count)?,
        Job::Udp { port, count } => udp(*port, *count)?,
        Job::Flood { rate, secs, count } => flood(*rate, *secs, *count),
        Job::Refused { count } => refused(*count)?,
        Job::HeldConnect { port, count } => {
            let mut returned = Vec::new();
            for _ in 0..*count {
                connect_once(*port)?;
                returned.push(boot_ns());
            }
            json!({ "returned_boot_ns": returned })
        }
    };
    println!("{out}");
    Ok(())
}

fn unlink(dir: &std::path::Path, count: u32) -> Result<serde_json::Value> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let paths: Vec<CString> = (0..count)
        .map(|i| CString::new(dir.join(format!("f{i}")).as_os_str().as_bytes()))
        .collect::<Result<_, _>>()
        .context("file name")?;
    for p in &paths {
        // SAFETY: NUL-terminated path; the fd is closed right away.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600) };
        if fd < 0 {
            bail!("creating {p:?}: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened by us.
        unsafe { libc::close(fd) };
    }
    let mut chunks = Vec::new();
    for chunk in paths.chunks(CHUNK as usize) {
        let start = Instant::now();
        for p in chunk {
            // SAFETY: NUL-terminated path.
            if unsafe { libc::unlink(p.as_ptr()) } != 0 {
                bail!("unlink {p:?}: {}", std::io::Error::last_os_error());
            }
        }
        chunks.push(start.elapsed());
    }
    Ok(result(&chunks, count))
}

/// Times `count` calls of `call` in chunks of [`CHUNK`].
fn timed(count: u32, mut call: impl FnMut(u32) -> Result<()>) -> Result<serde_json::Value> {
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < count {
        let n = CHUNK.min(count - i);
        let start = Instant::now();
        for k in 0..n {
            call(i + k)?;
        }
        chunks.push(start.elapsed());
        i += n;
    }
    Ok(result(&chunks, count))
}

fn refused(count: u32) -> Result<serde_json::Value> {
    // siginfo_t: si_signo, si_errno, si_code; si_code 0 (SI_USER) may only
    // be queued to oneself.
    let mut info = [0i32; 32];
    info[0] = libc::SIGUSR1;
    timed(count, |_| {
        // SAFETY: a siginfo-sized buffer the kernel only reads.
        let rc =
            unsafe { libc::syscall(libc::SYS_rt_sigqueueinfo, 1, libc::SIGUSR1, info.as_ptr()) };
        if rc == 0 {
            bail!("rt_sigqueueinfo to pid 1 was not refused");
        }
        Ok(())
    })
}

fn cpath(p: &std::path::Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("path")
}

fn open(dir: &std::path::Path, count: u32) -> Result<serde_json::Value> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("opened");
    std::fs::write(&file, b"x").context("creating the file")?;
    let path = cpath(&file)?;
    timed(count, |_| {
        // SAFETY: NUL-terminated path; the fd is closed right away.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            bail!("open {path:?}: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened by us.
        unsafe { libc::close(fd) };
        Ok(())
    })
}

fn rename(dir: &std::path::Path, count: u32) -> Result<serde_json::Value> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("a"), b"x").context("creating the file")?;
    let names = [cpath(&dir.join("a"))?, cpath(&dir.join("b"))?];
    timed(count, |i| {
        let (from, to) = (&names[(i % 2) as usize], &names[((i + 1) % 2) as usize]);
        // SAFETY: NUL-terminated paths.
        if unsafe { libc::rename(from.as_ptr(), to.as_ptr()) } != 0 {
            bail!("rename {from:?}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    })
}

fn udp(port: u16, count: u32) -> Result<serde_json::Value> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("udp socket")?;
    let to = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    timed(count, |_| {
        socket
            .send_to(b"bench", to)
            .with_context(|| format!("sendto {to}"))?;
        Ok(())
    })
}

/// Calls per timed chunk.
const CHUNK: u32 = 100;

/// The mean cost per call (everything, including the guard's wakeups and
/// whatever else the machine did meanwhile), and the median chunk's cost
/// per call: the typical call, robust against other load on a shared
/// machine but blind to rare expensive calls. Both are reported.
fn result(chunks: &[Duration], count: u32) -> serde_json::Value {
    let total: Duration = chunks.iter().sum();
    let full: Vec<f64> = chunks
        .iter()
        .take((count / CHUNK) as usize)
        .map(|d| d.as_nanos() as f64 / f64::from(CHUNK))
        .collect();
    json!({
        "ns_per_op": total.as_nanos() as f64 / f64::from(count),
        "ns_per_op_typical": super::report::median(&full),
    })
}

/// One connect to 127.0.0.1:port; returns how long the connect call took.
/// Socket creation and the reset are outside the measured part.
fn connect_once(port: u16) -> Result<Duration> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let start = Instant::now();
    // SAFETY: addr is a valid sockaddr_in of the size passed.
    let rc = unsafe {
        libc::connect(
            fd,
            (&raw const addr).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    let took = start.elapsed();
    let err = std::io::Error::last_os_error();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: fd is ours; linger is a valid option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
        libc::close(fd);
    }
    if rc != 0 {
        bail!("connect to 127.0.0.1:{port}: {err}");
    }
    Ok(took)
}

fn flood(rate: u64, secs: f64, count: u64) -> serde_json::Value {
    let path = c"/nonexistent-agent-guard-bench/x";
    let start = Instant::now();
    let limit = if secs > 0.0 {
        Duration::from_secs_f64(secs)
    } else {
        Duration::MAX
    };
    let mut done: u64 = 0;
    // Paced in small batches: the clock is read once per batch.
    const BATCH: u64 = 64;
    while done < count {
        let elapsed = start.elapsed();
        if elapsed >= limit {
            break;
        }
        if rate > 0 {
            let due = (elapsed.as_secs_f64() * rate as f64) as u64;
            if done >= due + BATCH {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        for _ in 0..BATCH.min(count - done) {
            // SAFETY: NUL-terminated static path; the call fails with ENOENT.
            unsafe { libc::unlink(path.as_ptr()) };
        }
        done += BATCH.min(count - done);
    }
    let secs = start.elapsed().as_secs_f64();
    json!({ "calls": done, "secs": secs, "rate": done as f64 / secs })
}
