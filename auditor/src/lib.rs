//! The auditor: the independent witness between Kafka and ClickHouse.
//!
//! The data flow, one module per stage: the main loop (`main_loop`) reads the audit topic as a
//! consumer group (`consumer`), verifies every event with the shared
//! [`verdict_proto::ChainVerifier`] (`pipeline`), tells redeliveries from replays and forks
//! against stored rows (`resolve`), raises findings about tool pinning (`tool_findings`), stores events, findings and chain heads (`store`, `heads`)
//! through the stored contract (`verdict-schema`), finishes the batch being stored before its
//! partitions move to another auditor (`in_flight`), reports on itself ([`Metrics`]), and notices
//! when it has stopped reading (`watchdog`). Fault tests steer a batch's store (`fault`). As the witness (`witness`), it signs the heads it
//! verified with a key of its own and publishes them (`publish`).
//!
//! It must not: commit an offset before the rows it covers are stored; drop a message (garbage is
//! a `malformed` finding with the raw bytes); store untrusted material as an event or write a
//! different envelope over a stored event; implement its own verification rules (the verifier
//! lives in `verdict-proto`, shared with the query service and the CLI); or define tables and
//! rows itself (they are `verdict-schema`'s, which the query service reads).

mod config;
mod consumer;
mod fault;
mod fleet;
mod heads;
mod in_flight;
mod main_loop;
mod metrics;
mod pipeline;
mod publish;
mod resolve;
mod store;
mod tool_findings;
mod watchdog;
mod witness;

pub use config::{AuditorConfig, ConfigError};
pub use fault::Faults;
pub use main_loop::{Auditor, AuditorError};
pub use metrics::Metrics;

/// Lowercase hex SHA-256, as stored in `evidence_sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
