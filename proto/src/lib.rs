//! The Verdict contract, shared by the gateway, the auditor, the query service and any
//! third-party verifier.
//!
//! This crate owns:
//! - the protobuf messages and gRPC services generated from `proto/verdict/v1/*.proto` ([`pb`]),
//!   and the one name table of their enumerations ([`Label`]);
//! - the event hash layout ([`hash`]) and Ed25519 key handling and key files ([`keys`]);
//! - decoding shipped envelopes into checked values ([`envelope`]);
//! - which keys are trusted for which chains ([`TrustedKeys`], one loader for every verifier);
//! - appending to a chain ([`ChainWriter`]) and verifying one ([`ChainVerifier`]);
//! - the Merkle tree over a chain and its inclusion and consistency proofs ([`merkle`]);
//! - the auditor's witnessed heads: signing, checking, their file form ([`witness`]).
//!
//! It must not do I/O beyond reading and writing key files, and it never re-encodes a received
//! body: the bytes that were signed are the bytes that are verified.

pub mod chain;
pub mod clock;
pub mod envelope;
pub mod hash;
pub mod keys;
pub mod merkle;
pub mod names;
pub mod trusted;
pub mod verify;
pub mod witness;

pub use chain::ChainWriter;
pub use clock::now_unix_nanos;
pub use envelope::{EnvelopeError, SignedEvent};
pub use hash::{event_hash, Hash, ZERO_HASH};
pub use keys::{KeyError, PublicKey, SecretKey};
pub use names::Label;
pub use trusted::{TrustError, TrustedKey, TrustedKeys};
pub use verify::{BreakKind, ChainVerifier, Finding, Verdict};

/// Generated protobuf messages and gRPC services of package `verdict.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/verdict.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every Verdict proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/verdict_descriptor.bin"));
