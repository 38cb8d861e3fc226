//! Every verb's `--help` ends with examples, one command per line, as
//! written in args.rs (clap would otherwise rewrap them into a paragraph).
use clap::CommandFactory as _;

use super::args::Cli;

fn check(cmd: &mut clap::Command, path: &str) -> Vec<String> {
    let mut checked = Vec::new();
    if cmd.get_name() == "help" {
        // clap's own `help` subcommands.
        return checked;
    }
    let name = format!("{path} {}", cmd.get_name()).trim().to_owned();
    // A verb that only groups others (`policy`) has no arguments of its own.
    let group_only = cmd.has_subcommands()
        && cmd
            .get_arguments()
            .all(|a| a.is_global_set() || a.get_id() == "help" || a.get_id() == "version");
    if !group_only && name != "agent-guard" {
        let help = cmd.render_long_help().to_string();
        let lines: Vec<&str> = help.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("Example"))
            .unwrap_or_else(|| panic!("`{name} --help` has no examples:\n{help}"));
        let examples: Vec<&str> = lines[at + 1..]
            .iter()
            .take_while(|l| !l.trim().is_empty())
            .copied()
            .collect();
        assert!(
            matches!(lines[at], "Example:" | "Examples:") && !examples.is_empty(),
            "`{name} --help`: examples are not laid out one per line:\n{help}"
        );
        for e in &examples {
            assert!(
                e.trim_start().starts_with("agent-guard ")
                    || e.trim_start().starts_with("sudo agent-guard "),
                "`{name} --help`: {e:?} is not a command line:\n{help}"
            );
        }
        checked.push(name.clone());
    }
    for sub in cmd.get_subcommands_mut() {
        checked.extend(check(sub, &name));
    }
    checked
}

#[test]
fn every_verb_has_examples_one_per_line() {
    let mut cli = Cli::command();
    cli.build();
    let checked = check(&mut cli, "");
    for verb in [
        "agent-guard events",
        "agent-guard daemon",
        "agent-guard policy check",
    ] {
        assert!(
            checked.iter().any(|c| c == verb),
            "{verb} not checked: {checked:?}"
        );
    }
}
