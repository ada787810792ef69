//! `verdict`: the operator's command line.
//!
//! Each subcommand lives in its own module and calls into the service crates' libraries or their
//! gRPC APIs; the CLI holds no logic of its own beyond argument parsing and printing.

mod approvals;
mod keygen;
mod policy;
mod verify;

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
    /// Policy files: validate, and show what they do to a gateway's tools.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Calls held for a human decision: list, approve, reject (gateway admin API).
    #[command(subcommand)]
    Approvals(approvals::Command),
    /// Verify an audit trail offline with only the gateway's public key.
    Verify(verify::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Policy(command) => policy::run(command),
        Command::Verify(args) => verify::run(args),
        Command::Approvals(command) => approvals::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
