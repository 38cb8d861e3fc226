//! A rogue agent's trick against holds: make a guarded call, and when the
//! held thread resumes on its approval, have a signal handler rewrite the
//! call's argument before the kernel restarts the call. An approval must
//! cover exactly the held call, so the rewritten call has to be judged
//! afresh.
//!
//!     retarget connect ADDR PORT NEW_PORT
//!     retarget unlink PATH NEW_PATH
//!
//! Prints `pid=PID`, then `errno=0` (the call succeeded) or `errno=N`, then
//! waits for stdin to close. SIGUSR1 arms the rewrite: it swaps NEW_PORT or
//! NEW_PATH into the buffer the pending call reads.
use std::{
    io::Read as _,
    net::Ipv4Addr,
    sync::atomic::{AtomicUsize, Ordering},
};

/// The call's live argument, and what SIGUSR1 writes over it.
static mut LIVE: [u8; 256] = [0; 256];
static mut NEXT: [u8; 256] = [0; 256];
static LEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn rewrite(_: libc::c_int) {
    // SAFETY: async-signal-safe byte copies between two statics that only
    // this handler writes once the call has started.
    unsafe {
        let n = LEN.load(Ordering::Relaxed);
        let live = &raw mut LIVE;
        let next = &raw const NEXT;
        for i in 0..n {
            (*live)[i] = (*next)[i];
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: retarget connect ADDR PORT NEW_PORT | retarget unlink PATH NEW_PATH";
    let op = args.get(1).map(String::as_str);
    // SAFETY: installing a plain handler for SIGUSR1, without SA_RESTART:
    // the kernel restarts a held call (ERESTARTNOINTR) regardless.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = rewrite as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    println!("pid={}", std::process::id());
    let rc = match (op, args.len()) {
        (Some("connect"), 5) => {
            let addr: Ipv4Addr = args[2].parse().expect(usage);
            let port: u16 = args[3].parse().expect(usage);
            let next: u16 = args[4].parse().expect(usage);
            let sa = |port: u16| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(addr).to_be(),
                },
                sin_zero: [0; 8],
            };
            let n = size_of::<libc::sockaddr_in>();
            let (first, then) = (sa(port), sa(next));
            // SAFETY: sockaddr_in is plain data, copied byte for byte into
            // the statics before the call starts; socket/connect get valid
            // pointers and lengths.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&raw const first).cast::<u8>(),
                    (&raw mut LIVE).cast::<u8>(),
                    n,
                );
                std::ptr::copy_nonoverlapping(
                    (&raw const then).cast::<u8>(),
                    (&raw mut NEXT).cast::<u8>(),
                    n,
                );
                LEN.store(n, Ordering::Relaxed);
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                libc::connect(fd, (&raw const LIVE).cast(), n as libc::socklen_t)
            }
        }
        (Some("unlink"), 4) => {
            let (path, next) = (args[2].as_bytes(), args[3].as_bytes());
            assert!(path.len() < 255 && next.len() < 255, "paths too long");
            let n = path.len().max(next.len()) + 1;
            // SAFETY: as above; both buffers stay NUL-terminated.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    path.as_ptr(),
                    (&raw mut LIVE).cast::<u8>(),
                    path.len(),
                );
                std::ptr::copy_nonoverlapping(
                    next.as_ptr(),
                    (&raw mut NEXT).cast::<u8>(),
                    next.len(),
                );
                LEN.store(n, Ordering::Relaxed);
                libc::unlink((&raw const LIVE).cast())
            }
        }
        _ => panic!("{usage}"),
    };
    let errno = if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    };
    println!("errno={errno}");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}
