//! `verdict policy explain --event chain:seq [--policy draft.json] [--policies DIR]`: why a
//! recorded call was decided as it was, and what a draft would decide.
//!
//! The record comes from the query service (`ReplayPolicy` with `event` set), verified there with
//! the trusted keys. The event carries the SHA-256 of the policy in force, and the gateway records
//! every policy it loads (`PolicyLoaded`): the query service finds the one with that hash in the
//! trail (`in_force`, verified too) and re-decides the call under it with the same engine, so the
//! rule that matched and the rules that could apply are shown. For a trail recorded before
//! gateways recorded their policies, `--policies DIR` names a directory of the policy files
//! deployed (a repository, say): the file whose SHA-256 matches is the policy in force. A single
//! call is re-decided with empty rate-limit windows and without pins, so an explanation that
//! differs from the record says so.

use crate::query::{status, Client, Connection};
use anyhow::{Context, Result};
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
    /// A directory of policy files, used when the trail does not hold the policy in force: the
    /// one whose SHA-256 the event carries is the policy in force.
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
        let record = ask(&mut client, request(&args.event, String::new())).await?;
        let recorded = record.recorded.clone().unwrap_or_default();
        print_record(&record, &recorded);
        let in_force = hex::encode(&recorded.policy_sha256);
        let in_trail = pb::ReplayPolicyRequest {
            in_force: true,
            ..request(&args.event, String::new())
        };
        match ask(&mut client, in_trail).await {
            Ok(under) => {
                let loaded = under.policy_in_force.clone().unwrap_or_default();
                let title = format!(
                    "policy in force (recorded at {}, {} {})",
                    under.policy_event, loaded.reason, loaded.source
                );
                print_in_force(&title, &under, &recorded);
            }
            Err(missing) if missing.code() == tonic::Code::NotFound => {
                println!("\npolicy in force: {}", missing.message());
                from_files(&mut client, &args, &in_force, &recorded).await?;
            }
            Err(e) => return Err(status(e)),
        }
        if let Some(path) = &args.policy {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let under = ask(&mut client, request(&args.event, text))
                .await
                .map_err(status)?;
            print_under(&format!("draft ({})", path.display()), &under);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The request explaining `event` under `policy_json` (empty: the record only).
fn request(event: &str, policy_json: String) -> pb::ReplayPolicyRequest {
    pb::ReplayPolicyRequest {
        policy_json,
        event: event.to_owned(),
        ..Default::default()
    }
}

/// The explanation the query service gives for `request`.
async fn ask(
    client: &mut Client,
    request: pb::ReplayPolicyRequest,
) -> std::result::Result<pb::ReplayExplanation, tonic::Status> {
    let request = client.request(request);
    let mut stream = client.inner.replay_policy(request).await?.into_inner();
    match stream.message().await? {
        Some(pb::ReplayMessage {
            kind: Some(Kind::Explanation(explanation)),
        }) => Ok(explanation),
        _ => Err(tonic::Status::internal(
            "the query service sent no explanation",
        )),
    }
}

/// The policy in force from `--policies DIR`, for a trail that does not hold it.
async fn from_files(
    client: &mut Client,
    args: &ExplainArgs,
    in_force: &str,
    recorded: &pb::Decision,
) -> Result<()> {
    let Some(dir) = &args.policies else {
        println!("  (pass --policies DIR holding sha256 {in_force} to see its rules)");
        return Ok(());
    };
    let Some((path, text)) = find_policy(dir, in_force)? else {
        println!("  sha256 {in_force} is not among the files of --policies either");
        return Ok(());
    };
    let under = ask(client, request(&args.event, text))
        .await
        .map_err(status)?;
    print_in_force(
        &format!("policy in force ({})", path.display()),
        &under,
        recorded,
    );
    Ok(())
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

/// [`print_under`] for the policy in force, which should decide as the record says.
fn print_in_force(title: &str, e: &pb::ReplayExplanation, recorded: &pb::Decision) {
    print_under(title, e);
    if e.draft != recorded.decision {
        println!("  (differs from the record: a single call is re-decided with empty rate-limit windows and without pins)");
    }
}
