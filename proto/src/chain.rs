//! Appending to a chain: the one place events get their `seq`, `prev_hash` and signature.

use crate::envelope::SignedEvent;
use crate::hash::{event_hash, Hash, ZERO_HASH};
use crate::keys::SecretKey;
use crate::pb;

/// Signs events of one chain in order. Not `Sync` by design: a chain has exactly one writer,
/// and whoever owns it serialises appends.
#[derive(Debug)]
pub struct ChainWriter {
    chain_id: String,
    key: SecretKey,
    last_seq: u64,
    last_hash: Hash,
}

impl ChainWriter {
    /// A new chain, whose first event will have seq 1 and a zero `prev_hash`.
    pub fn new(chain_id: impl Into<String>, key: SecretKey) -> Self {
        Self::resume(chain_id, key, 0, ZERO_HASH)
    }

    /// Continues a chain whose last event had `last_seq` and `last_hash` (e.g. read back from
    /// the journal after a restart).
    pub fn resume(
        chain_id: impl Into<String>,
        key: SecretKey,
        last_seq: u64,
        last_hash: Hash,
    ) -> Self {
        Self {
            chain_id: chain_id.into(),
            key,
            last_seq,
            last_hash,
        }
    }

    /// Hashes and signs `body` as the next event of the chain.
    pub fn append(&mut self, body: Vec<u8>) -> SignedEvent {
        self.link(body).sign(&self.key)
    }

    /// Appends a `KeyRotation` to `new` (signed by the current key, as verifiers require) and
    /// signs every later event with `new`.
    pub fn hand_over(&mut self, new: SecretKey, reason: &str) -> SignedEvent {
        let body = pb::EventBody {
            time_unix_nanos: crate::now_unix_nanos(),
            kind: Some(pb::event_body::Kind::KeyRotation(pb::KeyRotation {
                new_public_key: new.public().as_bytes().to_vec(),
                new_key_id: new.public().key_id().to_owned(),
                reason: reason.to_owned(),
            })),
        };
        let event = self.append(prost::Message::encode_to_vec(&body));
        self.key = new;
        event
    }

    /// Links `body` into the chain as its next event (seq, `prev_hash`, hash) without signing
    /// it: an owner that appends many events at once links them in order here and signs them
    /// with [`ChainWriter::key`] on several cores, since signatures do not depend on each other.
    pub fn link(&mut self, body: Vec<u8>) -> Unsigned {
        let seq = self.last_seq + 1;
        let hash = event_hash(&self.chain_id, seq, &self.last_hash, &body);
        let event = SignedEvent {
            chain_id: self.chain_id.clone(),
            seq,
            prev_hash: self.last_hash,
            body,
            hash,
            key_id: self.key.public().key_id().to_owned(),
            signature: [0; 64],
        };
        self.last_seq = seq;
        self.last_hash = hash;
        Unsigned(event)
    }

    /// The key this chain's events are signed with.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// Forgets the appends after `(last_seq, last_hash)`, a head this writer had before: for an
    /// owner whose storage refused those events, so that their seqs are reused and the chain
    /// stays contiguous.
    pub fn rewind(&mut self, last_seq: u64, last_hash: Hash) {
        assert!(last_seq <= self.last_seq, "rewind only goes back");
        self.last_seq = last_seq;
        self.last_hash = last_hash;
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Seq and hash of the last appended event (0 and zeros for an empty chain).
    pub fn head(&self) -> (u64, Hash) {
        (self.last_seq, self.last_hash)
    }
}

/// An event linked into its chain by [`ChainWriter::link`] whose signature is still missing.
#[derive(Debug)]
#[must_use = "an event is only appended once it is signed"]
pub struct Unsigned(SignedEvent);

impl Unsigned {
    /// Signs the event with its chain's key ([`ChainWriter::key`]).
    pub fn sign(mut self, key: &SecretKey) -> SignedEvent {
        debug_assert_eq!(
            key.public().key_id(),
            self.0.key_id,
            "signed with its chain's key"
        );
        self.0.signature = key.sign(&self.0.hash);
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_each_event_to_the_previous_one() {
        let mut writer = ChainWriter::new("gw", SecretKey::from_seed(&[3; 32]));
        let first = writer.append(b"a".to_vec());
        let second = writer.append(b"b".to_vec());
        assert_eq!((first.seq, first.prev_hash), (1, ZERO_HASH));
        assert_eq!((second.seq, second.prev_hash), (2, first.hash));
        assert_eq!(second.computed_hash(), second.hash);
        assert_eq!(writer.head(), (2, second.hash));
    }

    #[test]
    fn events_linked_first_and_signed_out_of_order_equal_appended_ones() {
        let key = SecretKey::from_seed(&[3; 32]);
        let mut appended = ChainWriter::new("gw", key.clone());
        let expected = [
            appended.append(b"a".to_vec()),
            appended.append(b"b".to_vec()),
        ];
        let mut linked = ChainWriter::new("gw", key);
        let first = linked.link(b"a".to_vec());
        let second = linked.link(b"b".to_vec()).sign(linked.key());
        assert_eq!([first.sign(linked.key()), second], expected);
        assert_eq!(linked.head(), appended.head());
    }

    #[test]
    fn resumes_where_a_chain_stopped() {
        let key = SecretKey::from_seed(&[3; 32]);
        let mut original = ChainWriter::new("gw", key.clone());
        original.append(b"a".to_vec());
        let expected = original.append(b"b".to_vec());
        let mut resumed = ChainWriter::new("gw", key);
        let (seq, hash) = (1, resumed.append(b"a".to_vec()).hash);
        let mut resumed = ChainWriter::resume("gw", SecretKey::from_seed(&[3; 32]), seq, hash);
        assert_eq!(resumed.append(b"b".to_vec()), expected);
    }
}
