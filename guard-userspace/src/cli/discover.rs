//! `agent-guard discover [--json]`: unguarded processes that look like
//! agents. Exit 0 when none, 3 when some (a script can alert on it).
use std::process::ExitCode;

use anyhow::Result;

use super::args::DiscoverArgs;
use crate::discover;

pub fn run(args: DiscoverArgs) -> Result<ExitCode> {
    let (policy, _) = super::policy::current(args.policy.as_deref())?;
    let found = discover::discover(&policy);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else if found.is_empty() {
        println!("no unguarded agent processes found");
    } else {
        for f in &found {
            print_one(f);
        }
        println!(
            "{} unguarded agent process(es); add a table above to the policy and `agent-guard \
             reload`, or start the agent with `agent-guard run`",
            found.len()
        );
    }
    Ok(if found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn print_one(f: &discover::Found) {
    let p = &f.process;
    println!(
        "pid {} user {} matched {:?}",
        p.pid,
        p.user
            .clone()
            .or_else(|| p.uid.map(|u| u.to_string()))
            .unwrap_or_else(|| "?".into()),
        f.pattern
    );
    println!(
        "  exe      {}",
        p.exe.as_deref().unwrap_or("? (run as root to read it)")
    );
    println!("  cmdline  {}", p.cmdline.join(" "));
    let mut place = f.cgroup.clone();
    if let Some(c) = &f.container {
        place.push_str(&format!("  (container {c})"));
    } else if let Some(u) = &f.unit {
        place.push_str(&format!("  (unit {u})"));
    }
    println!("  cgroup   {place}");
    for c in &f.children {
        println!("  child    {} {}", c.pid, c.cmdline.join(" "));
    }
    match &f.stanza {
        Some(s) => {
            println!("  adopt it with:");
            for line in s.lines() {
                println!("    {line}");
            }
        }
        None => println!(
            "  in the root cgroup: nothing to adopt; start it with `agent-guard run` or in a unit of its own"
        ),
    }
    println!();
}
