//! `verdict follow`: `tail -f` for the audit trail. Prints the events matching a filter as the
//! query service's `Follow` stream delivers them (JSON lines with the envelope, or OCSF), live,
//! and with `--items findings|all` the auditor's integrity findings too (a JSON line with a
//! `finding` field, or an OCSF Detection Finding).
//!
//! With `--cursor-file`, the cursor of every message is saved after its line is written and
//! flushed, and read back at start: a follower that is stopped, crashes or is disconnected for
//! being too slow resumes where it stopped (an event whose line was written just before a crash
//! may be printed again; none is skipped).

use crate::query::{status, Client, Connection, Filter};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use verdict_proto::pb;
use verdict_query::follow_file;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    filter: Filter,
    /// jsonl | ocsf
    #[arg(long, default_value = "jsonl")]
    format: String,
    /// events | findings | all
    #[arg(long, default_value = "events")]
    items: String,
    /// Resume after this cursor (from a previous run).
    #[arg(long, conflicts_with = "from_now")]
    cursor: Option<String>,
    /// File that keeps the cursor: read at start when it exists, rewritten after every message.
    #[arg(long)]
    cursor_file: Option<PathBuf>,
    /// Only events stored from now on (without a cursor).
    #[arg(long)]
    from_now: bool,
    /// Stop after this many events and findings (default: follow until interrupted).
    #[arg(long)]
    max_events: Option<u64>,
}

impl Args {
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }
}

pub async fn run(mut client: Client, args: Args) -> Result<ExitCode> {
    let format = match args.format.as_str() {
        "jsonl" => pb::ExportFormat::Jsonl,
        "ocsf" => pb::ExportFormat::Ocsf,
        other => bail!("unknown format {other:?}: jsonl or ocsf"),
    };
    let items = match args.items.as_str() {
        "events" => pb::FollowItems::Events,
        "findings" => pb::FollowItems::Findings,
        "all" => pb::FollowItems::All,
        other => bail!("unknown items {other:?}: events, findings or all"),
    };
    let cursor = match (&args.cursor, &args.cursor_file) {
        (Some(cursor), _) => cursor.clone(),
        (None, Some(file)) => {
            follow_file::load(file).with_context(|| format!("reading {}", file.display()))?
        }
        (None, None) => String::new(),
    };
    let request = client.request(pb::FollowRequest {
        filter: Some(args.filter.to_proto()?),
        format: format as i32,
        from_now: args.from_now && cursor.is_empty(),
        cursor,
        since_unix_nanos: 0,
        items: items as i32,
    });
    let mut stream = client
        .inner
        .follow(request)
        .await
        .map_err(status)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    let mut events = 0u64;
    while args.max_events.is_none_or(|max| events < max) {
        let Some(message) = stream.message().await.map_err(status)? else {
            break;
        };
        if !message.data.is_empty() {
            out.write_all(&message.data)?;
            out.flush()?;
            events += 1;
        }
        if let Some(file) = &args.cursor_file {
            follow_file::save(file, &message.cursor)
                .with_context(|| format!("saving the cursor to {}", file.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
