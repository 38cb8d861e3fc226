//! The daemon's long-running tasks (event reader, loss poller, accept
//! loops, sinks, surfaces, timers), kept running. A task that fails, ends
//! or panics is restarted after a backoff, and each failure is a
//! `daemon.task` event. A task's failure never stops the daemon and never
//! releases enforcement: only an explicit stop from outside every agent
//! does (see `signals`).
use std::{
    future::Future,
    ops::{Deref, DerefMut},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use parking_lot::Mutex;
use tokio::task::JoinSet;

use crate::events::{
    self, SharedEmitter,
    model::{DaemonEvent, DaemonTask, Lifecycle, TaskFailure, Text},
};

/// First pause before a restart; doubles with each failure in a row.
const BACKOFF: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A task that ran this long before failing starts its backoff afresh.
const HEALTHY: Duration = Duration::from_secs(60);

pub struct Tasks {
    set: JoinSet<()>,
    emitter: SharedEmitter,
}

impl Tasks {
    pub fn new(emitter: SharedEmitter) -> Self {
        Self {
            set: JoinSet::new(),
            emitter,
        }
    }

    /// Runs the future `make` returns, and a new one each time it ends.
    pub fn keep<F, Fut>(&mut self, name: &str, mut make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let emitter = self.emitter.clone();
        let name = name.to_owned();
        self.set.spawn(async move {
            let mut backoff = BACKOFF;
            let mut failures = 0u64;
            loop {
                let started = Instant::now();
                // Its own task, so that a panic ends only this run of it;
                // aborted with this one when the daemon stops.
                let run = tokio::spawn(make());
                let _abort = AbortOnDrop(run.abort_handle());
                let why = match run.await {
                    Ok(Ok(())) => "ended".to_owned(),
                    Ok(Err(err)) => format!("{err:#}"),
                    Err(err) if err.is_panic() => format!("panicked: {}", panic_text(err)),
                    Err(err) => format!("cancelled: {err}"),
                };
                if started.elapsed() >= HEALTHY {
                    backoff = BACKOFF;
                }
                failures += 1;
                tracing::error!(task = %name, error = %why, failures, restart_in = ?backoff, "a daemon task failed; restarting it");
                events::emit_now(
                    &emitter,
                    DaemonEvent::DaemonTask(DaemonTask {
                        outcome: Lifecycle::Failure,
                        task: TaskFailure {
                            name: name.to_string(),
                            error: Text::message(why),
                            failures,
                            restart_in_ms: backoff.as_millis() as u64,
                        },
                    }),
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
    }

    /// Stops every task (the daemon is stopping).
    pub fn abort_all(&mut self) {
        self.set.abort_all();
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_text(err: tokio::task::JoinError) -> String {
    let payload = err.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Something a task owns while it runs and gives back when it ends, even
/// by panicking, so that its restart takes it up again (the event ring
/// buffer, the loss counters).
pub struct Owned<T>(Arc<Mutex<Option<T>>>);

impl<T> Clone for Owned<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Owned<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(Mutex::new(Some(value))))
    }

    /// The value, until the lease is dropped; an error if a run of the
    /// task still holds it.
    pub fn lease(&self) -> Result<Lease<T>> {
        let value = self
            .0
            .lock()
            .take()
            .ok_or_else(|| anyhow::anyhow!("still held by a previous run of the task"))?;
        Ok(Lease {
            value: Some(value),
            home: self.0.clone(),
        })
    }
}

pub struct Lease<T> {
    value: Option<T>,
    home: Arc<Mutex<Option<T>>>,
}

impl<T> Deref for Lease<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // Some until dropped.
        self.value.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl<T> DerefMut for Lease<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl<T> Drop for Lease<T> {
    fn drop(&mut self) {
        *self.home.lock() = self.value.take();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_failing_or_panicking_task_is_restarted_and_reported() {
        let emitter = crate::events::Emitter::start(crate::events::Config {
            sinks: vec![crate::policy::sink::SinkConfig {
                name: "none".into(),
                kind: crate::policy::sink::SinkKind::Unix {
                    path: "/nonexistent/tasks-test.sock".into(),
                },
                format: None,
                queue: None,
            }],
            format: crate::policy::sink::Format::V1,
            alg: crate::events::chain::Alg::Sha256,
            state_file: None,
        })
        .expect("emitter");
        let mut rx = events::with(&emitter, |e| {
            e.subscribe("test", None, crate::policy::sink::Format::V1, 100)
        });
        let runs = Arc::new(AtomicU32::new(0));
        let owned = Owned::new(7u32);
        let mut tasks = Tasks::new(emitter);
        tasks.keep("flaky", {
            let (runs, owned) = (runs.clone(), owned.clone());
            move || {
                let (runs, owned) = (runs.clone(), owned.clone());
                async move {
                    let lease = owned.lease()?;
                    assert_eq!(*lease, 7);
                    match runs.fetch_add(1, Ordering::SeqCst) {
                        0 => anyhow::bail!("first run fails"),
                        1 => panic!("second run panics"),
                        _ => std::future::pending().await,
                    }
                }
            }
        });
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let line = rx.recv().await.expect("event");
            let ev: serde_json::Value = serde_json::from_slice(&line.bytes).expect("json");
            seen.push(ev);
        }
        assert_eq!(seen[0]["kind"], "daemon.task");
        assert_eq!(seen[0]["task"]["error"], "first run fails");
        assert_eq!(seen[1]["task"]["error"], "panicked: second run panics");
        assert_eq!(seen[1]["task"]["failures"], 2);
        // The third run takes the value back up after the panic.
        let deadline = Instant::now() + Duration::from_secs(60);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "no third run");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tasks.abort_all();
    }
}
