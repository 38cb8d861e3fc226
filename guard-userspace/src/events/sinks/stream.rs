//! Stream readers: each connection to a unix sink, and each `events
//! --follow` on the control socket, is a subscriber with its own bounded
//! queue. A reader that stops reading loses lines (counted and reported as
//! `loss` events), never holds anything else up.
use std::{path::Path, sync::Arc};

use anyhow::Result;
use tokio::{
    io::AsyncWriteExt as _,
    net::{UnixListener, UnixStream},
    sync::mpsc::{self, error::TrySendError},
};

use super::{Line, Queue};
use crate::{events::SharedEmitter, policy::sink::Format};

/// Lines a reader may lag behind before it starts losing events (unless
/// its unix sink sets `queue`).
pub const SUBSCRIBER_QUEUE: usize = 4096;

pub struct Subscriber {
    pub id: u64,
    /// The sink it reads from: "control" (`events --follow`) or a unix
    /// sink's name.
    pub sink: String,
    pub agent: Option<String>,
    pub format: Format,
    tx: mpsc::Sender<Line>,
    pub queue: Queue<Line>,
}

impl Subscriber {
    pub fn new(
        id: u64,
        sink: String,
        agent: Option<String>,
        format: Format,
        queue: usize,
    ) -> (Self, mpsc::Receiver<Line>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (
            Self {
                id,
                sink,
                agent,
                format,
                tx,
                queue: Queue::new(),
            },
            rx,
        )
    }

    /// Whether an event of `agent` goes to this reader. Loss events go to
    /// every reader: they explain gaps in what it sees.
    pub fn wants(&self, agent: Option<&str>, is_loss: bool) -> bool {
        is_loss || self.agent.is_none() || self.agent.as_deref() == agent
    }

    /// False once the reader has gone.
    pub fn offer(&mut self, line: Line, priority: bool) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        let tx = &self.tx;
        self.queue.offer(line, priority, |l| match tx.try_send(l) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(l)) => Err((l, true)),
            Err(TrySendError::Closed(l)) => Err((l, false)),
        })
    }
}

/// Binds a unix sink's socket (replacing a stale file; refusing a live one).
pub fn bind(path: &Path) -> Result<UnixListener> {
    // Anyone may connect: the daemon's [`Gate`] serves readers only, as on
    // the control socket (events name agents, owners and paths).
    crate::unix_socket::bind(path, 0o666, |path| {
        format!(
            "another process is already serving the event socket {}",
            path.display()
        )
    })
}

/// Who may read a unix sink, decided by the daemon for each connection
/// (the same rule as `events --follow`, and the same connection caps).
pub trait Gate: Send + Sync {
    /// Whether `stream` is served on sink `sink`; what it returns is held
    /// for as long as the connection lasts.
    fn admit(&self, stream: &UnixStream, sink: &str) -> Option<Box<dyn Send>>;
}

/// Serves a unix sink: every admitted connection gets the stream from now
/// on. A failed accept is waited out, never fatal.
pub async fn serve(
    listener: Arc<UnixListener>,
    name: String,
    format: Format,
    queue: usize,
    emitter: SharedEmitter,
    gate: Arc<dyn Gate>,
) -> Result<()> {
    crate::unix_socket::accept_loop(&listener, &name, |mut stream| {
        let Some(held) = gate.admit(&stream, &name) else {
            return;
        };
        let mut rx = crate::events::with(&emitter, |e| e.subscribe(&name, None, format, queue));
        tokio::spawn(async move {
            let _held = held;
            // A reader that stops reading keeps its place: its bounded
            // queue drops what it cannot take, reported as losses.
            while let Some(line) = rx.recv().await {
                if stream.write_all(&line.bytes).await.is_err() {
                    break;
                }
            }
        });
    })
    .await;
    Ok(())
}
