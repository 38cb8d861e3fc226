//! Sinks: where rendered lines go. Each writer sink (stdout, file, tcp,
//! syslog, otlp) is a thread fed through a bounded queue; the emitter only ever
//! `try_send`s, so a slow or dead sink never blocks enforcement or the other
//! sinks. What does not fit is counted and reported as a `loss` event.
//! Stream readers (the unix sink, `events --follow`) are subscribers, see
//! `stream.rs`.
mod file;
mod net;
pub mod otlp;
pub mod stream;

use std::{
    collections::VecDeque,
    io::{self, Write as _},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::model::LossReason;
use crate::policy::sink::{Format, SinkConfig, SinkKind};

/// One rendered event line and what a syslog header needs from it.
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub kind: &'static str,
    pub time: String,
    /// A denial or a loss: syslog severity notice rather than info.
    pub notice: bool,
}

pub type Line = Arc<Rendered>;

/// Loss lines that did not fit a full queue wait here (never dropped, so a
/// reader's accounting stays exact) up to this many.
pub const BACKLOG_MAX: usize = 4096;

/// What a writer thread shares with the emitter and `status`.
#[derive(Default)]
pub struct SinkStats {
    pub written: AtomicU64,
    /// Lines the writer took from its queue but could not deliver.
    pub write_failed: AtomicU64,
    /// Reachable (a connected collector; always true for local sinks).
    pub up: AtomicBool,
    /// Set at daemon exit: stop retrying a collector that is down.
    pub closing: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

impl SinkStats {
    fn set_error(&self, err: impl std::fmt::Display) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(err.to_string());
        }
    }
}

/// The bounded queue in front of one consumer, with its loss accounting.
/// Lines keep seq order: once a loss line waits in the backlog, later lines
/// queue behind it or are dropped.
pub struct Queue<T> {
    backlog: VecDeque<T>,
    /// Dropped since the last `loss` event about this queue.
    pub unreported: u64,
    pub dropped_total: u64,
}

impl<T: Clone> Default for Queue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> Queue<T> {
    pub fn new() -> Self {
        Self {
            backlog: VecDeque::new(),
            unreported: 0,
            dropped_total: 0,
        }
    }

    /// Offers `line`; `try_send` returns Err(true) when full, Err(false)
    /// when the consumer is gone. A `priority` line (a loss event) waits in
    /// the backlog instead of being dropped. Returns false once the
    /// consumer is gone.
    pub fn offer(
        &mut self,
        line: T,
        priority: bool,
        mut try_send: impl FnMut(T) -> Result<(), (T, bool)>,
    ) -> bool {
        while let Some(front) = self.backlog.pop_front() {
            match try_send(front) {
                Ok(()) => {}
                Err((back, full)) => {
                    self.backlog.push_front(back);
                    if !full {
                        return false;
                    }
                    break;
                }
            }
        }
        let line = if self.backlog.is_empty() {
            match try_send(line) {
                Ok(()) => return true,
                Err((_, false)) => return false,
                Err((line, true)) => line,
            }
        } else {
            line
        };
        if priority && self.backlog.len() < BACKLOG_MAX {
            self.backlog.push_back(line);
        } else {
            self.unreported += 1;
            self.dropped_total += 1;
        }
        true
    }

    pub fn take_backlog(&mut self) -> VecDeque<T> {
        std::mem::take(&mut self.backlog)
    }

    pub fn queued_in_backlog(&self) -> usize {
        self.backlog.len()
    }
}

/// A writer sink as the emitter holds it.
pub struct Writer {
    pub name: String,
    pub type_name: &'static str,
    pub format: Format,
    tx: Option<SyncSender<Line>>,
    pub queue: Queue<Line>,
    pub capacity: usize,
    pub stats: Arc<SinkStats>,
    thread: Option<JoinHandle<()>>,
    /// `write_failed` already turned into loss events.
    reported_failed: u64,
}

impl Writer {
    /// Starts the sink's thread. A file that cannot be opened is an error
    /// now, at start-up; a collector that is down is retried in the thread.
    pub fn start(cfg: &SinkConfig, format: Format, host: &str) -> io::Result<Self> {
        let capacity = cfg.queue.unwrap_or(crate::policy::sink::DEFAULT_QUEUE);
        let (tx, rx) = sync_channel::<Line>(capacity);
        let stats = Arc::new(SinkStats::default());
        let name = cfg.name.clone();
        let thread_stats = stats.clone();
        let body: Box<dyn FnOnce() + Send> = match &cfg.kind {
            SinkKind::Stdout => {
                stats.up.store(true, Ordering::Relaxed);
                Box::new(move || stdout(&rx, &thread_stats))
            }
            SinkKind::File {
                path,
                max_bytes,
                keep,
            } => {
                let mut f = file::Rotating::open(path.clone(), *max_bytes, *keep)?;
                stats.up.store(true, Ordering::Relaxed);
                Box::new(move || f.run(&rx, &thread_stats))
            }
            SinkKind::Tcp { address } => {
                let mut c = net::Collector::new(address.clone(), None);
                Box::new(move || c.run(&rx, &thread_stats))
            }
            SinkKind::Syslog { address, app_name } => {
                let mut c = net::Collector::new(
                    address.clone(),
                    Some(net::Syslog {
                        host: host.to_owned(),
                        app_name: app_name.clone(),
                        pid: std::process::id(),
                    }),
                );
                Box::new(move || c.run(&rx, &thread_stats))
            }
            SinkKind::Otlp { url } => {
                let mut e = otlp::Exporter::new(url.clone(), host)?;
                Box::new(move || e.run(&rx, &thread_stats))
            }
            SinkKind::Unix { .. } => {
                return Err(io::Error::other("a unix sink is served, not written"));
            }
        };
        let thread = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(body)?;
        Ok(Self {
            name,
            type_name: cfg.kind.type_name(),
            format,
            tx: Some(tx),
            queue: Queue::new(),
            capacity,
            stats,
            thread: Some(thread),
            reported_failed: 0,
        })
    }

