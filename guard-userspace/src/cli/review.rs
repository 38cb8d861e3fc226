//! `agent-guard review --from LOG... [--since 30d] [--format md|json|html]`.
use std::{process::ExitCode, time::SystemTime};

use anyhow::{Context as _, Result};

use super::args::{ReviewArgs, ReviewFormat};
use crate::{
    events::{chain, query},
    governance::{review, review_html},
};

pub fn run(args: ReviewArgs) -> Result<ExitCode> {
    let (policy, _) = super::policy::current(args.policy.as_deref())?;
    let now = SystemTime::now();
    let since = query::parse_when(&args.since, now).context("--since")?;
    let until = match &args.until {
        Some(t) => query::parse_when(t, now).context("--until")?,
        None => now,
    };
    anyhow::ensure!(since < until, "--since must be before --until");
    let key = args
        .key
        .as_deref()
        .map(chain::read_key_for_verify)
        .transpose()?;
    let logs = query::logs(&args.from, true);
    let r = review::review(&policy, &logs, key.as_deref(), since, until)
        .context("reading the event log (nothing is reported from a log that does not verify)")?;
    let out = match args.format {
        ReviewFormat::Md => review::markdown(&r),
        ReviewFormat::Json => serde_json::to_string_pretty(&r)? + "\n",
        ReviewFormat::Html => review_html::html(&r),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
