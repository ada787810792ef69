//! `verdict verify`: offline verification with only the public key(s).
//!
//! A source — `--export FILE` (a JSON-lines export) or `--journal DIR` (a gateway's journal) —
//! feeds events with their position into [`ChainCheck`], which verifies signatures and links with
//! the shared [`ChainVerifier`] and builds one [`Report`], printed the same way for every source.
//!
//! A journal holds one whole chain, so there every gap, repeat or reorder is a failure, reported
//! with the verifier's finding kind at the record's exact position (segment file and byte offset),
//! as is a record whose checksum no longer matches.
//!
//! An export may be filtered, so a chain may appear as several contiguous seq ranges: each range
//! must link internally (its first event's signature is checked, its link to the unseen
//! predecessor cannot be), and gaps between ranges are reported as "not contiguous", not as
//! tampering. Any record that fails — bad JSON, a field that differs from the signed envelope, a
//! bad signature, a broken link, a repeated or backwards seq — is a failure naming its position,
//! and the exit code is 1.
//!
//! What is *missing* fails too, as far as the source can tell ([`Completeness`]): nothing at all
//! verified is never OK; an export must end with its end line, and that line must agree with the
//! records before it; a journal must begin at seq 1 (unless the operator says retention pruned
//! it) and end with the gateway's shutdown checkpoint, or, for a gateway still running, reach the
//! newest head the caller knows from elsewhere (`--running --head SEQ:HASH`, e.g. from
//! `verdict verify-chain`). A signed hash chain cannot prove its own end: these checks catch a cut file,
//! and an outside head is what catches a cut made with care: the heads the auditor's witness
//! signed (`--witnessed-head`, checked in [`crate::witnessed`]), which also carry the chain's
//! Merkle root. `--event` checks one event handed over alone with its inclusion proof.

