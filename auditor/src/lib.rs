//! The auditor: the independent witness between Kafka and ClickHouse.
//!
//! It owns reading the audit topic as a consumer group ([`consumer`]), verifying every event with
//! the shared [`verdict_proto::ChainVerifier`] ([`pipeline`]), telling redeliveries from replays
//! and forks against stored rows ([`resolve`]), storing events, findings and chain heads
//! ([`store`], [`heads`]), reporting on itself ([`metrics`]), and noticing when it has stopped
//! reading ([`watchdog`]).
//!
//! It must not: commit an offset before the rows it covers are stored; drop a message (garbage is
//! a `malformed` finding with the raw bytes); write a different envelope over a stored trusted
//! event; implement its own verification rules (the verifier lives in `verdict-proto`, shared
//! with the query service and the CLI); or change the table definitions in [`schema`] and
//! [`rows`], which the query service reads.

pub mod config;
pub mod consumer;
pub mod heads;
pub mod metrics;
pub mod pipeline;
pub mod resolve;
pub mod rows;
pub mod schema;
pub mod service;
pub mod store;
pub mod watchdog;

pub use config::AuditorConfig;
pub use metrics::Metrics;
pub use service::{Auditor, AuditorError};

/// Lowercase hex SHA-256, as stored in `evidence_sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
