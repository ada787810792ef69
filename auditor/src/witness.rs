//! The witness: the auditor signs, with a key of its own, the chain heads it has verified, so a
//! journal, an export or one event can later be proven complete against a reference no gateway
//! operator can rewrite alone (contract in `verdict/v1/witness.proto`).
//!
//! Per chain it keeps the Merkle tree over the events verified so far, in seq order and linked,
//! as a frontier plus the leaves of the chunk being filled. Only such a chain is witnessed: a
//! chain that broke (gap, fork, untrusted event in its place) is not, until its stored rows from
//! seq 1 are complete and verified again (checked when the tree is rebuilt from ClickHouse). Every
//! complete chunk's root is stored for the query service's proofs. A head is signed at every
//! verified gateway checkpoint, whose own tree root must equal the witness's (else a
//! `tree_mismatch` finding), and at most every `every` while the chain grows.
//!
//! Chunk roots are held back until the next signed head and stored with it: a proof needs them
//! only against a head, and one insert per head instead of one per batch is most of what the
//! witness would otherwise cost the auditor. They are a cache of stored events: roots held when
//! the auditor stops are recomputed from the events when the tree is rebuilt.
//!
//! It must not sign anything it did not verify itself, and never uses a gateway key.

use crate::store::{Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use verdict_proto::merkle::{Frontier, Subtrees};
use verdict_proto::pb::{self, event_body::Kind};
use verdict_proto::verify::EventStatus;
use verdict_proto::{witness, BreakKind, Finding, Hash, SecretKey, SignedEvent};
use verdict_schema::{ChunkRow, WitnessedHeadRow, MERKLE_CHUNK};

/// A chain whose tree could not be rebuilt is tried again after this long at the earliest.
const REBUILD_AGAIN: Duration = Duration::from_secs(60);

/// What one batch adds: signed heads, chunk roots and findings, stored with the batch.
#[derive(Debug, Default)]
pub struct Witnessed {
    pub heads: Vec<(pb::SignedHead, WitnessedHeadRow)>,
    pub chunks: Vec<ChunkRow>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone)]
struct Tree {
    frontier: Frontier,
    /// Event hashes of the chunk being filled.
    chunk: Vec<Hash>,
    head_hash: Hash,
    checkpoint_seq: u64,
    signed: Option<(u64, Hash)>,
    signed_at: Instant,
}

impl Tree {
    fn new() -> Self {
        Self {
            frontier: Frontier::default(),
            chunk: Vec::new(),
            head_hash: verdict_proto::ZERO_HASH,
            checkpoint_seq: 0,
            signed: None,
            signed_at: Instant::now(),
        }
    }

    fn push(&mut self, chain_id: &str, hash: Hash, out: &mut Witnessed) {
        self.frontier.push(&hash);
        self.chunk.push(hash);
        self.head_hash = hash;
        if self.chunk.len() as u64 == MERKLE_CHUNK {
            let root = self.chunk.as_slice().mth(0, MERKLE_CHUNK);
            if let Ok(root) = root {
                out.chunks.push(ChunkRow {
                    chain_id: chain_id.to_owned(),
                    chunk: self.frontier.size() / MERKLE_CHUNK - 1,
                    root: hex::encode(root),
                });
            }
            self.chunk.clear();
        }
    }
}

pub struct Witness {
    key: SecretKey,
    /// The key `key` replaces, until it has signed each chain's hand-over head.
    previous: Option<SecretKey>,
    handed_over: HashSet<String>,
    every: Duration,
    chains: HashMap<String, Tree>,
    /// Chains to rebuild from stored rows, and when at the earliest.
    stale: HashMap<String, Instant>,
    /// Completed chunk roots waiting for the next signed head.
    held: Vec<ChunkRow>,
}

impl Witness {
    pub fn new(key: SecretKey, every: Duration) -> Self {
        Self {
            key,
            previous: None,
            handed_over: HashSet::new(),
            every,
            chains: HashMap::new(),
            stale: HashMap::new(),
            held: Vec::new(),
        }
    }

    /// The first head of each chain will be signed by `previous` and hand the witness role over
    /// to this witness's key.
    pub fn handing_over_from(mut self, previous: Option<SecretKey>) -> Self {
        if let Some(previous) = &previous {
            tracing::info!(
                from = previous.public().key_id(),
                to = self.key_id(),
                "handing the witness role over: one head per chain signed by the previous key"
            );
        }
        self.previous = previous;
        self
    }

    pub fn key_id(&self) -> &str {
        self.key.public().key_id()
    }

    /// Forgets every tree; each chain is rebuilt from stored rows before it is witnessed again.
    pub fn reset(&mut self, chain_ids: impl Iterator<Item = String>) {
        self.chains.clear();
        self.held.clear();
        self.stale = chain_ids.map(|id| (id, Instant::now())).collect();
    }