use crate::witnessed::{self, HeadsCheck, WitnessTrust};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use verdict_journal::JournalReader;
use verdict_proto::pb::event_body::Kind;
use verdict_proto::verify::{ChainHead, EventStatus};
use verdict_proto::{ChainVerifier, SignedEvent, TrustedKey, TrustedKeys, ZERO_HASH};
use verdict_query::export::{check_jsonl_record, ExportEnd};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true)))]
pub struct Args {
    /// A JSON-lines export (`verdict export --format jsonl`).
    #[arg(long, group = "source")]
    export: Option<PathBuf>,
    /// A gateway journal directory (`[audit] journal_dir`).
    #[arg(long, group = "source")]
    journal: Option<PathBuf>,
    /// One event handed over alone with its inclusion proof and witnessed head (`verdict prove`);
    /// needs --witness-key.
    #[arg(long, group = "source", requires = "witness_keys")]
    event: Option<PathBuf>,
    /// Witnessed heads the source must reach, with the same event hash and Merkle root: a file
    /// (JSON lines from `verdict heads`), or a query service URL (`https://…`; token in
    /// VERDICT_QUERY_TOKEN) whose newest head of every chain is fetched. Needs --witness-key.
    #[arg(long, requires = "witness_keys")]
    witnessed_head: Option<String>,
    /// The auditor witness's public key (PEM; repeatable).
    #[arg(long = "witness-key")]
    witness_keys: Vec<PathBuf>,
    /// A witness key revoked from a time on, `KEY_ID=2026-12-01T08:00:00Z` (repeatable): heads it
    /// signed from then on fail, and hand over nothing.
    #[arg(long = "witness-revoked", requires = "witness_keys")]
    witness_revoked: Vec<String>,
    /// Trusted public key file (PEM; repeatable for rotated keys), trusted for every chain.
    #[arg(long = "public-key", required_unless_present = "trusted_keys")]
    public_keys: Vec<PathBuf>,
    /// A service config (the auditor's or the query service's TOML) whose `trusted_keys` and
    /// `trusted_keys_dir` to trust, with their chain scopes: the same keys, loaded the same way,
    /// give the same verdict offline as in the auditor and VerifyChain.
    #[arg(long)]
    trusted_keys: Option<PathBuf>,
    /// The gateway is still running (a journal need not end with a shutdown checkpoint); needs
    /// --head, the newest head known from outside the journal.
    #[arg(long, requires = "head")]
    running: bool,
    /// A head the journal must contain, as SEQ:HASH (hex), e.g. the auditor's chain head from
    /// `verdict verify-chain --chain ID`: a journal that ends before it, or holds another event there, fails.
    #[arg(long, value_parser = parse_head)]
    head: Option<(u64, [u8; 32])>,
    /// The journal's oldest segments were pruned by retention after shipping: it may begin
    /// after seq 1.
    #[arg(long)]
    pruned: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_head(text: &str) -> Result<(u64, [u8; 32]), String> {
    let (seq, hash) = text.split_once(':').ok_or("expected SEQ:HASH")?;
    let seq = seq.parse().map_err(|e| format!("seq: {e}"))?;
    let hash = hex::decode(hash)
        .ok()
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or("hash: expected 64 hex digits")?;
    Ok((seq, hash))
}

/// The trusted keys of a service config; its other settings are not read.
#[derive(serde::Deserialize)]
struct KeysConfig {
    #[serde(default)]
    trusted_keys: Vec<TrustedKey>,
    #[serde(default)]
    trusted_keys_dir: Option<PathBuf>,
}

fn trusted_keys(args: &Args) -> Result<TrustedKeys> {
    let mut entries: Vec<TrustedKey> = args
        .public_keys
        .iter()
        .cloned()
        .map(TrustedKey::Path)
        .collect();
    let mut dir = None;
    if let Some(path) = &args.trusted_keys {
        let config: KeysConfig =
            verdict_service::config::load("trusted keys", Some(path), "VERDICT_VERIFY_", &[])?;
        entries.extend(config.trusted_keys);
        dir = config.trusted_keys_dir;
    }
    let keys = TrustedKeys::load(&entries, dir.as_deref())?;
    if keys.is_empty() {
        anyhow::bail!("no trusted keys: give --public-key or a config with trusted_keys");
    }
    Ok(keys)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let keys = trusted_keys(&args)?;
    let mut witnesses = WitnessTrust::load(&args.witness_keys, &args.witness_revoked)?;
    if let Some(path) = &args.event {
        return verify_event(path, keys, &witnesses, args.json);
    }
    let mut check = ChainCheck::new(keys);
    if let Some(path) = &args.witnessed_head {
        check.heads = Some(HeadsCheck::from_source(path, &mut witnesses)?);
    }
    if let Some(path) = &args.export {
        carried_heads(path, &witnesses, &mut check)?;
    }
    let source = match (&args.export, &args.journal) {
        (Some(path), _) => {
            read_export(path, &mut check)?;
            path.display().to_string()
        }
        (None, Some(dir)) => {
            let expect = Completeness {
                running: args.running,
                head: args.head,
                pruned: args.pruned,
            };
            read_journal(dir, &mut check, &expect)?;
            dir.display().to_string()
        }
        (None, None) => unreachable!("clap requires a source; --event returned above"),
    };
    let report = check.finish(source);
    report.print(args.json);
    Ok(report.exit_code())
}

fn verify_event(
    path: &Path,
    keys: TrustedKeys,
    witnesses: &WitnessTrust,
    json: bool,
) -> Result<ExitCode> {
    let (event, failures) = witnessed::verify_event(path, keys, witnesses)?;
    let report = Report {
        source: path.display().to_string(),
        records: 1,
        chains: event
            .iter()
            .map(|e| (e.chain_id.clone(), vec![(e.seq, e.seq)]))
            .collect(),
        failures: failures
            .into_iter()
            .map(|message| Failure {
                position: "event".into(),
                event: event.as_ref().map(|e| (e.chain_id.clone(), e.seq)),
                message,
            })
            .collect(),
        notes: vec!["the event is leaf seq-1 of the Merkle tree the witnessed head signs".into()],
    };
    report.print(json);
    Ok(report.exit_code())
}

/// The witnessed heads an export's end line carries: checked against `witnesses` and added to
/// the heads the export must reach; without witness keys, only noted.
fn carried_heads(path: &Path, witnesses: &WitnessTrust, check: &mut ChainCheck) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let end = std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| ExportEnd::parse(&line));
    let carried = end.map(|end| end.witnessed_heads).unwrap_or_default();
    if carried.is_empty() {
        return Ok(());
    }
    if witnesses.keys.is_empty() {
        check.note(format!(
            "the export carries {} witnessed head(s); give --witness-key to check it against them",
            carried.len()
        ));
        return Ok(());
    }
    let heads = carried
        .iter()
        .map(|record| witnesses.verify(record))
        .collect::<Result<Vec<_>>>()
        .context("a witnessed head in the export's end line")?;
    check.note(format!(
        "the export carries {} witnessed head(s)",
        heads.len()
    ));
    check
        .heads
        .get_or_insert_with(HeadsCheck::default)
        .extend(heads);
    Ok(())
}

