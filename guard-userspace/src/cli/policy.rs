//! `agent-guard policy check|default`
use std::process::ExitCode;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::args::{PolicyCommand, SuggestArgs};
use crate::{
    events::{chain, query},
    governance::suggest,
    policy,
};

/// Where a packaged install keeps its policy.
const INSTALLED_POLICY: &str = "/etc/agent-guard/policy.toml";

/// The policy a governance verb starts from: the file named, else the
/// installed one, else the embedded default. Returns it and its text.
pub(super) fn current(named: Option<&Path>) -> Result<(policy::Policy, String)> {
    let installed = Path::new(INSTALLED_POLICY);
    let path = named.or_else(|| installed.exists().then_some(installed));
    let (file, text) = match path {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => (
            "<embedded default policy>".to_owned(),
            policy::DEFAULT_POLICY.to_owned(),
        ),
    };
    let parsed = policy::parse(&file, &text)?;
    Ok((parsed, text))
}

pub fn run(command: PolicyCommand) -> Result<ExitCode> {
    match command {
        PolicyCommand::Check { file } => match policy::load(&file) {
            Ok(p) => {
                println!(
                    "{}: valid, {} agent(s): {}",
                    file.display(),
                    p.agents.len(),
                    p.agents
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                // Valid, but some rule could never match here: say so on
                // stderr; the exit status stays 0 (the file is valid).
                for warning in policy::path_warnings(&p) {
                    eprintln!("warning: {warning}");
                }
                // Agents retired on schedule: warned ahead, not refused.
                for w in policy::expiry::warnings(&p, std::time::SystemTime::now()) {
                    eprintln!("{w}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("{err}");
                Ok(ExitCode::FAILURE)
            }
        },
        PolicyCommand::Suggest(args) => run_suggest(args),
        PolicyCommand::Default => {
            print!("{}", policy::DEFAULT_POLICY);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_suggest(args: SuggestArgs) -> Result<ExitCode> {
    let (current, text) = current(args.policy.as_deref())?;
    let since = args
        .since
        .as_deref()
        .map(|t| query::parse_when(t, std::time::SystemTime::now()))
        .transpose()
        .context("--since")?;
    let key = args
        .key
        .as_deref()
        .map(chain::read_key_for_verify)
        .transpose()?;
    let logs: Vec<Vec<PathBuf>> = query::logs(&args.from, true);
    let seen = suggest::observe(&logs, key.as_deref(), &args.agent, since)
        .context("reading the event log")?;
    let out = suggest::suggest(&current, &text, &args.agent, &seen)?;
    print!("{out}");
    eprintln!(
        "agent-guard policy suggest: {} calls of {} learned ({} denied ones left out)",
        seen.calls, args.agent, seen.denied
    );
    if seen.calls == 0 {
        eprintln!(
            "agent-guard policy suggest: warning: no calls of {} in the log: the suggestion \
             denies every delete and connect",
            args.agent
        );
    }
    if let Some(a) = current.agents.iter().find(|a| a.name == args.agent) {
        if a.mode == guard_common::Mode::Audit {
            eprintln!(
                "agent-guard policy suggest: {} is in mode \"audit\": set mode = \"enforce\" \
                 for these rules to be enforced",
                args.agent
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