    /// Notes that `event`, stored with `status` (`checkpoint`: its row's kind says so, so no other
    /// body is decoded twice), became its chain's head.
    pub fn advance(
        &mut self,
        event: &SignedEvent,
        status: EventStatus,
        checkpoint: bool,
        out: &mut Witnessed,
    ) {
        let id = &event.chain_id;
        if event.seq == 1 && status == EventStatus::Verified {
            self.chains.insert(id.clone(), Tree::new());
        }
        let Some(tree) = self.chains.get_mut(id) else {
            self.stale.entry(id.clone()).or_insert_with(Instant::now);
            return;
        };
        let next = tree.frontier.size() + 1 == event.seq && event.prev_hash == tree.head_hash;
        if status != EventStatus::Verified || !next {
            tracing::warn!(chain_id = %id, seq = event.seq, "chain no longer contiguous; not witnessed until its stored rows are");
            self.chains.remove(id);
            self.stale.insert(id.clone(), Instant::now());
            return;
        }
        let checkpoint = checkpoint.then(|| checkpoint_tree(event));
        if let Some(Some((size, root))) = checkpoint {
            if size != tree.frontier.size() || root != tree.frontier.root() {
                out.findings.push(mismatch(event, &tree.frontier));
            } else {
                tree.checkpoint_seq = event.seq;
            }
        }
        tree.push(id, event.hash, out);
        if checkpoint.is_some() {
            let (key, next) = signer(&self.key, &self.previous, &mut self.handed_over, id);
            sign(key, next, id, tree, out);
        }
    }

    /// Signs the heads of chains that grew since they were last signed, `every` apart; called
    /// last for each batch, it also decides whether the batch stores the held chunk roots.
    pub fn sign_due(&mut self, out: &mut Witnessed) {
        for (id, tree) in &mut self.chains {
            let grew = tree
                .signed
                .is_none_or(|(seq, _)| seq < tree.frontier.size());
            if grew && tree.signed_at.elapsed() >= self.every && tree.frontier.size() > 0 {
                let (key, next) = signer(&self.key, &self.previous, &mut self.handed_over, id);
                sign(key, next, id, tree, out);
            }
        }
        self.hold_chunks(out);
    }

    /// Keeps `out`'s chunk roots until a batch signs a head, then hands all held ones over to
    /// be stored before it (the query service proves against stored heads only).
    fn hold_chunks(&mut self, out: &mut Witnessed) {
        self.held.append(&mut out.chunks);
        if !out.heads.is_empty() {
            out.chunks = std::mem::take(&mut self.held);
        }
    }

    /// What a fork at `finding.seq` contradicts, when the witness signed a head past it.
    pub fn contradicted(&self, finding: &Finding) -> Option<String> {
        let tree = self.chains.get(&finding.chain_id)?;
        let (seq, root) = tree.signed?;
        (finding.kind == BreakKind::Fork && finding.seq <= seq).then(|| {
            format!(
                "; contradicts witnessed head seq {seq} tree root {} (witness key {})",
                hex::encode(root),
                self.key_id()
            )
        })
    }

    /// Rebuilds the trees of chains marked stale from stored rows, where they are complete.
    pub async fn rebuild(
        &mut self,
        store: &Store,
        head: impl Fn(&str) -> Option<u64>,
        out: &mut Witnessed,
    ) -> Result<(), StoreError> {
        let due: Vec<String> = self
            .stale
            .iter()
            .filter(|(_, at)| **at <= Instant::now())
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(head) = head(&id) else {
                self.stale.remove(&id);
                continue;
            };
            match rebuild_tree(store, &id, head, out).await? {
                Some(mut tree) => {
                    if let Some(last) = store.last_witnessed(&id, self.key_id()).await? {
                        tree.signed = parse_hash(&last.tree_root).map(|root| (last.seq, root));
                        tree.checkpoint_seq = last.checkpoint_seq;
                    }
                    self.stale.remove(&id);
                    self.chains.insert(id, tree);
                }
                None => {
                    self.stale.insert(id, Instant::now() + REBUILD_AGAIN);
                }
            }
        }
        Ok(())
    }
}

