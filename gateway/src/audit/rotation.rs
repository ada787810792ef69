//! Handing the chain to a new signing key, in the chain itself.
//!
//! A gateway key is replaced on a schedule or after a leak. Verifiers should not need a new
//! configuration for it, and the old key must stop counting for this chain: so the first event a
//! gateway writes with a new `[audit] key` is a `KeyRotation` naming it, signed by the key that
//! signed the chain so far (`previous_key`). Every verifier then trusts the new key for this chain
//! from the next seq on and reports the old one signing after it as `retired_key` (see
//! `verdict_proto::verify`). Without `previous_key` the chain still continues, with a warning:
//! its verifiers must then be given the new public key directly.

use super::recorder::OpenError;
use verdict_journal::JournalWriter;
use verdict_proto::merkle::Frontier;
use verdict_proto::{ChainWriter, Hash, SecretKey};

/// The chain's head when the journal was opened, and who signed it.
pub(super) struct Head<'a> {
    pub seq: u64,
    pub hash: Hash,
    /// Who signs the chain now: the last event's key, or the key it handed the chain to when it
    /// is a `KeyRotation` (a restart right after a rotation announces nothing again).
    pub key_id: Option<&'a str>,
}

/// The writer that continues the chain with `key`; when the chain's last event was signed by
/// `previous`, the hand-over to `key` is journaled (and synced) first.
pub(super) fn continue_chain(
    chain_id: &str,
    key: SecretKey,
    previous: Option<SecretKey>,
    head: Head<'_>,
    journal: &mut JournalWriter,
    tree: &mut Option<Frontier>,
) -> Result<ChainWriter, OpenError> {
    let new_id = key.public().key_id().to_owned();
    let Some(last_id) = head.key_id.filter(|id| *id != new_id) else {
        if previous.is_some() {
            tracing::info!(
                "[audit] previous_key is no longer needed: the chain is signed with [audit] key"
            );
        }
        return Ok(ChainWriter::resume(chain_id, key, head.seq, head.hash));
    };
    let previous = previous.filter(|p| p.public().key_id() == last_id);
    let Some(previous) = previous else {
        tracing::warn!(
            last_key_id = %last_id, key_id = %new_id,
            "the chain's last event is signed by another key and no [audit] previous_key hands the \
             chain over: verifiers must be given this key directly"
        );
        return Ok(ChainWriter::resume(chain_id, key, head.seq, head.hash));
    };
    let mut writer = ChainWriter::resume(chain_id, previous, head.seq, head.hash);
    let rotation = writer.hand_over(key, "configured key rotation");
    journal.append(&[(rotation.seq, rotation.encode().as_slice())])?;
    journal.sync_point().sync()?;
    if let Some(tree) = tree.as_mut() {
        tree.push(&rotation.hash);
    }
    tracing::warn!(seq = rotation.seq, from = %last_id, to = %new_id, "signing key rotated: the chain is handed over to the new key");
    Ok(writer)
}
