//! `agent-guard events --follow [--agent NAME]`: the live event stream.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::ExitCode,
};

use anyhow::{Context as _, Result, bail};

use super::args::EventsArgs;
use crate::control::{Client, Request};

pub fn run(args: EventsArgs, socket: &Path) -> Result<ExitCode> {
    if !args.follow {
        bail!(
            "the daemon keeps no history: use --follow for the live stream, or read the \
             daemon's stdout (or its log file)"
        );
    }
    let mut client = Client::connect(socket)?;
    client.call(Request::Subscribe { agent: args.agent })?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(client.into_stream()).lines() {
        let line = line.context("reading the event stream")?;
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    eprintln!("agent-guard events: the daemon closed the stream");
    Ok(ExitCode::FAILURE)
}
