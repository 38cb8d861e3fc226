//! One file per verb; `args` holds the grammar.
pub mod agents;
pub mod approve;
pub mod args;
pub mod daemon;
pub mod deny;
pub mod discover;
pub mod doctor;
mod doctor_guard;
pub mod events;
pub mod freeze;
pub mod grants;
#[cfg(test)]
mod help_tests;
pub mod kill;
pub mod pending;
pub mod policy;
pub mod pretty;
pub mod query;
pub mod reload;
pub mod review;
pub mod revoke;
pub mod run;
pub mod status;
pub mod thaw;

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::control::{Client, Request};

/// The scope of an approval: `once`, or a grant for `for_secs`.
pub struct Scope {
    pub kind: Option<String>,
    pub for_secs: Option<u64>,
    pub path: Option<String>,
}

/// The decision round trip `approve` and `deny` share; returns the scope
/// the daemon recorded.
fn decide(
    socket: &Path,
    id: &str,
    approve: bool,
    reason: Option<String>,
    scope: Scope,
) -> Result<serde_json::Value> {
    let reply = Client::connect(socket)?
        .call(Request::Decide {
            id: id.to_owned(),
            approve,
            reason,
            scope: scope.kind,
            for_secs: scope.for_secs,
            path: scope.path,
        })
        .with_context(|| {
            format!(
                "{} hold {id}",
                if approve { "approving" } else { "denying" }
            )
        })?;
    Ok(reply.data.get("scope").cloned().unwrap_or_default())
}
