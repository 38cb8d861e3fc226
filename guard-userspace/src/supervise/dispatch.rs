//! The supervision loop: a thread that receives each notification and
//! handles it at once, and the runtime tasks that finish the handlers that
//! have to wait (held calls). One notification's handling is in
//! supervisor.rs.
use std::{
    collections::HashMap,
    future::Future,
    io,
    os::fd::OwnedFd,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use tokio::{
    sync::mpsc,
    task::{self, JoinSet},
};
use tracing::error;

use super::{
    Decide, SuperviseError,
    listener::{Listener, Next, StopFd},
    supervisor::{CatchUnwind, handle},
    target::Host,
};

/// Supervises every process behind `listener` until all of them are gone
/// (then `Ok`). Each notification is handled in its own task, so a call
/// held by the decider never delays another. Dropping the returned future
/// aborts those tasks and closes this copy of the listener: if it was the
/// last copy, held and later calls fail with ENOSYS (the kernel's
/// fail-closed behaviour); if the `run` launcher keeps another, they wait
/// for a successor (see [`Resume`]).
#[cfg(test)]
pub async fn supervise(listener: OwnedFd, decider: Arc<dyn Decide>) -> Result<(), SuperviseError> {
    supervise_resuming(listener, decider, Resume::default()).await
}

/// Like [`supervise`], journaling every notification from receipt to
/// answer, and first handling `resume.received`: notifications that a
/// previous supervisor of the same listener received and never answered.
/// The kernel keeps such a call waiting as long as any copy of the listener
/// is open, and accepts the answer from whoever holds one.
///
/// Notifications are received on a thread of their own, which handles each
/// one at once: an allowed or denied call is answered there, without a
/// hop to the runtime (with synchronous wake-ups the caller and this thread
/// hand the CPU to each other). Only a handler that has to wait (a held
/// call, an identity thread) moves on to a task of the runtime, where it
/// waits without delaying the others.
pub async fn supervise_resuming(
    listener: OwnedFd,
    decider: Arc<dyn Decide>,
    resume: Resume,
) -> Result<(), SuperviseError> {
    let shared = Arc::new(Shared {
        listener: Arc::new(Listener::new(listener)),
        host: Arc::new(Host::current().map_err(SuperviseError::Host)?),
        decider,
        journal: resume.journal,
    });
    let stop = Arc::new(StopFd::new().map_err(SuperviseError::Register)?);
    // Stops the receiving thread when this future is dropped, so that its
    // copy of the listener closes with ours.
    let _stop_on_drop = StopOnDrop(stop.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let runtime = tokio::runtime::Handle::current();
    let receiver = shared.clone();
    let received = resume.received;
    std::thread::Builder::new()
        .name("guard-supervise".into())
        .spawn(move || {
            let _runtime = runtime.enter();
            let end = receive(&receiver, &stop, received, &tx);
            let _ = tx.send(ToRuntime::End(end));
        })
        .map_err(SuperviseError::Register)?;
    let mut tasks = JoinSet::new();
    // Which notification each handler answers, to fail it closed if the
    // handler panics instead of leaving its caller blocked.
    let mut pending: HashMap<task::Id, u64> = HashMap::new();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(ToRuntime::Waiting { notif_id, handler }) => {
                    pending.insert(tasks.spawn(handler).id(), notif_id);
                }
                Some(ToRuntime::End(end)) => return end,
                None => return Err(SuperviseError::Receive(io::Error::other(
                    "the supervisor thread ended without a word",
                ))),
            },
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let notif_id = match done {
                    Ok((id, ())) => pending.remove(&id),
                    Err(err) => {
                        error!("a seccomp notification handler failed ({err}); denying its call");
                        let notif_id = pending.remove(&err.id());
                        if let Some(notif_id) = notif_id {
                            let _ = shared.listener.respond(notif_id, Err(libc::EPERM));
                        }
                        notif_id
                    }
                };
                if let Some(notif_id) = notif_id {
                    shared.answered(notif_id);
                }
            }
        }
    }
}

