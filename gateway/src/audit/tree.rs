//! The gateway's Merkle tree over its own chain, so that its checkpoints commit to the same
//! structure the auditor's witness signs (see `verdict/v1/witness.proto`).
//!
//! The tree is kept as a frontier (at most 64 hashes) and grows with every event written. A
//! restarted gateway must not read its whole journal to rebuild it: every checkpoint carries the
//! frontier's peaks, so the tree resumes from the newest checkpoint and the few events after it.
//! Only a journal with no such checkpoint (written before trees were kept) is read from seq 1;
//! one that was pruned before that has no tree, and its checkpoints say so by leaving it out.

use verdict_journal::{JournalError, JournalReader};
use verdict_proto::merkle::Frontier;
use verdict_proto::pb::event_body::Kind;
use verdict_proto::{Hash, SignedEvent};

/// How far back from the head the newest checkpoint is looked for before the whole journal is.
const LOOK_BACK: [u64; 2] = [16_384, 1_048_576];

/// The tree over seqs `1..=head_seq` of the journal in `dir`, or `None` when it cannot be known.
pub fn restore(dir: &std::path::Path, head_seq: u64) -> Result<Option<Frontier>, JournalError> {
    if head_seq == 0 {
        return Ok(Some(Frontier::default()));
    }
    for back in LOOK_BACK.into_iter().chain([head_seq]) {
        let from = head_seq.saturating_sub(back);
        if let Some(tree) = scan(dir, from, head_seq)? {
            return Ok(Some(tree));
        }
        if from == 0 {
            break;
        }
    }
    tracing::warn!(
        head_seq,
        "the journal neither starts at seq 1 nor has a checkpoint with a Merkle tree; checkpoints carry no tree"
    );
    Ok(None)
}

/// Reads the records after `from`: the tree from the newest checkpoint that carries one, or from
/// seq 1 when the scan starts there.
fn scan(dir: &std::path::Path, from: u64, head_seq: u64) -> Result<Option<Frontier>, JournalError> {
    let mut reader = JournalReader::open(dir)?;
    reader.seek_after(from)?;
    let mut tree = None;
    while let Some(record) = reader.next_record_upto(head_seq)? {
        let Ok(event) = SignedEvent::decode(&record.payload) else {
            return Ok(None);
        };
        if event.seq == 1 {
            tree = Some(Frontier::default());
        }
        if let Some(carried) = carried_tree(&event) {
            tree = Some(carried);
        }
        if let Some(tree) = tree.as_mut() {
            tree.push(&event.computed_hash());
        }
    }
    Ok(tree.filter(|t| t.size() == head_seq))
}

/// The tree a checkpoint carries (over the events before it).
fn carried_tree(event: &SignedEvent) -> Option<Frontier> {
    let Kind::Checkpoint(checkpoint) = event.decode_body().ok()?.kind? else {
        return None;
    };
    if checkpoint.tree_root.is_empty() || checkpoint.tree_size + 1 != event.seq {
        return None;
    }
    let peaks: Vec<Hash> = checkpoint
        .tree_peaks
        .iter()
        .map(|p| Hash::try_from(p.as_slice()).ok())
        .collect::<Option<_>>()?;
    let tree = Frontier::from_peaks(checkpoint.tree_size, &peaks).ok()?;
    (tree.root().as_slice() == checkpoint.tree_root).then_some(tree)
}
