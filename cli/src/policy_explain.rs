//! `verdict policy explain --event chain:seq [--policy draft.json] [--policies DIR]`: why a
//! recorded call was decided as it was, and what a draft would decide.
//!
//! The record comes from the query service (`ReplayPolicy` with `event` set), verified there with
//! the trusted keys. The event carries the SHA-256 of the policy in force; the policy texts
//! themselves are kept where policies are reviewed (a repository, or a directory of every
//! version deployed), and `--policies DIR` names such a directory: the file whose SHA-256 matches
//! is the policy in force, and the call is re-decided under it by the same engine, so the rule
//! that matched and the rules that could apply are shown. A single call is re-decided with empty
//! rate-limit windows and without pins, so an explanation that differs from the record says so.

use crate::query::{status, Client, Connection};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use verdict_proto::pb::{self, replay_message::Kind, DecisionKind, Redaction, RiskClass};
use verdict_proto::Label;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The recorded call, as chain_id:seq.
    #[arg(long)]
    event: String,
    /// A draft policy to decide the call under.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// A directory of policy files: the one whose SHA-256 the event carries is the policy in force.
    #[arg(long)]
    policies: Option<PathBuf>,
    #[command(flatten)]
    connection: Connection,
}

pub fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = Client::connect(&args.connection).await?;
        let record = ask(&mut client, &args.event, String::new()).await?;
        let recorded = record.recorded.clone().unwrap_or_default();
        print_record(&record, &recorded);
        let in_force = hex::encode(&recorded.policy_sha256);
        match args.policies.as_deref().map(|dir| find_policy(dir, &in_force)).transpose()? {
            Some(Some((path, text))) => {
                let under = ask(&mut client, &args.event, text).await?;
                print_under(&format!("policy in force ({})", path.display()), &under);
                if under.draft != recorded.decision {
                    println!("  (differs from the record: a single call is re-decided with empty rate-limit windows and without pins)");
                }
            }
            Some(None) => println!("\npolicy in force: sha256 {in_force}, not among the files of --policies"),
            None => println!("\npolicy in force: sha256 {in_force} (pass --policies DIR holding it to see its rules)"),
        }
        if let Some(path) = &args.policy {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let under = ask(&mut client, &args.event, text).await?;
            print_under(&format!("draft ({})", path.display()), &under);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The explanation of `event` under `policy_json` (empty: the record only).
async fn ask(
    client: &mut Client,
    event: &str,
    policy_json: String,
) -> Result<pb::ReplayExplanation> {
    let request = pb::ReplayPolicyRequest {
        policy_json,
        event: event.to_owned(),
        ..Default::default()
    };
    let mut stream = crate::policy_replay::open(client, request).await?;
    match stream.message().await.map_err(status)? {
        Some(pb::ReplayMessage {
            kind: Some(Kind::Explanation(explanation)),
        }) => Ok(explanation),
        _ => bail!("the query service sent no explanation"),
    }
}

/// The file of `dir` whose SHA-256 is `sha256` (hex), with its text.
fn find_policy(dir: &Path, sha256: &str) -> Result<Option<(PathBuf, String)>> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if hex::encode(verdict_proto::hash::sha256(&bytes)) == sha256 {
            return Ok(Some((path, String::from_utf8_lossy(&bytes).into_owned())));
        }
    }
    Ok(None)
}

fn print_record(record: &pb::ReplayExplanation, d: &pb::Decision) {
    let actor = d.actor.clone().unwrap_or_default();
    let arguments = match d.redaction() {
        Redaction::Hash | Redaction::Unspecified => "(stored as a hash only)".to_owned(),
        _ => d.arguments_json.clone(),
    };
    println!(
        "{}:{} at {} ns",
        record.chain_id, record.seq, record.time_unix_nanos
    );
    println!(
        "  agent {} session {} upstream {} tool {} risk {}",
        actor.agent_id,
        actor.session,
        d.upstream,
        d.tool,
        RiskClass::try_from(d.risk).unwrap_or_default().label()
    );
    println!("  arguments {arguments}");
    println!(
        "recorded: {} by rule {}: {}",
        d.decision().label(),
        d.rule_id,
        d.reason
    );
}

fn print_under(title: &str, e: &pb::ReplayExplanation) {
    println!("\nunder the {title}:");
    match e.draft() {
        DecisionKind::Unspecified => println!("  undecidable ({}): rules {}", e.detail, e.rule_id),
        kind => println!("  {} by rule {}: {}", kind.label(), e.rule_id, e.reason),
    }
    println!(
        "  rules that can apply to this tool, in order: {}",
        e.candidate_rules.join(", ")
    );
}
