//! One file per verb; `args` holds the grammar.
pub mod approve;
pub mod args;
pub mod daemon;
pub mod deny;
pub mod doctor;
pub mod kill;
pub mod pending;
pub mod policy;
pub mod run;

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::control::{Client, Request};

/// The decision round trip `approve` and `deny` share.
fn decide(socket: &Path, id: &str, approve: bool, reason: Option<String>) -> Result<()> {
    Client::connect(socket)?
        .call(Request::Decide {
            id: id.to_owned(),
            approve,
            reason,
        })
        .with_context(|| {
            format!(
                "{} hold {id}",
                if approve { "approving" } else { "denying" }
            )
        })?;
    Ok(())
}