fn read_export(path: &PathBuf, check: &mut ChainCheck) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = std::io::BufReader::new(file);
    let mut seen = ExportEnd::default();
    let mut unreadable = 0u64;
    let mut end: Option<(String, ExportEnd)> = None;
    for (index, line) in reader.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let position = format!("line {}", index + 1);
        let text = match std::str::from_utf8(&line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => text,
            Err(_) => {
                check.fail(position, None, "not UTF-8".into());
                continue;
            }
        };
        if let Some((at, _)) = &end {
            check.fail(
                position,
                None,
                format!("a record after the end line ({at})"),
            );
            continue;
        }
        if let Some(stated) = ExportEnd::parse(text) {
            end = Some((position, stated));
            continue;
        }
        match check_jsonl_record(text) {
            Ok(event) => {
                seen.add(&event.chain_id, event.seq, &hex::encode(event.hash));
                check.add(position, event);
            }
            Err(e) => {
                unreadable += 1;
                check.fail(position, None, e.to_string());
            }
        }
    }
    match end {
        None => check.missing("the export has no end line: it was cut short".into()),
        // A record that failed already fails the file, and cannot be counted against the end.
        Some((at, stated)) if !stated.same_records(&seen) && unreadable == 0 => check.missing(format!(
            "the end line ({at}) states {} record(s) in {} chain span(s), the file holds {} in {}: records are missing",
            stated.records,
            stated.chains.len(),
            seen.records,
            seen.chains.len()
        )),
        Some(_) => {}
    }
    Ok(())
}

/// What a journal must show to be whole, beyond every record verifying.
struct Completeness {
    running: bool,
    head: Option<(u64, [u8; 32])>,
    pruned: bool,
}

fn read_journal(dir: &Path, check: &mut ChainCheck, expect: &Completeness) -> Result<()> {
    let mut reader =
        JournalReader::open(dir).with_context(|| format!("opening journal {}", dir.display()))?;
    let mut first: Option<u64> = None;
    let mut head_found = None;
    let mut last = None;
    loop {
        let record = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(error) => {
                // The framing itself is broken: nothing after this point can be located.
                check.fail(
                    String::new(),
                    None,
                    format!("{error}; verification stopped here"),
                );
                break;
            }
        };
        let position = format!("{} byte {}", record.segment, record.offset);
        if record.damaged {
            let message = "damaged_record: the record's checksum does not match; its bytes changed after they were written";
            check.failures.push(Failure {
                position: position.clone(),
                event: None,
                message: message.into(),
            });
        }
        match SignedEvent::decode(&record.payload) {
            Ok(event) if event.seq != record.seq => {
                let message = format!(
                    "malformed: filed as seq {} but the envelope says {}",
                    record.seq, event.seq
                );
                check.fail(position, Some((event.chain_id, event.seq)), message);
            }
            Ok(event) => {
                first.get_or_insert(event.seq);
                if let Some((seq, hash)) = expect.head.filter(|(seq, _)| *seq == event.seq) {
                    head_found = Some(event.hash == hash);
                    if event.hash != hash {
                        check.missing(format!("{position}: seq {seq} differs from the given head: the journal forked from the chain the head was taken from"));
                    }
                }
                last = Some(event.clone());
                check.add_in_order(position, event);
            }
            Err(error) => check.fail(position, None, format!("malformed: {error}")),
        }
    }
    if let Some((segment, offset, bytes)) = reader.unread_tail() {
        let message = format!("{bytes} bytes after the last whole record: a record cut short or altered (a running gateway may be mid-write)");
        check.fail(format!("{segment} byte {offset}"), None, message);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.contains(".torn-") {
            let message = "a damaged tail the gateway cut off at start-up (kept for examination)";
            check.fail(name, None, message.into());
        }
    }
    let ended = last.as_ref().is_some_and(|e| {
        matches!(e.decode_body().map(|b| b.kind), Ok(Some(Kind::Checkpoint(c))) if c.reason == "shutdown")
    });
    if let Some(seq) = first.filter(|&seq| seq > 1 && !expect.pruned) {
        check.missing(format!(
            "the journal begins at seq {seq}: seqs 1..={} are missing (pass --pruned if retention removed shipped segments)",
            seq - 1
        ));
    }
    if let Some((seq, _)) = expect.head {
        if head_found.is_none() {
            check.missing(format!(
                "the journal ends before the given head seq {seq}: its tail is missing"
            ));
        }
    }
    if ended {
        check
            .notes
            .push("the chain ends with a shutdown checkpoint (the gateway stopped cleanly)".into());
    } else if expect.running {
        check.notes.push("no shutdown checkpoint at the end: the gateway is running (--running), and the journal reaches the given head".into());
    } else {
        check.missing("the journal does not end with a shutdown checkpoint: its tail may be cut (for a gateway that is still running, pass --running --head SEQ:HASH)".into());
    }
    Ok(())
}

