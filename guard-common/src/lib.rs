//! Records and map layouts shared between the eBPF programs and the daemon.
//!
//! Rules for everything in this crate:
//! - `#[repr(C)]`, `Copy`, explicit padding, integers rather than `bool`/`Option`;
//! - a compile-time size assertion per type, so a layout change is a build error;
//! - enumerations travel as integers; the enums here give them stable numbers
//!   that are never renumbered or reused.
#![no_std]

pub mod abi;
pub mod budget;
pub mod guard;
pub mod kconst;
pub mod ladder;
pub mod maps;
pub mod record;
pub mod refused;

pub use abi::*;
pub use budget::*;
pub use guard::*;
pub use kconst::*;
pub use ladder::*;
pub use maps::*;
pub use record::*;
pub use refused::*;
