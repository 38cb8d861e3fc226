//! The event stream: one JSON object per line, the native `agent-guard/v2`
//! shape with a complete OCSF event under `ocsf` (or an ECS document, per
//! sink), hash-chained.
//!
//! This is a layer below the daemon: it knows the event types
//! ([`model`]), how they are written (native, [`ocsf`], [`ecs`]), the
//! chain, the sinks and the process-details cache, and nothing of agents'
//! registry, holds, metrics or the surfaces. What wants to see every event
//! (metrics, per-agent counts) subscribes as an [`Observer`]; what reacts
//! to events (webhooks, the web page) watches a typed stream.
pub mod budget;
pub mod chain;
pub mod counts;
pub mod decode;
pub mod ecs;
mod emitter;
pub mod enrich;
pub mod model;
pub mod ocsf;
pub mod query;
pub mod schema;
pub mod sinks;
pub mod verify;

pub mod examples;
#[cfg(test)]
mod schema_tests;

use std::{
    sync::{Arc, Mutex},
    time::SystemTime,
};

use schemars::JsonSchema;
use serde::Serialize;

pub use emitter::{Config, Emitter, UnixSink};
pub(crate) use emitter::{Stamp, render_ecs, render_native};
pub use model::Event;

/// The `schema` member of native lines.
pub const SCHEMA: &str = "agent-guard/v2";
/// What lines written by earlier versions carry (a different chain form,
/// which `events verify` still checks).
pub const SCHEMA_V1: &str = "agent-guard/v1";

pub type SharedEmitter = Arc<Mutex<Emitter>>;

/// An event as emitted: its place in the stream and when it happened.
#[derive(Clone, Debug)]
pub struct Stamped {
    pub seq: u64,
    pub time: SystemTime,
    pub host: Arc<str>,
    pub event: Event,
}

/// Sees every event as it is emitted, in `seq` order, under the emitter's
/// lock: keep it cheap and never block.
pub trait Observer: Send {
    fn observe(&mut self, event: &Stamped);
}

/// The native members of a line (what an ECS document carries, whole,
/// under `agent_guard`).
#[derive(Clone, Copy, Serialize, JsonSchema)]
pub struct Native<'a> {
    /// `agent-guard/v2`.
    pub schema: &'static str,
    /// Gap-free for the daemon's run, across every sink.
    pub seq: u64,
    /// RFC 3339, nanoseconds, UTC: when it happened (the kernel's time for
    /// kernel records).
    pub time: &'a str,
    pub host: &'a str,
    #[serde(flatten)]
    pub event: &'a Event,
    /// Present (true) when a cap cut some string of the event (a command
    /// line, a reason).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// A native line: the native members, the OCSF event, and the chain link
/// (written after the rest, see [`chain`]).
#[derive(Serialize, JsonSchema)]
#[schemars(title = "agent-guard/v2 event")]
pub struct Line<'a> {
    #[serde(flatten)]
    pub native: Native<'a>,
    pub ocsf: ocsf::Ocsf<'a>,
    /// Appended by the chain; never set here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<chain::Link>,
}

/// Emits a daemon-originated event stamped now.
pub fn emit_now(emitter: &SharedEmitter, event: impl Into<Event>) {
    with(emitter, |e| e.emit(SystemTime::now(), event.into()));
}

/// Runs `f` on the emitter, even if a panicking holder poisoned the lock.
pub fn with<T>(emitter: &SharedEmitter, f: impl FnOnce(&mut Emitter) -> T) -> T {
    match emitter.lock() {
        Ok(mut e) => f(&mut e),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}
