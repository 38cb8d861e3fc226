//! Command-line grammar. Help text comes from these doc comments.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// agent-guard: a kernel-level guard for AI-agent processes.
///
/// Each agent is a cgroup with an owner, a purpose and labels. eBPF programs
/// intercept its connects (and deletes), a per-agent policy allows, asks or
/// denies, and every call becomes one JSON line on stdout.
#[derive(Parser)]
#[command(name = "agent-guard", version)]
pub struct Cli {
    /// Control socket of the daemon to talk to (or, for `daemon`, to serve).
    /// Defaults to the policy's [daemon] control_socket,
    /// /run/agent-guard/control.sock.
    #[arg(long, global = true, env = "AGENT_GUARD_SOCKET")]
    pub socket: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the guard daemon (root). Events go to stdout, logs to stderr.
    ///
    /// Examples:
    ///   sudo agent-guard daemon --policy /etc/agent-guard/policy.toml
    ///   sudo agent-guard daemon --demo            # embedded policy + demo agent
    ///   sudo agent-guard daemon --demo --policy demo-with-web.toml
    #[command(verbatim_doc_comment)]
    Daemon(DaemonArgs),
    /// Run a command as an agent: inside the agent's cgroup, in a run of its
    /// own, before the command starts. Exits with the command's status.
    ///
    /// Examples:
    ///   agent-guard run --agent claims-bot -- python3 bot.py
    ///   agent-guard run --agent demo --on-behalf-of alice -- curl http://127.0.0.1:8080/
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Report what this kernel supports (probed by loading the real
    /// programs), which backend guards each operation, and what to change
    /// for full enforcement. Exit 0: everything enforceable; 2: degraded
    /// (e.g. deletes only under `run`); 1: a required feature is missing.
    ///
    /// Examples:
    ///   sudo agent-guard doctor
    ///   sudo agent-guard doctor --policy /etc/agent-guard/policy.toml
    #[command(verbatim_doc_comment)]
    Doctor {
        /// Also say, per agent of this policy, what can be enforced.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// List calls held for a decision (an `ask` rule): id, agent, pid,
    /// what, target, time waited and time left before the automatic deny;
    /// under each, its command line, parents up to the agent's first
    /// process, owner and purpose, the agent's last five minutes, and what
    /// each approval scope would grant.
    ///
    /// Examples:
    ///   agent-guard pending
    ///   agent-guard pending --json | jq '.[].id'
    ///   agent-guard pending --watch
    #[command(verbatim_doc_comment)]
    Pending(PendingArgs),
    /// Let a held call proceed: it completes as if it had never waited.
    /// With a scope, later calls it covers pass without a hold until the
    /// grant expires. Approvers only (root, or [daemon] approvers).
    ///
    /// Examples:
    ///   agent-guard approve 1732421234567890123 --reason "ticket OPS-42"
    ///   agent-guard approve 1732421234567890123 --scope subtree --for 10m
    ///   agent-guard approve 1732421234567890123 --scope destination --for 1h
    #[command(verbatim_doc_comment)]
    Approve(ApproveArgs),
    /// List live grants (scoped approvals) with the time they have left.
    ///
    /// Example:
    ///   agent-guard grants
    #[command(verbatim_doc_comment)]
    Grants(GrantsArgs),
    /// End a grant before it expires. Approvers only.
    ///
    /// Example:
    ///   agent-guard revoke 3
    #[command(verbatim_doc_comment)]
    Revoke(RevokeArgs),
    /// Refuse a held call: it fails with EPERM ("Operation not permitted").
    /// Approvers only.
    ///
    /// Example:
    ///   agent-guard deny 1732421234567890123 --reason "not during the freeze"
    #[command(verbatim_doc_comment)]
    Deny(DenyArgs),
    /// Kill a held call's run (every process the run started), or with
    /// --agent every process of the agent. Approvers only. Uses cgroup.kill.
    ///
    /// Examples:
    ///   agent-guard kill 1732421234567890123
    ///   agent-guard kill --agent claims-bot
    #[command(verbatim_doc_comment)]
    Kill(KillArgs),
    /// Stream events from the daemon as JSON lines, from now on; or check
    /// that a log's hash chain is intact.
    ///
    /// Examples:
    ///   agent-guard events --follow
    ///   agent-guard events --follow --pretty      # one readable line per event
    ///   agent-guard events --follow --agent claims-bot | jq .kind
    ///   agent-guard events --follow --from /run/agent-guard/events.sock
    ///   agent-guard events verify /var/log/agent-guard/events.jsonl
    #[command(verbatim_doc_comment)]
    Events(EventsArgs),
    /// Show the daemon's health: uptime, events/s, losses by reason, held
    /// calls, and the state of every event sink.
    ///
    /// Examples:
    ///   agent-guard status
    ///   agent-guard status --json | jq .events.per_sec
    #[command(verbatim_doc_comment)]
    Status(StatusArgs),
    /// Review each agent over a period, from the event log and the policy:
    /// owner, purpose, expiry, first and last activity, each rule with the
    /// calls it matched and rules never used (candidates to remove),
    /// denials, holds with decisions, approvers and reasons, grants,
    /// escapes and refusals; agents idle in the period or without an owner
    /// are flagged. The chain is verified as the log is read. HTML is one
    /// self-contained file with an activity timeline per agent.
    ///
    /// Examples:
    ///   agent-guard review --from /var/log/agent-guard/events.jsonl
    ///   agent-guard review --from events.jsonl --since 90d --format json | jq '.agents[].flags'
    ///   agent-guard review --from events.jsonl --format html > review.html
    #[command(verbatim_doc_comment)]
    Review(ReviewArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Find processes that look like AI agents (coding-agent CLIs, agent
    /// frameworks; `[discover] patterns` in the policy adds names) but run
    /// in no agent's cgroup: pid, user, executable, command line, cgroup
    /// (systemd unit or container), children, and an `[[agent]]` table that
    /// adopts the cgroup. Run as root to see every process's executable.
    /// Exit 0: none found; 3: some found; 1: an error.
    ///
    /// Examples:
    ///   sudo agent-guard discover
    ///   sudo agent-guard discover --json | jq '.[] | {pid, exe, cgroup}'
    ///   sudo agent-guard discover --policy /etc/agent-guard/policy.toml
    #[command(verbatim_doc_comment)]
    Discover(DiscoverArgs),
    /// Reload the daemon's policy file without a gap in enforcement (the
    /// same as SIGHUP). An invalid file changes nothing: the error, with
    /// FILE:LINE:COL, is printed and the old policy stays. Approvers only.
    ///
    /// Examples:
    ///   agent-guard reload
    ///   agent-guard reload --force     # even if a removed agent still has processes
    #[command(verbatim_doc_comment)]
    Reload(ReloadArgs),
    /// List the agents: owner, purpose, labels, mode, expiry, cgroup, live
    /// processes, runs, grants, and calls allowed/denied/held since start.
    ///
    /// Examples:
    ///   agent-guard agents
    ///   agent-guard agents --json | jq '.[] | {name, mode}'
    #[command(verbatim_doc_comment)]
    Agents(AgentsArgs),
    /// Freeze an agent now: every delete and connect no explicit allow
    /// rule covers is held for a decision (denies stay denies), until
    /// `thaw`. No policy edit; survives reloads. Approvers only.
    ///
    /// Example:
    ///   agent-guard freeze claims-bot --reason "incident INC-7"
    #[command(verbatim_doc_comment)]
    Freeze(ModeArgs),
    /// End a freeze: the agent's mode is the policy's again. Approvers only.
    ///
    /// Example:
    ///   agent-guard thaw claims-bot
    #[command(verbatim_doc_comment)]
    Thaw(ModeArgs),
}

#[derive(clap::Args)]
pub struct ReloadArgs {
    /// Retire agents the new policy drops even if they have live processes
    /// ([daemon] on_remove: "unguard", the default, or "kill").
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args)]
pub struct AgentsArgs {
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct ModeArgs {
    /// Agent name.
    pub agent: String,
    /// Why; recorded in the agent.mode event.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(clap::Args)]
pub struct DaemonArgs {
    /// Policy file (TOML). Without it, the embedded default policy is used.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// After start-up, run the policy's `demo` agent once (the embedded
    /// policy has it): connects and deletes allowed and denied, and one
    /// delete held for a decision; the daemon prints the `agent-guard
    /// approve ID` that decides it (and the page's address when [web] is
    /// on). Unanswered, the hold is denied after the agent's 60 s.
    #[arg(long)]
    pub demo: bool,
    /// Where to keep state, overriding [daemon] state_dir; programs are
    /// pinned in a bpffs under it.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Line format of every sink that does not set its own `format`:
    /// v1 (agent-guard/v1 with an `ocsf` object) or ecs (Elastic Common
    /// Schema).
    #[arg(long, default_value = "v1", value_parser = ["v1", "ecs"])]
    pub format: String,
    /// Key the event chain with HMAC-SHA256, from this root-only file (mode
    /// 0600 or 0400): a log rebuilt without the key does not verify.
    #[arg(long, value_name = "FILE")]
    pub chain_key: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct PendingArgs {
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print the list again every two seconds until interrupted.
    #[arg(long)]
    pub watch: bool,
}

#[derive(clap::Args)]
pub struct ApproveArgs {
    /// Hold id, from `agent-guard pending` or the `held` event.
    pub id: String,
    /// Why; recorded in the hold.decision event.
    #[arg(long)]
    pub reason: Option<String>,
    /// What the approval covers: this call only (once); later deletes in
    /// the subtree (subtree: the `ask` rule's path, or --path); later
    /// connects to the same address and port (destination); every held kind
    /// of the agent (agent).
    #[arg(long, default_value = "once", value_parser = ["once", "subtree", "destination", "agent"])]
    pub scope: String,
    /// How long a scope beyond once lasts, e.g. 30s, 10m, 2h.
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub r#for: Option<std::time::Duration>,
    /// With --scope subtree: the subtree (must contain the held path).
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EventsArgs {
    #[command(subcommand)]
    pub command: Option<EventsCommand>,
    /// Keep the connection open and print events as they happen.
    #[arg(long)]
    pub follow: bool,
    /// Only this agent's events (and `loss` events, which explain gaps).
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// One readable line per event instead of JSON: time (UTC), agent,
    /// outcome, kind, target, rule, and for a held call the command that
    /// decides it. Coloured when stdout is a terminal (NO_COLOR turns that
    /// off). Example: agent-guard events --follow --pretty --agent demo
    #[arg(long, requires = "follow")]
    pub pretty: bool,
    /// Read a `type = "unix"` sink's socket instead of the control socket.
    #[arg(long, value_name = "SOCKET", conflicts_with = "agent")]
    pub from: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Replay an event log: print the lines of one agent, some kinds, a
    /// time window, from the log files of a file sink (rotated files
    /// included), verifying the hash chain as it reads. A broken chain is
    /// reported with FILE:LINE; lines from there on are not printed.
    /// Exit 0: read to the end, chain intact; 1: broken or unreadable.
    ///
    /// Examples:
    ///   agent-guard events query --from /var/log/agent-guard/events.jsonl --agent claims-bot
    ///   agent-guard events query --from events.jsonl --kind 'file.*' --since 24h
    ///   agent-guard events query --from events.jsonl --agent bot --since 2026-12-01T00:00:00Z --pretty
    ///   agent-guard events query --from host1.jsonl --from host2.jsonl --kind hold.decision | jq .hold
    #[command(verbatim_doc_comment)]
    Query(QueryArgs),
    /// Recompute the hash chain of event log files, oldest first (rotated
    /// files included), and report the first broken link with its line.
    /// Exit 0: intact; 1: broken or unreadable.
    ///
    /// Examples:
    ///   agent-guard events verify events.jsonl
    ///   agent-guard events verify events.jsonl.3 events.jsonl.2 events.jsonl.1 events.jsonl
    ///   agent-guard events verify --rotated /var/log/agent-guard/events.jsonl
    ///   agent-guard events verify --key /etc/agent-guard/chain.key events.jsonl
    #[command(verbatim_doc_comment)]
    Verify(VerifyArgs),
    /// Print the JSON Schema (2020-12) of the native event lines, generated
    /// from the daemon's own event types (docs/events.schema.json is this
    /// output).
    ///
    /// Example:
    ///   agent-guard events schema > events.schema.json
    #[command(verbatim_doc_comment)]
    Schema,
    /// Print, as JSON, the OCSF version and profiles of the `ocsf` member
    /// and the ECS version of `format = "ecs"` lines.
    ///
    /// Example:
    ///   agent-guard events versions
    #[command(verbatim_doc_comment)]
    Versions,
    /// Print one event of each kind, as the daemon writes them (the ones
    /// docs/events.md shows): sample data for a SIEM's parser.
    ///
    /// Examples:
    ///   agent-guard events examples
    ///   agent-guard events examples --format ecs > sample.ndjson
    #[command(verbatim_doc_comment)]
    Examples {
        /// `native` (with the `ocsf` member) or `ecs`.
        #[arg(long, value_enum, default_value = "native")]
        format: ExampleFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExampleFormat {
    Native,
    Ecs,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Log files, oldest first.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Take FILE as a rotated log's current file and check FILE.N .. FILE.1
    /// before it.
    #[arg(long)]
    pub rotated: bool,
    /// The HMAC key the daemon was given with --chain-key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct GrantsArgs {
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct RevokeArgs {
    /// Grant id, from `agent-guard grants`.
    pub id: u32,
}

#[derive(clap::Args)]
pub struct KillArgs {
    /// Hold id whose run to kill.
    #[arg(conflicts_with = "agent", required_unless_present = "agent")]
    pub id: Option<String>,
    /// Kill every process of this agent instead.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
}

#[derive(clap::Args)]
pub struct DenyArgs {
    /// Hold id, from `agent-guard pending` or the `held` event.
    pub id: String,
    /// Why; recorded in the hold.decision event.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Agent name, as declared in the daemon's policy.
    #[arg(long)]
    pub agent: String,
    /// The person or system the agent acts for; recorded in every event of the run.
    #[arg(long, value_name = "WHO")]
    pub on_behalf_of: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file. Exit 0 if valid; otherwise print FILE:LINE:COL
    /// and what is wrong, and exit 1. A valid file whose rule names a path
    /// through a symlink (which the kernel, judging real paths, would never
    /// match) gets a warning naming the real path.
    ///
    /// Example:
    ///   agent-guard policy check /etc/agent-guard/policy.toml
    #[command(verbatim_doc_comment)]
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Print a complete policy file: the current one, with one agent's
    /// [agent.delete] and [agent.connect] replaced by the least privilege
    /// that would have allowed what it did in the event log (an audit run,
    /// ideally): deletes as directory prefixes, destinations as
    /// address:port (a /24 or /64 where several hosts of one network were
    /// used), everything else denied, each rule with the calls it covers.
    /// The chain is verified as the log is read; the output passes `policy
    /// check`. Review it before you use it.
    ///
    /// Examples:
    ///   agent-guard policy suggest --agent claims-bot --from /var/log/agent-guard/events.jsonl > new.toml
    ///   agent-guard policy suggest --agent claims-bot --from events.jsonl --since 7d --policy policy.toml
    #[command(verbatim_doc_comment)]
    Suggest(SuggestArgs),
    /// Print the embedded default policy, as a starting point.
    ///
    /// Example:
    ///   agent-guard policy default > policy.toml
    #[command(verbatim_doc_comment)]
    Default,
}

#[derive(clap::Args)]
pub struct QueryArgs {
    /// A log's current file; its rotated files (FILE.N .. FILE.1) are read
    /// before it. Repeat for several logs (each its own chain).
    #[arg(long = "from", required = true, value_name = "LOG")]
    pub from: Vec<PathBuf>,
    /// Read only the files named, not their rotated predecessors.
    #[arg(long)]
    pub no_rotated: bool,
    /// Only this agent's events.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Only this kind (repeatable); `file.*` takes a family.
    #[arg(long, value_name = "KIND")]
    pub kind: Vec<String>,
    /// From this time on: RFC 3339 (2026-12-01T00:00:00Z) or a duration
    /// before now (30m, 24h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// The HMAC key the daemon was given with --chain-key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// One readable line per event instead of JSON (as `events --pretty`).
    #[arg(long)]
    pub pretty: bool,
}

#[derive(clap::Args)]
pub struct DiscoverArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
    /// The policy whose agents' cgroups are guarded already, and whose
    /// `[discover] patterns` extend the built-in list. Default:
    /// /etc/agent-guard/policy.toml, or the embedded policy without it.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct SuggestArgs {
    /// The agent whose rules to learn.
    #[arg(long, value_name = "NAME")]
    pub agent: String,
    /// A log's current file (its rotated files are read first); repeatable.
    #[arg(long = "from", required = true, value_name = "LOG")]
    pub from: Vec<PathBuf>,
    /// Only calls from this time on: RFC 3339 or a duration before now (7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// The policy to start from. Default: /etc/agent-guard/policy.toml, or
    /// the embedded policy without it.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The HMAC key the daemon was given with --chain-key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ReviewArgs {
    /// A log's current file (its rotated files are read first); repeatable.
    #[arg(long = "from", required = true, value_name = "LOG")]
    pub from: Vec<PathBuf>,
    /// Start of the period: RFC 3339 or a duration before now.
    #[arg(long, value_name = "TIME", default_value = "30d")]
    pub since: String,
    /// End of the period (default: now).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// md (Markdown), json, or html (one self-contained file).
    #[arg(long, value_enum, default_value = "md")]
    pub format: ReviewFormat,
    /// The policy the agents and rules come from. Default:
    /// /etc/agent-guard/policy.toml, or the embedded policy without it.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The HMAC key the daemon was given with --chain-key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReviewFormat {
    Md,
    Json,
    Html,
}
