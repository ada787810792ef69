//! Witnessed heads: the auditor's signed statement of how far it verified a chain, and the one
//! place they are signed, checked and written as files.
//!
//! A gateway cannot prove its own trail complete: whoever holds its key can cut or rewrite the
//! tail and re-sign. The witness key belongs to the auditor alone, so a head it signed is an outside
//! reference a journal, an export or a single event can be checked against (layout in
//! `verdict/v1/witness.proto`). The JSON forms below are what files and the CLI carry: every hash
//! in hex, the signed bytes alongside the decoded fields, and only the signed bytes authoritative.

use crate::envelope::SignedEvent;
use crate::hash::Hash;
use crate::keys::{PublicKey, SecretKey};
use crate::merkle::{self, MerkleError};
use crate::pb;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Domain separation tag of witness signatures.
pub const WITNESS_TAG: &[u8; 18] = b"verdict.witness.v1";

/// `SHA-256("verdict.witness.v1" ‖ u32be(len head) ‖ head)`.
pub fn head_digest(head: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(WITNESS_TAG);
    hasher.update((head.len() as u32).to_be_bytes());
    hasher.update(head);
    hasher.finalize().into()
}

/// Why a witnessed head, a proof or an event handed over alone does not hold.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("witness key {0} is not among the trusted witness keys")]
    UnknownWitness(String),
    #[error("the witness signature does not verify")]
    BadSignature,
    #[error("the signed head is not a WitnessedHead: {0}")]
    Malformed(String),
    #[error("the readable fields disagree with the signed head ({0})")]
    Mismatch(&'static str),
    #[error("the event: {0}")]
    Event(String),
    #[error("the event is chain {event_chain} seq {event_seq}, the proof is for {proof_chain} seq {proof_seq}")]
    WrongEvent {
        event_chain: String,
        event_seq: u64,
        proof_chain: String,
        proof_seq: u64,
    },
    #[error("the proof is for a tree of {proof} events, the head for {head}")]
    WrongHead { proof: u64, head: u64 },
    #[error("inclusion proof: {0}")]
    Proof(#[from] MerkleError),
    #[error("not hex: {0}")]
    Hex(String),
    #[error("witness key {key_id} is revoked from {from} ns; the head was signed at {signed} ns")]
    Revoked {
        key_id: String,
        from: i64,
        signed: i64,
    },
}

/// Extends `witnesses` with every key a head in `heads` hands the witness role to, where that head
/// is signed by a key already trusted (the configured ones, or one handed over before), until no
/// more are added. Heads that do not verify hand nothing over.
///
/// A key with a revocation (`revoked`: key_id → Unix nanoseconds) hands nothing over at all: a
/// head's time is its signer's, so a stolen witness key could backdate a hand-over to a key of its
/// thief's; the successor of a revoked witness key is configured directly.
pub fn follow_handovers(
    witnesses: &mut Vec<PublicKey>,
    heads: &[pb::SignedHead],
    revoked: &HashMap<String, i64>,
) {
    loop {
        let handed: Vec<PublicKey> = heads
            .iter()
            .filter_map(|signed| verify(signed, witnesses).ok())
            .filter(|head| !revoked.contains_key(&head.witness_key_id))
            .filter_map(|head| PublicKey::from_bytes(&head.next_witness_key).ok())
            .filter(|next| witnesses.iter().all(|k| k.key_id() != next.key_id()))
            .collect();
        if handed.is_empty() {
            return;
        }
        for key in handed {
            if witnesses.iter().all(|k| k.key_id() != key.key_id()) {
                witnesses.push(key);
            }
        }
    }
}

/// Whether a head `key_id` signed at `time_unix_nanos` falls after the key's revocation.
pub fn revocation(
    key_id: &str,
    time_unix_nanos: i64,
    revoked: &HashMap<String, i64>,
) -> Result<(), WitnessError> {
    match revoked.get(key_id) {
        Some(&from) if time_unix_nanos >= from => Err(WitnessError::Revoked {
            key_id: key_id.to_owned(),
            from,
            signed: time_unix_nanos,
        }),
        _ => Ok(()),
    }
}

/// Signs `head` with the witness key.
pub fn sign(key: &SecretKey, head: &pb::WitnessedHead) -> pb::SignedHead {
    let bytes = head.encode_to_vec();
    pb::SignedHead {
        signature: key.sign(&head_digest(&bytes)).to_vec(),
        head: bytes,
        key_id: key.public().key_id().to_owned(),
    }
}

/// Checks the signature of `signed` against the witness keys and decodes the head.
pub fn verify(
    signed: &pb::SignedHead,
    witnesses: &[PublicKey],
) -> Result<pb::WitnessedHead, WitnessError> {
    let key = witnesses
        .iter()
        .find(|k| k.key_id() == signed.key_id)
        .ok_or_else(|| WitnessError::UnknownWitness(signed.key_id.clone()))?;
    let signature: [u8; 64] = signed
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| WitnessError::BadSignature)?;
    if !key.verify_strict(&head_digest(&signed.head), &signature) {
        return Err(WitnessError::BadSignature);
    }
    let head = pb::WitnessedHead::decode(signed.head.as_slice())
        .map_err(|e| WitnessError::Malformed(e.to_string()))?;
    if head.witness_key_id != signed.key_id {
        return Err(WitnessError::Mismatch("key_id"));
    }
    Ok(head)
}

