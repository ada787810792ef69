//! `verdict`: the operator's command line.
//!
//! Each subcommand lives in its own module and calls into the service crates' libraries or their
//! gRPC APIs; the CLI holds no logic of its own beyond argument parsing and printing.

mod approvals;
mod follow;
mod keygen;
mod policy;
mod policy_explain;
mod policy_replay;
mod query;
mod verify;
mod witnessed;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "verdict",
    version,
    about = "Verdict: audit-first policy gateway for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an Ed25519 signing key pair for a gateway.
    Keygen(keygen::Args),
    /// Policy files: validate, show what they do to a gateway's tools, replay a draft against the
    /// recorded calls, pin tool definitions.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Calls held for a human decision: list, approve, reject (gateway admin API).
    #[command(subcommand)]
    Approvals(approvals::Command),
    /// Who tried to do what, to which target, with what decision (query service).
    WhoTried(query::WhoTriedArgs),
    /// Filtered events, newest first, one page at a time (query service).
    Search(query::SearchArgs),
    /// Decision counts grouped by agent, tool, risk, decision or upstream (query service).
    Summary(query::SummaryArgs),
    /// Export events as JSON lines, CSV or OCSF, with what is needed to re-verify them.
    Export(query::ExportArgs),
    /// Follow the trail live (`tail -f`): events as the auditor stores them, resumable.
    Follow(follow::Args),
    /// Re-verify a stored chain range on the query service.
    VerifyChain(query::VerifyChainArgs),
    /// Integrity findings the auditor recorded (query service).
    Findings(query::FindingsArgs),
    /// Verify an export, a journal or one event offline with only public keys.
    Verify(verify::Args),
    /// Heads the auditor's witness signed, as JSON lines for `verdict verify --witnessed-head`.
    Heads(witnessed::HeadsArgs),
    /// Fetch one event with its inclusion proof and witnessed head, for `verdict verify --event`.
    Prove(witnessed::ProveArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Policy(command) => policy::run(command),
        Command::Approvals(command) => approvals::run(command),
        Command::WhoTried(args) => query::run(query::Command::WhoTried(args)),
        Command::Search(args) => query::run(query::Command::Search(args)),
        Command::Summary(args) => query::run(query::Command::Summary(args)),
        Command::Export(args) => query::run(query::Command::Export(args)),
        Command::VerifyChain(args) => query::run(query::Command::VerifyChain(args)),
        Command::Findings(args) => query::run(query::Command::Findings(args)),
        Command::Follow(args) => query::run(query::Command::Follow(args)),
        Command::Verify(args) => verify::run(args),
        Command::Heads(args) => query::run(query::Command::Heads(args)),
        Command::Prove(args) => query::run(query::Command::Prove(args)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