/// The tree over stored seqs `1..=head` of a chain, when every one of them is stored and verified.
async fn rebuild_tree(
    store: &Store,
    chain_id: &str,
    head: u64,
    out: &mut Witnessed,
) -> Result<Option<Tree>, StoreError> {
    let stored = store.chunk_roots(chain_id).await?;
    let mut tree = Tree::new();
    // After a stored chunk root the last hash is not read: the next stored row, which the
    // auditor verified as linking to it, supplies it.
    let mut linked = true;
    let complete = head / MERKLE_CHUNK;
    for chunk in 0..complete {
        let first = chunk * MERKLE_CHUNK + 1;
        match stored.get(chunk as usize).filter(|row| row.chunk == chunk) {
            Some(row) => {
                let pushed = parse_hash(&row.root)
                    .map(|root| tree.frontier.push_subtree(MERKLE_CHUNK, root));
                if !matches!(pushed, Some(Ok(()))) {
                    return Ok(None);
                }
                linked = false;
            }
            None => {
                let hashes = store
                    .verified_hashes(chain_id, first, first + MERKLE_CHUNK - 1)
                    .await?;
                if !extend(&mut tree, chain_id, &hashes, MERKLE_CHUNK, linked, out) {
                    return Ok(None);
                }
                linked = true;
            }
        }
    }
    let first = complete * MERKLE_CHUNK + 1;
    let tail = store.verified_hashes(chain_id, first, head).await?;
    if tail.is_empty() && !linked {
        // The chain ends at a chunk boundary: its head is the last row of the last chunk.
        let last = store.verified_hashes(chain_id, head, head).await?;
        let Some(&(hash, _)) = last.first() else {
            return Ok(None);
        };
        tree.head_hash = hash;
        return Ok(Some(tree));
    }
    let ok = extend(&mut tree, chain_id, &tail, head + 1 - first, linked, out);
    Ok(ok.then_some(tree))
}

/// Pushes `hashes` (stored `(hash, prev_hash)` in seq order), which must be `count` linked rows
/// (the first linked to the tree's head unless `linked` is false).
fn extend(
    tree: &mut Tree,
    chain_id: &str,
    hashes: &[(Hash, Hash)],
    count: u64,
    linked: bool,
    out: &mut Witnessed,
) -> bool {
    if hashes.len() as u64 != count {
        return false;
    }
    if let (false, Some((_, prev))) = (linked, hashes.first()) {
        tree.head_hash = *prev;
    }
    for (hash, prev) in hashes {
        if *prev != tree.head_hash {
            return false;
        }
        tree.push(chain_id, *hash, out);
    }
    true
}

/// Who signs the next head of `chain_id` (the previous key, once per chain, on a hand-over head),
/// and the key it hands over to.
fn signer<'a>(
    key: &'a SecretKey,
    previous: &'a Option<SecretKey>,
    handed_over: &mut HashSet<String>,
    chain_id: &str,
) -> (&'a SecretKey, Option<&'a SecretKey>) {
    match previous {
        Some(previous) if handed_over.insert(chain_id.to_owned()) => (previous, Some(key)),
        _ => (key, None),
    }
}

fn sign(
    key: &SecretKey,
    next: Option<&SecretKey>,
    chain_id: &str,
    tree: &mut Tree,
    out: &mut Witnessed,
) {
    let root = tree.frontier.root();
    let head = pb::WitnessedHead {
        chain_id: chain_id.to_owned(),
        seq: tree.frontier.size(),
        event_hash: tree.head_hash.to_vec(),
        tree_root: root.to_vec(),
        time_unix_nanos: verdict_proto::now_unix_nanos(),
        checkpoint_seq: tree.checkpoint_seq,
        witness_key_id: key.public().key_id().to_owned(),
        next_witness_key: next.map_or_else(Vec::new, |n| n.public().as_bytes().to_vec()),
    };
    let signed = witness::sign(key, &head);
    let row = WitnessedHeadRow::from_signed(&signed, &head);
    out.heads.push((signed, row));
    tree.signed = Some((head.seq, root));
    tree.signed_at = Instant::now();
}

/// The tree a checkpoint commits to, `(size, root)`, if it carries one.
fn checkpoint_tree(event: &SignedEvent) -> Option<(u64, Hash)> {
    match event.decode_body().ok()?.kind? {
        Kind::Checkpoint(c) if !c.tree_root.is_empty() => Some((
            c.tree_size,
            Hash::try_from(c.tree_root.as_slice()).unwrap_or_default(),
        )),
        _ => None,
    }
}

fn mismatch(event: &SignedEvent, frontier: &Frontier) -> Finding {
    Finding {
        kind: BreakKind::TreeMismatch,
        chain_id: event.chain_id.clone(),
        seq: event.seq,
        last_seq: event.seq,
        detail: format!(
            "the checkpoint commits to a Merkle tree over seqs 1..={} that differs from the witness's (root {})",
            frontier.size(),
            hex::encode(frontier.root())
        ),
    }
}

pub fn parse_hash(text: &str) -> Option<Hash> {
    hex::decode(text).ok()?.try_into().ok()
}
