//! `verdict verify`: offline verification with only the gateway's public key.
//!
//! A third party (or an operator after an incident) checks a journal without trusting the
//! gateway, Kafka or ClickHouse: every record's signature, seq continuity and `prev_hash` link,
//! with each break reported at its exact position (segment file and byte offset). Exit status 1
//! on any break, so scripts can rely on it.

use anyhow::{Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use verdict_journal::JournalReader;
use verdict_proto::pb::event_body::Kind;
use verdict_proto::{ChainVerifier, PublicKey, SignedEvent, TrustedKeys};

#[derive(clap::Args)]
pub struct Args {
    /// A gateway journal directory (`[audit] journal_dir`).
    #[arg(long)]
    journal: PathBuf,
    /// The gateway's public key (SPKI PEM, `verdict.pub`); repeat for rotated keys.
    #[arg(long = "public-key", required = true)]
    public_keys: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// One break, where it is.
struct Break {
    kind: String,
    seq: u64,
    last_seq: u64,
    position: String,
    detail: String,
}

#[derive(Default)]
struct Report {
    events: u64,
    chains: Vec<String>,
    first_seq: Option<u64>,
    last_seq: u64,
    /// The newest event is a shutdown checkpoint: the chain ended cleanly.
    ended: bool,
    breaks: Vec<Break>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut keys = TrustedKeys::default();
    for path in &args.public_keys {
        let key = PublicKey::read_pem_file(path)
            .with_context(|| format!("reading public key {}", path.display()))?;
        keys.add(key, None);
    }
    let report = verify_journal(&args.journal, keys)?;
    if args.json {
        print_json(&report);
    } else {
        print_human(&args.journal.display().to_string(), &report);
    }
    Ok(if report.breaks.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn verify_journal(dir: &std::path::Path, keys: TrustedKeys) -> Result<Report> {
    let mut reader =
        JournalReader::open(dir).with_context(|| format!("opening journal {}", dir.display()))?;
    let mut verifier = ChainVerifier::new(keys);
    let mut report = Report::default();
    loop {
        let record = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(error) => {
                // The framing itself is broken: nothing after this point can be located.
                report.breaks.push(Break {
                    kind: "unreadable".into(),
                    seq: report.last_seq + 1,
                    last_seq: report.last_seq + 1,
                    position: String::new(),
                    detail: format!("{error}; verification stopped here"),
                });
                break;
            }
        };
        let position = format!("{} byte {}", record.segment, record.offset);
        let mut found = |kind: &str, seq: u64, last_seq: u64, detail: String| {
            report.breaks.push(Break {
                kind: kind.into(),
                seq,
                last_seq,
                position: position.clone(),
                detail,
            })
        };
        if record.damaged {
            found(
                "damaged_record",
                record.seq,
                record.seq,
                "record checksum does not match: its bytes changed after they were written".into(),
            );
        }
        let event = match SignedEvent::decode(&record.payload) {
            Ok(event) => event,
            Err(error) => {
                found("malformed", record.seq, record.seq, error.to_string());
                continue;
            }
        };
        if event.seq != record.seq {
            found(
                "malformed",
                event.seq,
                event.seq,
                format!(
                    "the record is filed as seq {} but the envelope says {}",
                    record.seq, event.seq
                ),
            );
        }
        if let Some(finding) = verifier.verify(&event).finding {
            found(
                finding.kind.as_str(),
                finding.seq,
                finding.last_seq,
                finding.detail,
            );
        }
        report.events += 1;
        if !report.chains.contains(&event.chain_id) {
            report.chains.push(event.chain_id.clone());
        }
        report.first_seq.get_or_insert(event.seq);
        report.last_seq = report.last_seq.max(event.seq);
        report.ended = matches!(
            event.decode_body().map(|b| b.kind),
            Ok(Some(Kind::Checkpoint(c))) if c.reason == "shutdown"
        );
    }
    Ok(report)
}

fn print_human(journal: &str, report: &Report) {
    println!("journal   {journal}");
    println!("chain     {}", report.chains.join(", "));
    println!(
        "events    {} (seq {}..{})",
        report.events,
        report.first_seq.unwrap_or(0),
        report.last_seq
    );
    println!(
        "ended     {}",
        if report.ended {
            "yes (shutdown checkpoint)"
        } else {
            "no (the gateway is running, or stopped without a shutdown checkpoint)"
        }
    );
    if report.breaks.is_empty() {
        println!("result    OK: every signature valid, seqs contiguous, every prev_hash links");
        return;
    }
    println!("result    {} BREAK(S)", report.breaks.len());
    for b in &report.breaks {
        let seqs = if b.seq == b.last_seq {
            format!("seq {}", b.seq)
        } else {
            format!("seq {}..{}", b.seq, b.last_seq)
        };
        println!(
            "  {:<16} {:<18} at {}: {}",
            b.kind, seqs, b.position, b.detail
        );
    }
}

fn print_json(report: &Report) {
    let breaks: Vec<_> = report
        .breaks
        .iter()
        .map(|b| json!({"kind": b.kind, "seq": b.seq, "last_seq": b.last_seq, "position": b.position, "detail": b.detail}))
        .collect();
    let value = json!({
        "ok": report.breaks.is_empty(),
        "chains": report.chains,
        "events": report.events,
        "first_seq": report.first_seq.unwrap_or(0),
        "last_seq": report.last_seq,
        "ended": report.ended,
        "breaks": breaks,
    });
    println!("{value}");
}
