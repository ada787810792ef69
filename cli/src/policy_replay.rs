//! `verdict policy replay` and `verdict policy check --replay`: what a draft policy would have
//! done to the calls already recorded, asked of the query service's `ReplayPolicy` (which runs
//! the gateway's own engine over the verified envelopes; see `query/src/replay.rs`).
//!
//! `replay` prints every change grouped by recorded → draft decision, the draft's rule, agent and
//! tool, with sample calls as `chain:seq`, then the totals. `check --replay` is the CI gate: it
//! fails when the draft refuses (denies, hides, holds or rate-limits) calls that were allowed,
//! unless each refusing rule is acknowledged (`--ack RULE` or an acknowledgements file). Calls the
//! replay cannot decide are listed as warnings and do not fail the gate: a trail recorded with
//! hash-only arguments would otherwise fail every draft with an argument rule.

use crate::query::{parse_time, status, Client, Connection, Filter};
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use verdict_proto::pb::{self, replay_message::Kind, DecisionKind};
use verdict_proto::Label;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The draft policy file.
    #[arg(long)]
    policy: PathBuf,
    #[command(flatten)]
    filter: Filter,
    /// Sample calls shown per change (at most 100).
    #[arg(long, default_value_t = 5)]
    samples: u32,
    #[command(flatten)]
    connection: Connection,
}

/// The `check --replay` options.
#[derive(clap::Args)]
pub struct GateArgs {
    /// Replay the recorded calls (query service) and fail when the policy refuses calls that were
    /// allowed, unless their rule is acknowledged.
    #[arg(long)]
    replay: bool,
    /// How far back to replay: a duration (`24h`, `7d`) or Unix seconds.
    #[arg(long, default_value = "7d", requires = "replay")]
    since: String,
    /// A rule whose new refusals are intended (repeatable).
    #[arg(long = "ack", requires = "replay")]
    acks: Vec<String>,
    /// A file of acknowledged rule ids, one per line (`#` starts a comment).
    #[arg(long, requires = "replay")]
    ack_file: Option<PathBuf>,
    #[command(flatten)]
    connection: Connection,
}

impl GateArgs {
    pub fn enabled(&self) -> bool {
        self.replay
    }
}

/// A finished replay.
struct Replayed {
    changes: Vec<pb::ReplayChange>,
    summary: pb::ReplaySummary,
}

pub fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let text = read_policy(&args.policy)?;
    let filter = args.filter.to_proto()?;
    let replayed = run(&args.connection, text, filter, args.samples)?;
    print(&replayed, args.connection.json);
    Ok(ExitCode::SUCCESS)
}

/// The CI gate; `Ok(true)` when nothing unacknowledged is newly refused.
pub fn gate(policy: &Path, args: &GateArgs) -> Result<bool> {
    let mut acks = args.acks.clone();
    if let Some(path) = &args.ack_file {
        acks.extend(read_acks(path)?);
    }
    let from = parse_time(&args.since, verdict_proto::now_unix_nanos())?;
    let filter = pb::EventFilter {
        time: Some(pb::TimeRange {
            from_unix_nanos: from,
            to_unix_nanos: 0,
        }),
        ..Default::default()
    };
    let replayed = run(&args.connection, read_policy(policy)?, filter, 5)?;
    print(&replayed, args.connection.json);
    let refused: Vec<&pb::ReplayChange> = replayed
        .changes
        .iter()
        .filter(|c| c.recorded == DecisionKind::Allow as i32 && refuses(c.draft()))
        .collect();
    let unacknowledged: Vec<_> = refused
        .iter()
        .filter(|c| !acks.contains(&c.rule_id))
        .collect();
    for change in &unacknowledged {
        eprintln!(
            "error: rule {} would {} {} call(s) of {} to {} that were allowed (e.g. {})",
            change.rule_id,
            verb(change.draft()),
            change.count,
            change.agent_id,
            change.tool,
            change.samples.join(", ")
        );
    }
    if unacknowledged.is_empty() && !refused.is_empty() {
        println!("every new refusal is acknowledged");
    }
    Ok(unacknowledged.is_empty())
}

fn refuses(draft: DecisionKind) -> bool {
    matches!(
        draft,
        DecisionKind::Deny
            | DecisionKind::Hide
            | DecisionKind::ApprovalRequested
            | DecisionKind::RateLimited
    )
}

fn verb(draft: DecisionKind) -> &'static str {
    match draft {
        DecisionKind::ApprovalRequested => "hold",
        DecisionKind::RateLimited => "rate-limit",
        DecisionKind::Hide => "hide",
        _ => "deny",
    }
}