/// A signed head as files and JSON carry it. `head` and `signature` are authoritative; the other
/// fields repeat the signed ones for readers and must agree with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRecord {
    pub chain_id: String,
    pub seq: u64,
    pub event_hash: String,
    pub tree_root: String,
    pub time_unix_nanos: i64,
    pub checkpoint_seq: u64,
    pub key_id: String,
    /// Hex of the WitnessedHead bytes as signed.
    pub head: String,
    pub signature: String,
}

impl HeadRecord {
    pub fn from_signed(signed: &pb::SignedHead) -> Result<Self, WitnessError> {
        let head = pb::WitnessedHead::decode(signed.head.as_slice())
            .map_err(|e| WitnessError::Malformed(e.to_string()))?;
        Ok(Self {
            chain_id: head.chain_id,
            seq: head.seq,
            event_hash: hex::encode(head.event_hash),
            tree_root: hex::encode(head.tree_root),
            time_unix_nanos: head.time_unix_nanos,
            checkpoint_seq: head.checkpoint_seq,
            key_id: signed.key_id.clone(),
            head: hex::encode(&signed.head),
            signature: hex::encode(&signed.signature),
        })
    }

    pub fn to_signed(&self) -> Result<pb::SignedHead, WitnessError> {
        Ok(pb::SignedHead {
            head: unhex(&self.head)?,
            key_id: self.key_id.clone(),
            signature: unhex(&self.signature)?,
        })
    }

    /// Verifies the signature and that the readable fields say what was signed.
    pub fn verify(&self, witnesses: &[PublicKey]) -> Result<Witnessed, WitnessError> {
        let head = verify(&self.to_signed()?, witnesses)?;
        let checks = [
            ("chain_id", head.chain_id == self.chain_id),
            ("seq", head.seq == self.seq),
            (
                "event_hash",
                hex::encode(&head.event_hash) == self.event_hash,
            ),
            ("tree_root", hex::encode(&head.tree_root) == self.tree_root),
            ("checkpoint_seq", head.checkpoint_seq == self.checkpoint_seq),
        ];
        if let Some((field, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(WitnessError::Mismatch(field));
        }
        Witnessed::try_from(head)
    }
}

/// A verified witnessed head with its hashes as fixed-size arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    pub chain_id: String,
    pub seq: u64,
    pub event_hash: Hash,
    pub tree_root: Hash,
    pub key_id: String,
    pub time_unix_nanos: i64,
}

impl TryFrom<pb::WitnessedHead> for Witnessed {
    type Error = WitnessError;

    fn try_from(head: pb::WitnessedHead) -> Result<Self, WitnessError> {
        let hash = |bytes: Vec<u8>, field| {
            Hash::try_from(bytes.as_slice()).map_err(|_| WitnessError::Mismatch(field))
        };
        Ok(Self {
            event_hash: hash(head.event_hash, "event_hash")?,
            tree_root: hash(head.tree_root, "tree_root")?,
            chain_id: head.chain_id,
            seq: head.seq,
            key_id: head.witness_key_id,
            time_unix_nanos: head.time_unix_nanos,
        })
    }
}

/// One event handed over alone, as a JSON file: `verdict verify --event`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventProofRecord {
    /// Hex of the envelope as shipped.
    pub envelope: String,
    pub chain_id: String,
    pub seq: u64,
    pub tree_size: u64,
    /// Hex hashes, leaf to root.
    pub path: Vec<String>,
    pub head: HeadRecord,
    /// Heads of earlier witness keys that may hand the role over to the head's key (see
    /// `EventProof.handovers`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handovers: Vec<HeadRecord>,
}

impl EventProofRecord {
    /// `trusted`, plus the keys this record's hand-over heads hand the role over to (see
    /// [`follow_handovers`]; a revoked key hands nothing over).
    pub fn witnesses(
        &self,
        trusted: &[PublicKey],
        revoked: &HashMap<String, i64>,
    ) -> Result<Vec<PublicKey>, WitnessError> {
        let handovers = self
            .handovers
            .iter()
            .map(HeadRecord::to_signed)
            .collect::<Result<Vec<_>, _>>()?;
        let mut witnesses = trusted.to_vec();
        follow_handovers(&mut witnesses, &handovers, revoked);
        Ok(witnesses)
    }

