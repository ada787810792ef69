//! The event hash: the one place the byte layout that gets signed is defined.
//!
//! Every field is fixed-width or length-prefixed, so no two different (chain, seq, prev, body)
//! tuples can produce the same pre-image. The layout is documented in `verdict/v1/event.proto`
//! and pinned by the golden vectors in `testdata/golden.json`.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `prev_hash` of the first event of every chain.
pub const ZERO_HASH: Hash = [0; 32];

/// Domain separation tag, so a Verdict hash can never be mistaken for any other SHA-256 use.
pub const DOMAIN_TAG: &[u8; 10] = b"verdict.v1";

/// `SHA-256("verdict.v1" ‖ u32be(len chain_id) ‖ chain_id ‖ u64be(seq) ‖ prev_hash ‖ u32be(len body) ‖ body)`.
///
/// Callers guarantee `chain_id` and `body` fit in `u32` lengths; [`crate::SignedEvent`] enforces
/// much smaller limits before anything is hashed.
pub fn event_hash(chain_id: &str, seq: u64, prev_hash: &Hash, body: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN_TAG);
    hasher.update((chain_id.len() as u32).to_be_bytes());
    hasher.update(chain_id.as_bytes());
    hasher.update(seq.to_be_bytes());
    hasher.update(prev_hash);
    hasher.update((body.len() as u32).to_be_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

/// Plain SHA-256, for argument and policy digests and key fingerprints.
pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixes_keep_fields_apart() {
        // Moving a byte from the chain id into the body must change the hash.
        let a = event_hash("ab", 1, &ZERO_HASH, b"c");
        let b = event_hash("a", 1, &ZERO_HASH, b"bc");
        assert_ne!(a, b);
    }

    #[test]
    fn every_field_is_covered() {
        let base = event_hash("gw", 7, &ZERO_HASH, b"body");
        assert_ne!(base, event_hash("gx", 7, &ZERO_HASH, b"body"));
        assert_ne!(base, event_hash("gw", 8, &ZERO_HASH, b"body"));
        assert_ne!(base, event_hash("gw", 7, &[1; 32], b"body"));
        assert_ne!(base, event_hash("gw", 7, &ZERO_HASH, b"bodz"));
    }
}
