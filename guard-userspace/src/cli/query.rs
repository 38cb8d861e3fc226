//! `agent-guard events query --from LOG...`: the per-agent replay of a
//! native event log, chain verified as it is read.
use std::{io::Write as _, process::ExitCode, time::SystemTime};

use anyhow::{Context as _, Result};

use super::{args::QueryArgs, pretty};
use crate::events::{
    chain,
    query::{self, Filter},
};

pub fn run(args: QueryArgs) -> Result<ExitCode> {
    let now = SystemTime::now();
    let when = |flag: &str, v: &Option<String>| -> Result<Option<SystemTime>> {
        v.as_deref()
            .map(|t| query::parse_when(t, now).with_context(|| format!("--{flag}")))
            .transpose()
    };
    let filter = Filter {
        agent: args.agent,
        kinds: args.kind,
        since: when("since", &args.since)?,
        until: when("until", &args.until)?,
    };
    let key = match &args.key {
        Some(path) => Some(chain::read_key_for_verify(path)?),
        None => None,
    };
    let logs = query::logs(&args.from, !args.no_rotated);
    let stdout = std::io::stdout();
    let colour =
        args.pretty && anstream::AutoStream::choice(&stdout) != anstream::ColorChoice::Never;
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_err: Option<std::io::Error> = None;
    let (mut matched, mut unreadable) = (0u64, false);
    let result = query::read(&logs, key.as_deref(), &filter, |_, text, _| {
        if write_err.is_some() {
            return;
        }
        matched += 1;
        let shown = if args.pretty {
            pretty::render(text, colour)
        } else {
            None
        };
        if args.pretty && shown.is_none() {
            unreadable = true;
        }
        if let Err(e) = writeln!(out, "{}", shown.as_deref().unwrap_or(text)) {
            write_err = Some(e);
        }
    });
    out.flush().context("writing to stdout")?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    if unreadable {
        eprintln!(
            "agent-guard events query: --pretty renders agent-guard/v1 lines; others were \
             printed unchanged"
        );
    }
    match result {
        Ok(reports) => {
            let lines: u64 = reports.iter().map(|r| r.lines).sum();
            eprintln!(
                "agent-guard events query: {matched} of {lines} lines matched; chain intact in {} log(s)",
                reports.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "agent-guard events query: BROKEN: {e}\nagent-guard events query: {matched} \
                 lines printed before it; nothing at or after it was printed"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
