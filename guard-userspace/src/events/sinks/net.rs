//! TCP and syslog sinks toward a collector. A collector that is down or
//! goes away is retried with exponential backoff; meanwhile lines wait in
//! the sink's bounded queue, and what does not fit is reported as lost.
use std::{
    io::{self, BufWriter, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    sync::{atomic::Ordering, mpsc::Receiver},
    time::Duration,
};

use super::{Line, Rendered, SinkStats};

// Shared with the otlp sink: one retry policy for every collector.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(10);
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A collector that accepts but stops reading must not wedge the thread.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// RFC 5424 header fields that do not change per message.
pub struct Syslog {
    pub host: String,
    pub app_name: String,
    pub pid: u32,
}

impl Syslog {
    /// `LEN SP <PRI>1 TIMESTAMP HOST APP PROCID MSGID - JSON`: RFC 5424
    /// framed by octet counting (RFC 6587 3.4.1). Facility 13 (log audit);
    /// severity notice for denials, info otherwise.
    pub fn frame(&self, line: &Rendered) -> Vec<u8> {
        let severity = if line.notice { 5 } else { 6 };
        let pri = 13 * 8 + severity;
        let msgid: String = line
            .kind
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(32)
            .collect();
        let json = line.bytes.strip_suffix(b"\n").unwrap_or(&line.bytes);
        let mut msg = format!(
            "<{pri}>1 {} {} {} {} {} - ",
            if line.time.is_empty() {
                "-"
            } else {
                &line.time
            },
            header_field(&self.host, 255),
            self.app_name,
            self.pid,
            if msgid.is_empty() { "-" } else { &msgid },
        )
        .into_bytes();
        msg.extend_from_slice(json);
        let mut framed = format!("{} ", msg.len()).into_bytes();
        framed.extend_from_slice(&msg);
        framed
    }
}

pub(super) fn sleep_unless_closing(d: Duration, stats: &SinkStats) {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until && !stats.closing.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() { "-".into() } else { f }
}

pub struct Collector {
    address: String,
    syslog: Option<Syslog>,
}

impl Collector {
    pub fn new(address: String, syslog: Option<Syslog>) -> Self {
        Self { address, syslog }
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::other(format!("{} resolves to no address", self.address));
        for addr in self.address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub fn run(&mut self, rx: &Receiver<Line>, stats: &SinkStats) {
        let mut backoff = BACKOFF_MIN;
        let mut pending: Option<Line> = None;
        loop {
            let stream = match self.connect() {
                Ok(s) => s,
                Err(e) => {
                    stats.up.store(false, Ordering::Relaxed);
                    stats.set_error(format!("{}: {e}", self.address));
                    // Queued lines wait; the emitter counts what overflows.
                    // A closed queue (daemon exit) ends the retries.
                    if stats.closing.load(Ordering::Relaxed) {
                        // Daemon exit with the collector down: what is
                        // still queued cannot be delivered.
                        return;
                    }
                    if pending.is_some() {
                        sleep_unless_closing(backoff, stats);
                    } else {
                        // Holding one line out of the queue tells a closed
                        // queue (daemon exit, which ends the retries) from
                        // a quiet one.
                        match rx.recv_timeout(backoff) {
                            Ok(line) => pending = Some(line),
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            tracing::info!(collector = %self.address, "event sink connected");
            stats.up.store(true, Ordering::Relaxed);
            backoff = BACKOFF_MIN;
            let mut out = BufWriter::with_capacity(64 * 1024, stream);
            let result = (|| -> io::Result<bool> {
                if let Some(line) = pending.take() {
                    self.write(&mut out, &line, stats)?;
                    out.flush()?;
                }
                while let Ok(line) = rx.recv() {
                    let mut next = Some(line);
                    while let Some(line) = next {
                        // On error the line in flight is lost; counted below.
                        self.write(&mut out, &line, stats)?;
                        next = rx.try_recv().ok();
                    }
                    out.flush()?;
                }
                Ok(true)
            })();
            match result {
                Ok(_) => {
                    let _ = out.flush();
                    return;
                }
                Err(e) => {
                    stats.write_failed.fetch_add(1, Ordering::Relaxed);
                    stats.up.store(false, Ordering::Relaxed);
                    stats.set_error(format!("{}: {e}", self.address));
                    tracing::warn!(collector = %self.address, %e, "event sink lost its collector; reconnecting");
                }
            }
        }
    }

    fn write(
        &self,
        out: &mut BufWriter<TcpStream>,
        line: &Rendered,
        stats: &SinkStats,
    ) -> io::Result<()> {
        match &self.syslog {
            Some(s) => out.write_all(&s.frame(line))?,
            None => out.write_all(&line.bytes)?,
        }
        stats.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_octet_counted() {
        let s = Syslog {
            host: "web 1".into(),
            app_name: "agent-guard".into(),
            pid: 42,
        };
        let framed = s.frame(&Rendered {
            bytes: b"{\"a\":1}\n".to_vec(),
            kind: "file.unlink",
            time: "2026-11-24T07:00:00.000000001Z".into(),
            notice: true,
        });
        let text = String::from_utf8(framed).expect("utf8");
        let (len, msg) = text.split_once(' ').expect("length prefix");
        assert_eq!(len.parse::<usize>().ok(), Some(msg.len()));
        assert_eq!(
            msg,
            "<109>1 2026-11-24T07:00:00.000000001Z web1 agent-guard 42 file.unlink - {\"a\":1}"
        );
    }
}
