//! `agent-guard policy check|default`
use std::process::ExitCode;

use anyhow::Result;

use super::args::PolicyCommand;
use crate::policy;

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
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("{err}");
                Ok(ExitCode::FAILURE)
            }
        },
        PolicyCommand::Default => {
            print!("{}", policy::DEFAULT_POLICY);
            Ok(ExitCode::SUCCESS)
        }
    }
}
