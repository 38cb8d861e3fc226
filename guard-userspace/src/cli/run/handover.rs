//! The launcher outlives a daemon crash with its run.
//!
//! It keeps a copy of the run's seccomp listener, so that calls the daemon
//! had received stay waiting in the kernel instead of failing, watches its
//! control connection, and when the daemon goes away:
//!
//! * the socket file is gone: a clean stop (the daemon removes it and has
//!   denied every hold). The launcher lets its copy go, so the run's later
//!   deletes fail with ENOSYS, as they would with no launcher copy at all;
//! * the socket file is still there: a crash. The launcher waits for a
//!   daemon to serve it again and hands it the session and the listener
//!   (`SessionResume`); that daemon answers what was held.
//!
//! The launcher is made non-dumpable while it holds the listener, so the
//! agent (same uid, no privileges) cannot take it from it through
//! ptrace, pidfd_getfd or /proc/PID/fd and answer its own calls.
use std::{
    os::fd::{AsFd as _, OwnedFd},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use parking_lot::Mutex;

use anyhow::Result;

use crate::control::{Client, Refused, Request};

/// How often the watcher looks at the connection and retries a daemon.
const TICK: Duration = Duration::from_millis(200);

/// What the launcher holds of its run.
pub struct Link {
    pub socket: PathBuf,
    pub session: String,
    pub token: String,
    /// The launcher's copy of the run's seccomp listener (supervised runs).
    pub listener: Option<OwnedFd>,
    pub client: Client,
}

/// Watches the daemon for the length of the run.
pub struct Watch {
    client: Arc<Mutex<Option<Client>>>,
    done: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

struct Watcher {
    socket: PathBuf,
    session: String,
    token: String,
    listener: Option<OwnedFd>,
    client: Arc<Mutex<Option<Client>>>,
    done: Arc<AtomicBool>,
}

impl Watch {
    pub fn start(link: Link) -> Self {
        let client = Arc::new(Mutex::new(Some(link.client)));
        let done = Arc::new(AtomicBool::new(false));
        let watcher = Watcher {
            socket: link.socket,
            session: link.session,
            token: link.token,
            listener: link.listener,
            client: client.clone(),
            done: done.clone(),
        };
        let thread = thread::spawn(move || watcher.run());
        Self {
            client,
            done,
            thread,
        }
    }

    /// The command ended: stop watching, and report the end to whichever
    /// daemon holds the session now.
    pub fn finish(self, exit_code: Option<i32>, signal: Option<i32>) -> Result<()> {
        self.done.store(true, Ordering::Relaxed);
        // The watcher polls the connection's fd; it must be gone before the
        // connection is used or closed here.
        let _ = self.thread.join();
        let mut client = self.client.lock();
        let Some(client) = client.as_mut() else {
            anyhow::bail!("no daemon holds this run's session any more");
        };
        client.call(Request::SessionClose { exit_code, signal })?;
        Ok(())
    }
}

impl Watcher {
    fn run(mut self) {
        loop {
            if self.done.load(Ordering::Relaxed) {
                return;
            }
            let fd = self.client.lock().as_ref().map(Client::raw_fd);
            let Some(fd) = fd else { return };
            if !hung_up(fd) {
                continue;
            }
            *self.client.lock() = None;
            if !self.socket.exists() {
                let supervised = self.listener.take().is_some();
                eprintln!(
                    "agent-guard run: the daemon stopped; {}",
                    if supervised {
                        "this run's deletes now fail (ENOSYS)"
                    } else {
                        "this run is no longer guarded"
                    }
                );
                return;
            }
            eprintln!(
                "agent-guard run: lost the daemon at {}; waiting for it to come back \
                 (this run's deletes wait meanwhile)",
                self.socket.display()
            );
            match self.reconnect() {
                Some(client) => {
                    eprintln!("agent-guard run: the daemon is back; this run's session resumed");
                    *self.client.lock() = Some(client);
                }
                None => return,
            }
        }
    }

    /// Hands the session (and listener) to the next daemon on the socket;
    /// `None` if the command ended first or the daemon refused (then the
    /// listener is let go: fail closed, the run's deletes get ENOSYS).
    fn reconnect(&mut self) -> Option<Client> {
        loop {
            if self.done.load(Ordering::Relaxed) {
                return None;
            }
            thread::sleep(TICK);
            let Ok(mut client) = Client::connect(&self.socket) else {
                continue;
            };
            let request = Request::SessionResume {
                session: self.session.clone(),
                token: self.token.clone(),
            };
            match client.call_with_fd(request, self.listener.as_ref().map(|l| l.as_fd())) {
                Ok(_) => return Some(client),
                Err(err) if err.downcast_ref::<Refused>().is_some() => {
                    eprintln!(
                        "agent-guard run: the daemon would not take this run back ({err:#}); \
                         its deletes now fail (ENOSYS)"
                    );
                    self.listener = None;
                    return None;
                }
                // Gone again before answering: keep waiting.
                Err(_) => {}
            }
        }
    }
}

/// Whether the daemon closed the connection, waiting at most one tick. The
/// daemon never writes unasked, so only a hang-up wakes this.
fn hung_up(fd: std::os::fd::RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack.
    let n = unsafe { libc::poll(&raw mut pfd, 1, TICK.as_millis() as libc::c_int) };
    n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// Makes the launcher non-dumpable: its descriptors (the listener) are then
/// out of reach of unprivileged processes of the same uid.
pub fn protect_launcher() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}