/// One failed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub position: String,
    pub event: Option<(String, u64)>,
    pub message: String,
}

/// What a verification found, whatever the source.
#[derive(Debug)]
pub struct Report {
    pub source: String,
    pub records: u64,
    /// Per chain, its contiguous seq ranges in order.
    pub chains: BTreeMap<String, Vec<(u64, u64)>>,
    pub failures: Vec<Failure>,
    /// Facts about the source worth knowing that are not failures.
    pub notes: Vec<String>,
}

impl Report {
    pub fn exit_code(&self) -> ExitCode {
        if self.failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    pub fn print(&self, json: bool) {
        if json {
            let value = serde_json::json!({
                "source": self.source,
                "records": self.records,
                "ok": self.failures.is_empty(),
                "chains": self.chains.iter().map(|(chain, ranges)| serde_json::json!({
                    "chain_id": chain,
                    "ranges": ranges.iter().map(|(a, b)| [a, b]).collect::<Vec<_>>(),
                    "contiguous": ranges.len() == 1,
                })).collect::<Vec<_>>(),
                "notes": self.notes,
                "failures": self.failures.iter().map(|f| serde_json::json!({
                    "position": f.position,
                    "chain_id": f.event.as_ref().map(|e| &e.0),
                    "seq": f.event.as_ref().map(|e| e.1),
                    "message": f.message,
                })).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
            return;
        }
        println!("{}: {} records", self.source, self.records);
        for (chain, ranges) in &self.chains {
            let spans: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}..={b}")).collect();
            let note = if ranges.len() > 1 {
                " (not contiguous: the export is filtered or events are missing)"
            } else {
                ""
            };
            println!("  chain {chain}: seqs {}{note}", spans.join(", "));
        }
        for note in &self.notes {
            println!("  {note}");
        }
        for f in &self.failures {
            match &f.event {
                Some((chain, seq)) => {
                    println!(
                        "FAILED {} (chain {chain} seq {seq}): {}",
                        f.position, f.message
                    )
                }
                None => println!("FAILED {}: {}", f.position, f.message),
            }
        }
        if self.failures.is_empty() {
            println!(
                "OK: every record verifies against the trusted key(s) and links within its range"
            );
        } else {
            println!(
                "{} failure(s): the source does not verify",
                self.failures.len()
            );
        }
    }
}

#[derive(Debug, Default)]
struct ChainState {
    ranges: Vec<(u64, u64)>,
    /// After a failure the next event starts a new range (its link cannot be trusted).
    broken: bool,
}

/// Verifies events in the order a source yields them.
pub struct ChainCheck {
    verifier: ChainVerifier,
    /// Witnessed heads the source must reach, when given.
    heads: Option<HeadsCheck>,
    chains: BTreeMap<String, ChainState>,
    records: u64,
    failures: Vec<Failure>,
    notes: Vec<String>,
}

impl ChainCheck {
    pub fn new(keys: TrustedKeys) -> Self {
        Self {
            verifier: ChainVerifier::new(keys),
            heads: None,
            chains: BTreeMap::new(),
            records: 0,
            failures: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// An event of a source that holds a whole chain in order (a journal): anything but the next
    /// seq linking to the last is a failure named by the verifier's finding kind.
    pub fn add_in_order(&mut self, position: String, event: SignedEvent) {
        self.records += 1;
        self.observe(&position, &event);
        let state = self.chains.entry(event.chain_id.clone()).or_default();
        match state.ranges.last_mut() {
            Some(range) if event.seq == range.1 + 1 => range.1 = event.seq,
            Some(range) if event.seq <= range.1 => {}
            _ => state.ranges.push((event.seq, event.seq)),
        }
        if let Some(f) = self.verifier.verify(&event).finding {
            let seqs = if f.seq == f.last_seq {
                format!("seq {}", f.seq)
            } else {
                format!("seqs {}..={}", f.seq, f.last_seq)
            };
            self.failures.push(Failure {
                position,
                event: Some((event.chain_id, event.seq)),
                message: format!("{} {seqs}: {}", f.kind.as_str(), f.detail),
            });
        }
    }

    /// Checks `event` against the witnessed heads and its chain's checkpoint trees.
    fn observe(&mut self, position: &str, event: &SignedEvent) {
        let Some(message) = self
            .heads
            .get_or_insert_with(HeadsCheck::default)
            .observe(event)
        else {
            return;
        };
        self.failures.push(Failure {
            position: position.to_owned(),
            event: Some((event.chain_id.clone(), event.seq)),
            message,
        });
    }

    /// A fact about the source the report states (not a failure).
    pub fn note(&mut self, message: String) {
        self.notes.push(message);
    }

    /// Something the source should hold and does not (a cut tail, a missing end line).
    pub fn missing(&mut self, message: String) {
        self.failures.push(Failure {
            position: "completeness".into(),
            event: None,
            message,
        });
    }

    /// A record that could not even be read as an event.
    pub fn fail(&mut self, position: String, event: Option<(String, u64)>, message: String) {
        self.records += 1;
        self.failures.push(Failure {
            position,
            event,
            message,
        });
    }

    pub fn add(&mut self, position: String, event: SignedEvent) {
        self.records += 1;
        self.observe(&position, &event);
        let id = (event.chain_id.clone(), event.seq);
        let state = self.chains.entry(event.chain_id.clone()).or_default();
        let last = state.ranges.last().map(|r| r.1);
        let continues = !state.broken && last == Some(event.seq - 1);
        if let Some(last) = last.filter(|&l| event.seq <= l) {
            let message = format!(
                "seq {} repeats or goes back (previous record had {last})",
                event.seq
            );
            self.failures.push(Failure {
                position,
                event: Some(id),
                message,
            });
            return;
        }
        if !continues {
            // A new range: anchor at the event's own prev_hash (seq 1 must start from zeros).
            let prev = if event.seq == 1 {
                ZERO_HASH
            } else {
                event.prev_hash
            };
            self.verifier.restore(
                &event.chain_id,
                ChainHead {
                    seq: event.seq - 1,
                    hash: prev,
                },
            );
            state.ranges.push((event.seq, event.seq));
        }
        state.broken = false;
        if let Some(range) = state.ranges.last_mut() {
            range.1 = event.seq;
        }
        let verdict = self.verifier.verify(&event);
        if verdict.status != EventStatus::Verified || verdict.finding.is_some() {
            let message = verdict.finding.map_or_else(
                || format!("not verified ({})", verdict.status.as_str()),
                |f| format!("{}: {}", f.kind.as_str(), f.detail),
            );
            state.broken = true;
            self.failures.push(Failure {
                position,
                event: Some(id),
                message,
            });
        }
    }

    pub fn finish(mut self, source: String) -> Report {
        if self.records == 0 {
            self.missing("no records: nothing was verified".into());
        }
        if let Some(heads) = self.heads.take() {
            let (missing, notes) = heads.finish();
            missing.into_iter().for_each(|m| self.missing(m));
            self.notes.extend(notes);
        }
        Report {
            source,
            records: self.records,
            chains: self
                .chains
                .into_iter()
                .map(|(chain, state)| (chain, state.ranges))
                .collect(),
            failures: self.failures,
            notes: self.notes,
        }
    }
}
