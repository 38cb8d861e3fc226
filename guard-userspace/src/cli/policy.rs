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
                // Warnings, not errors: the file is valid and loads.
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
        PolicyCommand::Default => {
            print!("{}", policy::DEFAULT_POLICY);
            Ok(ExitCode::SUCCESS)
        }
    }
}
