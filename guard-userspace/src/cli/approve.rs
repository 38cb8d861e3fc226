//! `agent-guard approve ID [--scope ...] [--for DURATION]`
use std::{path::Path, process::ExitCode};

use anyhow::{Result, bail};

use super::{Scope, args::ApproveArgs};

pub fn run(args: ApproveArgs, socket: &Path) -> Result<ExitCode> {
    let for_secs = match (args.scope.as_str(), args.r#for) {
        ("once", Some(_)) => {
            bail!("--for goes with a scope beyond once (subtree, destination, agent)")
        }
        ("once", None) => None,
        (scope, None) => bail!("--scope {scope} needs --for, e.g. --for 10m"),
        (_, Some(d)) => Some(d.as_secs().max(1)),
    };
    if args.path.is_some() && args.scope != "subtree" {
        bail!("--path goes with --scope subtree");
    }
    let scope = super::decide(
        socket,
        &args.id,
        true,
        args.reason,
        Scope {
            kind: Some(args.scope.clone()),
            for_secs,
            path: args.path,
        },
    )?;
    match scope {
        serde_json::Value::Object(g) => println!(
            "approved {}; grant {} covers {} until {}",
            args.id,
            g["id"],
            g["scope"],
            g["expires"].as_str().unwrap_or("?")
        ),
        _ => println!("approved {} (this call only)", args.id),
    }
    Ok(ExitCode::SUCCESS)
}
