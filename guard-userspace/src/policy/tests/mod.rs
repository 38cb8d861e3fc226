//! Unit tests of the policy module. `vectors` holds the shared expected
//! results; `kernel_sim` checks the kernel encoding against them.

#![expect(
    clippy::unwrap_used,
    reason = "a test should fail loudly on a broken fixture"
)]

mod budget;
mod enforceable;
mod errors;
mod kernel_maps;
mod kernel_sim;
mod matching;
mod parsing;
mod sinks;
mod surfaces;
