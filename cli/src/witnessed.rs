//! The witness on the command line: fetching signed heads and proofs from the query service
//! (`verdict heads`, `verdict prove`), and checking a journal, an export or one event against
//! them offline (`verdict verify --witnessed-head`, `verdict verify --event`).
//!
//! A journal or export alone cannot show that nothing was cut after its last record; a head the
//! auditor's witness signed can. [`HeadsCheck`] follows a source's events per chain, rebuilds the
//! Merkle tree from seq 1 where the source starts there, and requires every supplied head to be
//! reached with the same event hash and, where the tree is known, the same root: then every event
//! `1..=seq` is present and unaltered. It also checks the trees the gateway's own checkpoints
//! commit to.

use crate::query::{status, Client, Connection};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use verdict_proto::merkle::Frontier;
use verdict_proto::pb::{self, event_body::Kind};
use verdict_proto::witness::{self, EventProofRecord, HeadRecord, Witnessed};
use verdict_proto::{PublicKey, SignedEvent};

#[derive(clap::Args)]
pub struct HeadsArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// One chain's heads, newest first (default: the newest head of every chain).
    #[arg(long, default_value = "")]
    chain: String,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Write JSON lines here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ProveArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[arg(long, required_unless_present = "event_hash")]
    chain: Option<String>,
    /// The event to prove.
    #[arg(long, required_unless_present = "event_hash")]
    seq: Option<u64>,
    /// The event to prove, by its hash (as exports, WhoTried and Search show it).
    #[arg(long, conflicts_with_all = ["chain", "seq"])]
    event_hash: Option<String>,
    /// The witnessed head (its seq) to prove against (default: the newest).
    #[arg(long, default_value_t = 0)]
    tree_size: u64,
    /// Write the proof (JSON, for `verdict verify --event`) here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub async fn heads(mut client: Client, args: HeadsArgs) -> Result<ExitCode> {
    let request = pb::ListWitnessedHeadsRequest {
        chain_id: args.chain,
        limit: args.limit,
    };
    let response = client
        .inner
        .list_witnessed_heads(client.request(request))
        .await
        .map_err(status)?
        .into_inner();
    let mut lines = String::new();
    for head in &response.heads {
        lines += &serde_json::to_string(&HeadRecord::from_signed(head)?)?;
        lines.push('\n');
    }
    write_out(args.out.as_deref(), &lines)
}

pub async fn prove(mut client: Client, args: ProveArgs) -> Result<ExitCode> {
    let request = pb::InclusionProofRequest {
        chain_id: args.chain.unwrap_or_default(),
        seq: args.seq.unwrap_or_default(),
        tree_size: args.tree_size,
        event_hash: args.event_hash.unwrap_or_default(),
    };
    let proof = client
        .inner
        .get_inclusion_proof(client.request(request))
        .await
        .map_err(status)?
        .into_inner();
    let (Some(inclusion), Some(head)) = (proof.inclusion, proof.head) else {
        anyhow::bail!("the query service answered without a proof or head");
    };
    let record = EventProofRecord {
        envelope: hex::encode(&proof.envelope),
        chain_id: inclusion.chain_id,
        seq: inclusion.seq,
        tree_size: inclusion.tree_size,
        path: inclusion.path.iter().map(hex::encode).collect(),
        head: HeadRecord::from_signed(&head)?,
        handovers: proof
            .handovers
            .iter()
            .map(HeadRecord::from_signed)
            .collect::<Result<_, _>>()?,
    };
    write_out(
        args.out.as_deref(),
        &(serde_json::to_string_pretty(&record)? + "\n"),
    )
}