    pub fn offer(&mut self, line: Line, priority: bool) {
        let Some(tx) = &self.tx else { return };
        let alive = self.queue.offer(line, priority, |l| match tx.try_send(l) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(l)) => Err((l, true)),
            Err(TrySendError::Disconnected(l)) => Err((l, false)),
        });
        if !alive {
            // The thread ended (it only does on a bug); count, don't block.
            self.queue.unreported += 1;
            self.queue.dropped_total += 1;
        }
    }

    /// Loss reports due: (reason, count, total so far for that reason),
    /// resetting the counters.
    pub fn take_losses(&mut self) -> Vec<(LossReason, u64, u64)> {
        let mut out = Vec::new();
        if self.queue.unreported > 0 {
            let reason = if self.stats.up.load(Ordering::Relaxed) {
                LossReason::SinkSlow
            } else {
                LossReason::SinkDown
            };
            let count = std::mem::take(&mut self.queue.unreported);
            out.push((reason, count, self.queue.dropped_total));
        }
        let failed = self.stats.write_failed.load(Ordering::Relaxed);
        if failed > self.reported_failed {
            out.push((
                LossReason::SinkWriteFailed,
                failed - self.reported_failed,
                failed,
            ));
            self.reported_failed = failed;
        }
        out
    }

    pub fn status(&self) -> Value {
        let up = self.stats.up.load(Ordering::Relaxed);
        let last_error = self.stats.last_error.lock().ok().and_then(|e| e.clone());
        json!({
            "name": self.name,
            "type": self.type_name,
            "format": self.format.name(),
            "state": if up { "up" } else { "down" },
            "written": self.stats.written.load(Ordering::Relaxed),
            "dropped": self.queue.dropped_total,
            "write_failed": self.stats.write_failed.load(Ordering::Relaxed),
            "queue_capacity": self.capacity,
            "backlog": self.queue.queued_in_backlog(),
            "last_error": last_error,
        })
    }

    /// Closes the queue and waits (up to `patience`) for the thread to
    /// write what is queued. A collector that stays down does not hold up
    /// the daemon's exit.
    pub fn close(&mut self, patience: Duration) {
        let deadline = Instant::now() + patience;
        self.stats.closing.store(true, Ordering::Relaxed);
        // Loss lines still waiting get their chance before the queue closes.
        if let Some(tx) = self.tx.take() {
            for mut line in self.queue.take_backlog() {
                loop {
                    match tx.try_send(line) {
                        Ok(()) => break,
                        Err(TrySendError::Full(l)) if Instant::now() < deadline => {
                            line = l;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => {
                            self.queue.dropped_total += 1;
                            break;
                        }
                    }
                }
            }
        }
        if let Some(t) = self.thread.take() {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!(sink = %self.name, "sink still busy at exit; queued lines are lost");
            }
        }
    }
}

/// How long a local sink's thread lets lines gather after it has written
/// what was queued. Lines offered meanwhile wake nobody: one wake-up and
/// one write per batch rather than per line, which matters most where
/// each line is a supervised call and its caller waits while the waking
/// costs it CPU. A line that comes alone is written at once; one that comes
/// within this window of the last batch waits at most this long.
const LINGER: Duration = Duration::from_millis(1);

/// Writes lines to stdout, flushing when the queue runs dry.
fn stdout(rx: &Receiver<Line>, stats: &SinkStats) {
    // A duplicate of fd 1 with our own buffer, rather than std's stdout
    // lock held for the daemon's life (anything else printing would hang).
    use std::os::fd::AsFd as _;
    let file = match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            stats.up.store(false, Ordering::Relaxed);
            stats.set_error(format!("stdout: {e}"));
            // Nothing can be written: every line is a failed write.
            while rx.recv().is_ok() {
                stats.write_failed.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    };
    let mut out = io::BufWriter::with_capacity(256 * 1024, file);
    while let Ok(line) = rx.recv() {
        let mut next = Some(line);
        while let Some(line) = next {
            match out.write_all(&line.bytes) {
                Ok(()) => {
                    stats.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.write_failed.fetch_add(1, Ordering::Relaxed);
                    stats.set_error(e);
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            stats.set_error(e);
        }
        std::thread::sleep(LINGER);
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_but_keeps_loss_lines_in_order() {
        let (tx, rx) = sync_channel::<u32>(2);
        let send = |l| match tx.try_send(l) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(l)) => Err((l, true)),
            Err(TrySendError::Disconnected(l)) => Err((l, false)),
        };
        let mut q = Queue::new();
        for i in 1..=4 {
            assert!(q.offer(i, false, send));
        }
        assert_eq!(q.unreported, 2);
        assert!(q.offer(100, true, send)); // a loss line waits
        assert!(q.offer(5, false, send)); // behind it: dropped
        assert_eq!(q.unreported, 3);
        assert_eq!(rx.recv().ok(), Some(1));
        assert_eq!(rx.recv().ok(), Some(2));
        assert!(q.offer(6, false, send));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![100, 6]);
    }
}