fn read_policy(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_acks(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Runs the replay on the query service, showing progress on a terminal.
fn run(
    connection: &Connection,
    policy_json: String,
    filter: pb::EventFilter,
    samples: u32,
) -> Result<Replayed> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = Client::connect(connection).await?;
        let request = pb::ReplayPolicyRequest {
            policy_json,
            filter: Some(filter),
            samples,
            ..Default::default()
        };
        let mut stream = open(&mut client, request).await?;
        let terminal = std::io::stderr().is_terminal();
        let mut changes = Vec::new();
        while let Some(message) = stream.message().await.map_err(status)? {
            match message.kind {
                Some(Kind::Progress(calls)) if terminal => eprint!("\rreplayed {calls} calls"),
                Some(Kind::Change(change)) => changes.push(change),
                Some(Kind::Summary(summary)) => {
                    if terminal {
                        eprintln!();
                    }
                    return Ok(Replayed { changes, summary });
                }
                _ => {}
            }
        }
        anyhow::bail!("the replay stream ended without its summary")
    })
}

/// The `ReplayPolicy` stream of `request`.
async fn open(
    client: &mut Client,
    request: pb::ReplayPolicyRequest,
) -> Result<tonic::Streaming<pb::ReplayMessage>> {
    let request = client.request(request);
    let stream = client.inner.replay_policy(request).await.map_err(status)?;
    Ok(stream.into_inner())
}

fn label(kind: DecisionKind) -> &'static str {
    match kind {
        DecisionKind::Unspecified => "undecidable",
        other => other.label(),
    }
}

fn print(replayed: &Replayed, json: bool) {
    if json {
        print_json(replayed);
    } else {
        print_table(replayed);
    }
}

fn print_table(replayed: &Replayed) {
    let s = &replayed.summary;
    println!(
        "draft sha256 {}: {} recorded calls replayed",
        hex::encode(&s.policy_sha256),
        s.calls
    );
    if !replayed.changes.is_empty() {
        println!(
            "\n{:<36} {:<24} {:<16} {:<24} {:>7}  samples (chain:seq)",
            "RECORDED -> DRAFT", "RULE", "AGENT", "TOOL", "CALLS"
        );
    }
    for c in &replayed.changes {
        let transition = format!("{} -> {}", label(c.recorded()), label(c.draft()));
        let note = if c.undecidable {
            format!(" ({})", c.detail)
        } else {
            String::new()
        };
        println!(
            "{transition:<36} {:<24} {:<16} {:<24} {:>7}  {}{note}",
            c.rule_id,
            c.agent_id,
            c.tool,
            c.count,
            c.samples.join(" ")
        );
    }
    println!();
    for (transition, count) in totals(&replayed.changes) {
        println!("{transition}: {count}");
    }
    println!(
        "unchanged: {}, changed: {}, undecidable: {}{}",
        s.unchanged,
        s.changed,
        s.undecidable,
        if s.undecidable > 0 {
            " (their arguments were stored as a hash only or redacted, and an argument rule decides them: not guessed)"
        } else {
            ""
        }
    );
    if s.untrusted > 0 {
        println!(
            "untrusted rows skipped: {} (their envelopes do not verify; see `verdict findings`)",
            s.untrusted
        );
    }
    if s.restarts > 0 {
        println!(
            "gateway starts in range: {} (each emptied its chain's rate-limit windows, in the replay too)",
            s.restarts
        );
    }
}

/// Calls per recorded → draft transition, named the way a reviewer asks.
fn totals(changes: &[pb::ReplayChange]) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for c in changes {
        let name = match (c.recorded(), c.draft()) {
            (_, DecisionKind::Unspecified) => "undecidable".to_owned(),
            (_, DecisionKind::ApprovalRequested) => "newly held for approval".to_owned(),
            (_, DecisionKind::RateLimited) => "newly rate-limited".to_owned(),
            (from, to) => format!("{} -> {}", from.label(), to.label()),
        };
        *totals.entry(name).or_insert(0) += c.count;
    }
    totals
}

fn print_json(replayed: &Replayed) {
    for c in &replayed.changes {
        let line = json!({
            "recorded": label(c.recorded()),
            "draft": label(c.draft()),
            "rule_id": c.rule_id,
            "agent_id": c.agent_id,
            "tool": c.tool,
            "count": c.count,
            "samples": c.samples,
            "undecidable": c.undecidable,
            "detail": c.detail,
        });
        println!("{line}");
    }
    let s = &replayed.summary;
    let summary = json!({"summary": {
        "policy_sha256": hex::encode(&s.policy_sha256),
        "calls": s.calls,
        "unchanged": s.unchanged,
        "changed": s.changed,
        "undecidable": s.undecidable,
        "untrusted": s.untrusted,
        "restarts": s.restarts,
        "read_wait_secs": s.read_wait_secs,
        "verify_secs": s.verify_secs,
        "decide_secs": s.decide_secs,
        "first_unix_nanos": s.first_unix_nanos,
        "last_unix_nanos": s.last_unix_nanos,
    }});
    println!("{summary}");
}
