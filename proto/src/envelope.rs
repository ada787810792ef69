//! Shipped envelopes, decoded into checked values.
//!
//! Anything that arrives from the journal, Kafka or an export passes through
//! [`SignedEvent::decode`] first, so the rest of the system handles fixed-size hashes and
//! signatures instead of arbitrary byte strings. Every malformation is a typed error, never a
//! panic: these bytes come from outside the trust boundary.

use crate::hash::{event_hash, Hash};
use crate::pb;
use prost::Message;

/// Largest envelope accepted (and written): bodies carry redacted arguments, not payloads.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;
/// Longest chain id, in bytes.
pub const MAX_CHAIN_ID_BYTES: usize = 128;
/// The envelope layout this crate writes and verifies.
pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is {0} bytes, more than the {MAX_ENVELOPE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("envelope is not a valid protobuf message: {0}")]
    Decode(String),
    #[error("unsupported envelope version {0} (this build understands {ENVELOPE_VERSION})")]
    Version(u32),
    #[error("chain_id must be 1..={MAX_CHAIN_ID_BYTES} bytes, got {0}")]
    ChainId(usize),
    #[error("seq must start at 1, got 0")]
    ZeroSeq,
    #[error("{field} must be {expected} bytes, got {actual}")]
    FieldLength {
        field: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("key_id must be 16 lowercase hex characters, got {0:?}")]
    KeyId(String),
}

/// A structurally valid envelope. Not yet verified: see [`crate::ChainVerifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEvent {
    pub chain_id: String,
    pub seq: u64,
    pub prev_hash: Hash,
    /// The `EventBody` bytes exactly as signed.
    pub body: Vec<u8>,
    /// The hash the envelope claims; [`SignedEvent::computed_hash`] is what counts.
    pub hash: Hash,
    pub key_id: String,
    pub signature: [u8; 64],
}

impl SignedEvent {
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        let raw = pb::Envelope::decode(bytes).map_err(|e| EnvelopeError::Decode(e.to_string()))?;
        Self::try_from(raw)
    }

    pub fn encode(&self) -> Vec<u8> {
        pb::Envelope::from(self.clone()).encode_to_vec()
    }

    /// The hash recomputed from the fields, the one the signature must cover.
    pub fn computed_hash(&self) -> Hash {
        event_hash(&self.chain_id, self.seq, &self.prev_hash, &self.body)
    }

    /// Decodes the body. The body bytes stay authoritative; this is only for reading fields.
    pub fn decode_body(&self) -> Result<pb::EventBody, EnvelopeError> {
        pb::EventBody::decode(self.body.as_slice())
            .map_err(|e| EnvelopeError::Decode(e.to_string()))
    }
}

impl TryFrom<pb::Envelope> for SignedEvent {
    type Error = EnvelopeError;

    fn try_from(raw: pb::Envelope) -> Result<Self, EnvelopeError> {
        if raw.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(raw.version));
        }
        if raw.chain_id.is_empty() || raw.chain_id.len() > MAX_CHAIN_ID_BYTES {
            return Err(EnvelopeError::ChainId(raw.chain_id.len()));
        }
        if raw.seq == 0 {
            return Err(EnvelopeError::ZeroSeq);
        }
        if !is_key_id(&raw.key_id) {
            return Err(EnvelopeError::KeyId(raw.key_id));
        }
        Ok(Self {
            prev_hash: fixed("prev_hash", &raw.prev_hash)?,
            hash: fixed("hash", &raw.hash)?,
            signature: fixed("signature", &raw.signature)?,
            chain_id: raw.chain_id,
            seq: raw.seq,
            body: raw.body,
            key_id: raw.key_id,
        })
    }
}

impl From<SignedEvent> for pb::Envelope {
    fn from(event: SignedEvent) -> Self {
        Self {
            version: ENVELOPE_VERSION,
            chain_id: event.chain_id,
            seq: event.seq,
            prev_hash: event.prev_hash.to_vec(),
            body: event.body,
            hash: event.hash.to_vec(),
            key_id: event.key_id,
            signature: event.signature.to_vec(),
        }
    }
}

fn fixed<const N: usize>(field: &'static str, bytes: &[u8]) -> Result<[u8; N], EnvelopeError> {
    bytes.try_into().map_err(|_| EnvelopeError::FieldLength {
        field,
        expected: N,
        actual: bytes.len(),
    })
}

fn is_key_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChainWriter, SecretKey};
    use proptest::prelude::*;

    fn sample() -> SignedEvent {
        let mut writer = ChainWriter::new("gw-test", SecretKey::from_seed(&[1; 32]));
        writer.append(b"body".to_vec())
    }

    #[test]
    fn round_trips() {
        let event = sample();
        assert_eq!(SignedEvent::decode(&event.encode()).unwrap(), event);
    }

    #[test]
    fn rejects_bad_fields_with_typed_errors() {
        let good = pb::Envelope::from(sample());
        let cases: Vec<(pb::Envelope, EnvelopeError)> = vec![
            (
                pb::Envelope {
                    version: 2,
                    ..good.clone()
                },
                EnvelopeError::Version(2),
            ),
            (
                pb::Envelope {
                    chain_id: String::new(),
                    ..good.clone()
                },
                EnvelopeError::ChainId(0),
            ),
            (
                pb::Envelope {
                    chain_id: "x".repeat(129),
                    ..good.clone()
                },
                EnvelopeError::ChainId(129),
            ),
            (
                pb::Envelope {
                    seq: 0,
                    ..good.clone()
                },
                EnvelopeError::ZeroSeq,
            ),
            (
                pb::Envelope {
                    signature: vec![0; 63],
                    ..good.clone()
                },
                EnvelopeError::FieldLength {
                    field: "signature",
                    expected: 64,
                    actual: 63,
                },
            ),
            (
                pb::Envelope {
                    prev_hash: vec![],
                    ..good.clone()
                },
                EnvelopeError::FieldLength {
                    field: "prev_hash",
                    expected: 32,
                    actual: 0,
                },
            ),
            (
                pb::Envelope {
                    key_id: "ABC".into(),
                    ..good.clone()
                },
                EnvelopeError::KeyId("ABC".into()),
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                SignedEvent::decode(&raw.encode_to_vec()).unwrap_err(),
                expected
            );
        }
    }

    #[test]
    fn rejects_oversized_truncated_and_non_utf8_input() {
        let big = vec![0u8; MAX_ENVELOPE_BYTES + 1];
        assert_eq!(
            SignedEvent::decode(&big).unwrap_err(),
            EnvelopeError::TooLarge(big.len())
        );
        let bytes = sample().encode();
        assert!(matches!(
            SignedEvent::decode(&bytes[..bytes.len() - 3]),
            Err(EnvelopeError::Decode(_))
        ));
        // Field 2 (chain_id, wire type 2) holding the invalid UTF-8 byte 0xff.
        assert!(matches!(
            SignedEvent::decode(&[0x12, 0x01, 0xff]),
            Err(EnvelopeError::Decode(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SignedEvent::decode(&bytes);
        }
    }
}