fn write_out(path: Option<&Path>, text: &str) -> Result<ExitCode> {
    match path {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The witness keys a verification trusts: the `--witness-key` files, the keys hand-over heads
/// add, and the revocation times of `--witness-revoked KEY_ID=TIME`.
#[derive(Default)]
pub struct WitnessTrust {
    pub keys: Vec<PublicKey>,
    pub revoked: HashMap<String, i64>,
}

impl WitnessTrust {
    pub fn load(paths: &[PathBuf], revoked: &[String]) -> Result<Self> {
        let keys = paths
            .iter()
            .map(|p| {
                PublicKey::read_pem_file(p).with_context(|| format!("witness key {}", p.display()))
            })
            .collect::<Result<_>>()?;
        let revoked = revoked
            .iter()
            .map(|entry| {
                let (key_id, time) = entry.split_once('=').with_context(|| {
                    format!("--witness-revoked {entry:?}: expected KEY_ID=TIME")
                })?;
                let from = verdict_proto::trusted::parse_rfc3339(time)?;
                Ok((key_id.to_owned(), from))
            })
            .collect::<Result<_>>()?;
        Ok(Self { keys, revoked })
    }

    /// Checks a head's signature against the trusted keys and its key's revocation time.
    pub fn verify(&self, record: &HeadRecord) -> Result<Witnessed> {
        let head = record.verify(&self.keys)?;
        witness::revocation(&head.key_id, head.time_unix_nanos, &self.revoked)?;
        Ok(head)
    }
}

/// The witnessed heads of `source` with each signature checked; a head that does not verify is
/// an error, never silently skipped. `source` is a file of JSON lines (as `verdict heads` writes)
/// or a query service URL, from which the newest head of every chain is fetched. Hand-over heads
/// among them add the witness keys they hand over to `witnesses`.
fn read_heads(source: &str, trust: &mut WitnessTrust) -> Result<Vec<Witnessed>> {
    let records = match source.starts_with("http://") || source.starts_with("https://") {
        true => crate::query::newest_heads(source)?
            .iter()
            .map(|signed| {
                Ok((
                    format!("{source}: head of {}", signed.key_id),
                    HeadRecord::from_signed(signed)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?,
        false => head_lines(Path::new(source))?,
    };
    let signed = records
        .iter()
        .map(|(_, record)| record.to_signed())
        .collect::<Result<Vec<_>, _>>()?;
    witness::follow_handovers(&mut trust.keys, &signed, &trust.revoked);
    let mut heads = Vec::new();
    for (at, record) in records {
        heads.push(trust.verify(&record).with_context(|| at)?);
    }
    if heads.is_empty() {
        anyhow::bail!("{source}: no witnessed heads");
    }
    Ok(heads)
}

/// The head records of a JSON-lines file, each with where it was read.
fn head_lines(path: &Path) -> Result<Vec<(String, HeadRecord)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut records = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{} line {}", path.display(), index + 1);
        let record = serde_json::from_str(&line).with_context(|| at.clone())?;
        records.push((at, record));
    }
    Ok(records)
}

#[derive(Default)]
struct ChainTree {
    /// The tree over `1..=size`, while the source has every event from seq 1 on, in order.
    tree: Option<Frontier>,
}

/// Follows a source's events and checks them against witnessed heads.
#[derive(Default)]
pub struct HeadsCheck {
    heads: BTreeMap<String, Vec<(Witnessed, Option<bool>)>>,
    chains: BTreeMap<String, ChainTree>,
    /// The heads are the newest of every chain the witness knows (fetched from a query service),
    /// not chosen for this source: only the source's chains must reach theirs.
    of_every_chain: bool,
}

impl HeadsCheck {
    /// Heads read from `source` (see [`read_heads`]), each of which the source must reach.
    pub fn from_source(source: &str, trust: &mut WitnessTrust) -> Result<Self> {
        let mut check = Self::new(read_heads(source, trust)?);
        check.of_every_chain = source.starts_with("http://") || source.starts_with("https://");
        Ok(check)
    }

    fn new(heads: Vec<Witnessed>) -> Self {
        let mut check = Self::default();
        check.extend(heads);
        check
    }

    /// More heads the source must reach.
    pub fn extend(&mut self, heads: Vec<Witnessed>) {
        for head in heads {
            self.heads
                .entry(head.chain_id.clone())
                .or_default()
                .push((head, None));
        }
    }

    /// The next event of the source (in seq order per chain); a failure message if it
    /// contradicts a witnessed head or a checkpoint's own tree.
    pub fn observe(&mut self, event: &SignedEvent) -> Option<String> {
        let chain = self.chains.entry(event.chain_id.clone()).or_default();
        if event.seq == 1 {
            chain.tree = Some(Frontier::default());
        }
        if chain
            .tree
            .as_ref()
            .is_some_and(|t| t.size() + 1 != event.seq)
        {
            chain.tree = None;
        }
        let mut failure = chain
            .tree
            .as_ref()
            .and_then(|tree| checkpoint_disagrees(event, tree));
        // The claimed hash: the verifier recomputes it and fails the record if it differs.
        let hash = event.hash;
        if let Some(tree) = chain.tree.as_mut() {
            tree.push(&hash);
        }
        let root = chain.tree.as_ref().map(Frontier::root);
        for (head, reached) in self.heads.get_mut(&event.chain_id).into_iter().flatten() {
            if head.seq != event.seq {
                continue;
            }
            let same = head.event_hash == hash && root.is_none_or(|r| r == head.tree_root);
            *reached = Some(root.is_some() && same);
            if !same {
                failure = Some(format!(
                    "differs from the head witnessed at seq {} (witness {}): the source forked from the chain the witness saw",
                    head.seq, head.key_id
                ));
            }
        }
        failure
    }

    /// Heads the source never reached (failures) and what the reached ones prove (notes).
    pub fn finish(&self) -> (Vec<String>, Vec<String>) {
        let (mut missing, mut notes) = (Vec::new(), Vec::new());
        let in_source = |chain: &String| !self.of_every_chain || self.chains.contains_key(chain);
        if self.of_every_chain {
            // Every chain of the source must have a head; none at all proves nothing.
            if self.chains.is_empty() {
                missing.push(
                    "the source holds no event of a chain the witness signed heads for: nothing proves it complete".into(),
                );
            }
            for chain in self.chains.keys().filter(|c| !self.heads.contains_key(*c)) {
                missing.push(format!(
                    "chain {chain}: the witness signed no head of it: nothing proves it complete"
                ));
            }
        }
        for (chain, heads) in self.heads.iter().filter(|(chain, _)| in_source(chain)) {
            for (head, reached) in heads {
                let seq = head.seq;
                match reached {
                    None => missing.push(format!(
                        "chain {chain}: the source ends before the head witnessed at seq {seq} (witness {}): events are missing",
                        head.key_id
                    )),
                    Some(true) => notes.push(format!(
                        "chain {chain}: the Merkle root of seqs 1..={seq} equals the witnessed head's: every event up to it is present"
                    )),
                    Some(false) => notes.push(format!(
                        "chain {chain}: reaches the witnessed head at seq {seq} with its hash (the source does not start at seq 1, so events before its first one are not proven)"
                    )),
                }
            }
        }
        (missing, notes)
    }
}

/// A checkpoint whose tree differs from the events before it in the same source.
fn checkpoint_disagrees(event: &SignedEvent, tree: &Frontier) -> Option<String> {
    let Ok(Some(Kind::Checkpoint(c))) = event.decode_body().map(|b| b.kind) else {
        return None;
    };
    let differs = !c.tree_root.is_empty()
        && (c.tree_size != tree.size() || c.tree_root != tree.root().as_slice());
    differs.then(|| {
        format!(
            "tree_mismatch: the checkpoint commits to a Merkle tree of {} events that differs from the {} events before it",
            c.tree_size,
            tree.size()
        )
    })
}

/// `verdict verify --event`: one event, its inclusion proof and the witnessed head, checked with
/// public keys only. Returns the failures (empty: it verifies).
pub fn verify_event(
    path: &Path,
    keys: verdict_proto::TrustedKeys,
    trust: &WitnessTrust,
) -> Result<(Option<SignedEvent>, Vec<String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let record: EventProofRecord = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an event proof", path.display()))?;
    let checked = record
        .witnesses(&trust.keys, &trust.revoked)
        .and_then(|witnesses| {
            let event = record.verify(&witnesses)?;
            let head = record.head.verify(&witnesses)?;
            witness::revocation(&head.key_id, head.time_unix_nanos, &trust.revoked)?;
            Ok(event)
        });
    let event = match checked {
        Ok(event) => event,
        Err(error) => return Ok((None, vec![error.to_string()])),
    };
    let mut verifier = verdict_proto::ChainVerifier::new(keys);
    verifier.restore(
        &event.chain_id,
        verdict_proto::verify::ChainHead {
            seq: event.seq - 1,
            hash: event.prev_hash,
        },
    );
    let verdict = verifier.verify(&event);
    let failures = verdict
        .finding
        .map(|f| vec![format!("{}: {}", f.kind.as_str(), f.detail)])
        .unwrap_or_default();
    Ok((Some(event), failures))
}
