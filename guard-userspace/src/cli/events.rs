//! `agent-guard events --follow [--agent NAME | --from SOCKET] [--pretty]`:
//! the live event stream; `agent-guard events verify FILE...`: the chain
//! check.
use std::{
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    process::ExitCode,
};

use anyhow::{Context as _, Result, bail};

use super::{
    args::{EventsArgs, EventsCommand, ExampleFormat, VerifyArgs},
    pretty,
};
use crate::{
    control::{Client, Request},
    events::{chain, verify},
};

pub fn run(args: EventsArgs, socket: &Path) -> Result<ExitCode> {
    match args.command {
        Some(EventsCommand::Verify(v)) => return run_verify(v),
        Some(EventsCommand::Query(q)) => return super::query::run(q),
        Some(EventsCommand::Schema) => {
            std::io::stdout().write_all(crate::events::schema::text().as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(EventsCommand::Examples { format }) => {
            let ecs = matches!(format, ExampleFormat::Ecs);
            let mut out = std::io::stdout().lock();
            for line in crate::events::examples::lines(ecs) {
                out.write_all(line.as_bytes())?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(EventsCommand::Versions) => {
            use crate::events::{ecs, ocsf};
            let versions = serde_json::json!({
                "schema": crate::events::SCHEMA,
                "ocsf": {"version": ocsf::VERSION, "profiles": ocsf::PROFILES},
                "ecs": {"version": ecs::VERSION},
            });
            println!("{versions}");
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    if !args.follow {
        bail!(
            "the daemon keeps no history: use --follow for the live stream, or read a file \
             sink's log (`events verify` checks one)"
        );
    }
    let stream: Box<dyn Read> = match &args.from {
        Some(path) => Box::new(UnixStream::connect(path).with_context(|| {
            format!(
                "cannot reach the event socket {}; is a [[sink]] of type \"unix\" serving it?",
                path.display()
            )
        })?),
        None => {
            let mut client = Client::connect(socket)?;
            client.call(Request::Subscribe { agent: args.agent })?;
            Box::new(client.into_stream())
        }
    };
    let stdout = std::io::stdout();
    // Colour only for a terminal, and never against NO_COLOR (anstream
    // reads the usual variables: NO_COLOR, CLICOLOR, CLICOLOR_FORCE, TERM).
    let colour =
        args.pretty && anstream::AutoStream::choice(&stdout) != anstream::ColorChoice::Never;
    let mut out = stdout.lock();
    let mut warned = false;
    for line in BufReader::new(stream).lines() {
        let line = line.context("reading the event stream")?;
        let shown = if args.pretty {
            pretty::render(&line, colour)
        } else {
            None
        };
        match shown {
            Some(text) => writeln!(out, "{text}")?,
            None => {
                if args.pretty && !warned {
                    // Nothing is dropped: the line goes out as it came.
                    eprintln!(
                        "agent-guard events: --pretty reads native (agent-guard/v2) events; printing \
                         other lines (an ECS sink's, say) unchanged"
                    );
                    warned = true;
                }
                writeln!(out, "{line}")?;
            }
        }
        out.flush()?;
    }
    eprintln!("agent-guard events: the daemon closed the stream");
    Ok(ExitCode::FAILURE)
}

fn run_verify(args: VerifyArgs) -> Result<ExitCode> {
    let files = if args.rotated {
        if args.files.len() != 1 {
            bail!("--rotated takes exactly one FILE: the log's current file");
        }
        verify::rotated_set(&args.files[0])
    } else {
        args.files
    };
    let key = match &args.key {
        Some(path) => Some(chain::read_key_for_verify(path)?),
        None => None,
    };
    let shown: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    match verify::verify(&files, key.as_deref()) {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "files": shown, "lines": report.lines,
                        "runs": report.runs, "first_prev": report.first_prev,
                        "starts_at_genesis": report.starts_at_genesis(),
                        "last_hash": report.last_hash})
                );
            } else {
                println!(
                    "ok: {} lines in {} file(s), chain intact; {}; last hash {}",
                    report.lines,
                    files.len(),
                    if report.starts_at_genesis() {
                        "starts at the beginning of the chain".to_owned()
                    } else {
                        format!(
                            "continues a chain whose earlier part is not in these files (prev {})",
                            report.first_prev
                        )
                    },
                    report.last_hash
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "files": shown,
                        "file": broken.place().map(|p| p.file.display().to_string()),
                        "line": broken.place().map(|p| p.line),
                        "error": broken.to_string()})
                );
            } else {
                eprintln!("agent-guard events verify: BROKEN: {broken}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