    /// Checks the witness's signature on the head and that the event is leaf `seq - 1` of the tree
    /// the head signs. The event's own signature is the caller's to check (it needs the gateway
    /// keys); the decoded event is returned for that.
    pub fn verify(&self, witnesses: &[PublicKey]) -> Result<SignedEvent, WitnessError> {
        let head = self.head.verify(witnesses)?;
        let event = SignedEvent::decode(&unhex(&self.envelope)?)
            .map_err(|e| WitnessError::Event(e.to_string()))?;
        let wrong = event.chain_id != self.chain_id
            || event.seq != self.seq
            || head.chain_id != self.chain_id;
        if wrong {
            return Err(WitnessError::WrongEvent {
                event_chain: event.chain_id.clone(),
                event_seq: event.seq,
                proof_chain: self.chain_id.clone(),
                proof_seq: self.seq,
            });
        }
        if self.tree_size != head.seq {
            return Err(WitnessError::WrongHead {
                proof: self.tree_size,
                head: head.seq,
            });
        }
        let path = self
            .path
            .iter()
            .map(|h| {
                unhex(h)?
                    .try_into()
                    .map_err(|_| WitnessError::Hex(h.clone()))
            })
            .collect::<Result<Vec<Hash>, _>>()?;
        let index = event.seq.checked_sub(1).ok_or(MerkleError::OutOfRange {
            index: 0,
            size: head.seq,
        })?;
        merkle::verify_inclusion(
            &event.computed_hash(),
            index,
            head.seq,
            &path,
            &head.tree_root,
        )?;
        Ok(event)
    }
}

fn unhex(text: &str) -> Result<Vec<u8>, WitnessError> {
    hex::decode(text).map_err(|_| WitnessError::Hex(text.chars().take(16).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(key: &SecretKey) -> pb::SignedHead {
        sign(
            key,
            &pb::WitnessedHead {
                chain_id: "gw".into(),
                seq: 3,
                event_hash: vec![7; 32],
                tree_root: vec![9; 32],
                time_unix_nanos: 1,
                checkpoint_seq: 2,
                witness_key_id: key.public().key_id().into(),
                ..Default::default()
            },
        )
    }

    /// A head signed by `key` handing the witness role to `next`.
    fn hand_over(key: &SecretKey, next: &SecretKey) -> pb::SignedHead {
        let mut head: pb::WitnessedHead = Message::decode(self::head(key).head.as_slice()).unwrap();
        head.next_witness_key = next.public().as_bytes().to_vec();
        sign(key, &head)
    }

    #[test]
    fn hand_overs_are_followed_from_trusted_keys_only() {
        let (first, second, third) = (
            SecretKey::from_seed(&[1; 32]),
            SecretKey::from_seed(&[2; 32]),
            SecretKey::from_seed(&[3; 32]),
        );
        let stranger = SecretKey::from_seed(&[4; 32]);
        // Out of order on purpose: second → third is only trusted once first → second is.
        let heads = [
            hand_over(&second, &third),
            hand_over(&stranger, &SecretKey::from_seed(&[5; 32])),
            hand_over(&first, &second),
            head(&third),
        ];
        let mut witnesses = vec![first.public().clone()];
        follow_handovers(&mut witnesses, &heads, &HashMap::new());
        let ids: Vec<&str> = witnesses.iter().map(PublicKey::key_id).collect();
        assert_eq!(
            ids,
            [
                first.public().key_id(),
                second.public().key_id(),
                third.public().key_id()
            ]
        );
        assert!(verify(&heads[3], &witnesses).is_ok());
        let mut only_stranger = vec![first.public().clone()];
        follow_handovers(&mut only_stranger, &heads[..2], &HashMap::new());
        assert_eq!(
            only_stranger.len(),
            1,
            "a stranger's hand-over hands nothing over"
        );
        // The first key revoked, even from after its hand-over (signed at time 1, revoked from 2):
        // its hand-overs are not followed, since a thief could backdate one.
        let revoked = HashMap::from([(first.public().key_id().to_owned(), 2)]);
        let mut after_revocation = vec![first.public().clone()];
        follow_handovers(&mut after_revocation, &heads, &revoked);
        assert_eq!(after_revocation.len(), 1);
        assert!(revocation(first.public().key_id(), 2, &revoked).is_err());
        assert!(revocation(first.public().key_id(), 1, &revoked).is_ok());
    }

    #[test]
    fn a_signed_head_verifies_with_the_witness_key_only() {
        let (witness, gateway) = (
            SecretKey::from_seed(&[1; 32]),
            SecretKey::from_seed(&[2; 32]),
        );
        let signed = head(&witness);
        let record = HeadRecord::from_signed(&signed).unwrap();
        assert_eq!(record.verify(&[witness.public().clone()]).unwrap().seq, 3);
        assert!(matches!(
            record.verify(&[gateway.public().clone()]),
            Err(WitnessError::UnknownWitness(_))
        ));
        let mut edited = record.clone();
        edited.seq = 4;
        assert!(matches!(
            edited.verify(&[witness.public().clone()]),
            Err(WitnessError::Mismatch("seq"))
        ));
        let mut forged = signed.clone();
        forged.head[3] ^= 1;
        assert!(matches!(
            verify(&forged, &[witness.public().clone()]),
            Err(WitnessError::BadSignature)
        ));
    }
}