/// What every handler of one listener shares.
struct Shared {
    listener: Arc<Listener>,
    host: Arc<Host>,
    decider: Arc<dyn Decide>,
    journal: Option<Arc<dyn Journal>>,
}

impl Shared {
    fn answered(&self, notif_id: u64) {
        if let Some(journal) = &self.journal {
            journal.answered(notif_id);
        }
    }
}

type Handler = Pin<Box<dyn Future<Output = ()> + Send>>;

/// From the receiving thread to the runtime.
enum ToRuntime {
    /// A handler that has to wait: finish it on a task.
    Waiting { notif_id: u64, handler: Handler },
    /// The thread ended: every process is gone (Ok), or receiving failed.
    End(Result<(), SuperviseError>),
}

struct StopOnDrop(Arc<StopFd>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.signal();
    }
}

/// The receiving thread: what a predecessor left first, then each
/// notification as it comes, until every process is gone or the supervisor
/// is dropped.
fn receive(
    shared: &Arc<Shared>,
    stop: &StopFd,
    left: Vec<libc::seccomp_notif>,
    tx: &mpsc::UnboundedSender<ToRuntime>,
) -> Result<(), SuperviseError> {
    for notif in left {
        dispatch(shared, notif, tx);
    }
    loop {
        match shared.listener.wait(stop) {
            Ok(Next::Notif(notif)) => {
                // Recorded before anything is acted on, so that a
                // successor can still answer it.
                if let Some(journal) = &shared.journal {
                    journal.received(&notif);
                }
                dispatch(shared, notif, tx);
            }
            Ok(Next::HungUp | Next::Stopped) => return Ok(()),
            Err(err) => return Err(SuperviseError::Receive(err)),
        }
    }
}

/// Runs the handler of `notif` as far as it goes without waiting; if it has
/// to wait, the runtime finishes it.
fn dispatch(shared: &Shared, notif: libc::seccomp_notif, tx: &mpsc::UnboundedSender<ToRuntime>) {
    let handler: Handler = Box::pin(handle(
        shared.listener.clone(),
        shared.host.clone(),
        shared.decider.clone(),
        notif,
    ));
    // Whatever the handler waits for registers this waker first and the
    // task's own when the runtime polls it again, which it does at once.
    let mut cx = Context::from_waker(Waker::noop());
    let mut caught = CatchUnwind(handler);
    match Pin::new(&mut caught).poll(&mut cx) {
        Poll::Ready(Ok(())) => shared.answered(notif.id),
        Poll::Pending => {
            let waiting = ToRuntime::Waiting {
                notif_id: notif.id,
                handler: caught.0,
            };
            // The runtime's side is gone only when the supervisor is being
            // dropped: the handler is dropped too, as it would be there.
            let _ = tx.send(waiting);
        }
        Poll::Ready(Err(())) => {
            error!("a seccomp notification handler panicked; denying its call");
            let _ = shared.listener.respond(notif.id, Err(libc::EPERM));
            shared.answered(notif.id);
        }
    }
}

/// Where a supervisor records the notifications it has received and not
/// yet answered, and what a predecessor left unanswered.
#[derive(Default)]
pub struct Resume {
    pub journal: Option<Arc<dyn Journal>>,
    /// Received by a previous supervisor of the same listener, never
    /// answered; handled first (each is re-validated: a caller that died
    /// meanwhile is dropped).
    pub received: Vec<libc::seccomp_notif>,
}

/// A record of notifications in flight, kept outside the supervisor's
/// process so that it survives it.
pub trait Journal: Send + Sync {
    /// `notif` was received; called before it is acted on.
    fn received(&self, notif: &libc::seccomp_notif);
    /// Notification `id` was answered, or its caller is gone.
    fn answered(&self, id: u64);
}
