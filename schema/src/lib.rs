//! The stored contract: what the auditor writes to ClickHouse and the query service reads.
//!
//! This crate owns the tables and their versioned migrations ([`migrations`], applied by
//! [`migrate`]), the row types and the one mapping from a signed event to its `events` row
//! ([`rows`]), and the client settings ([`ClickHouseConfig`]). The auditor writes through it, the
//! query service reads through it, and neither reaches into the other: a column is defined here
//! once, for both.
//!
//! It must not verify events (the verifier lives in `verdict-proto`), read Kafka, or hold any
//! query logic: which rows a question needs is the query service's business.

mod cluster;
mod config;
pub mod migrations;
pub mod rows;

pub use cluster::{Cluster, ClusterError};
pub use config::ClickHouseConfig;
pub use migrations::{migrate, migrate_cluster, migrate_up_to, MigrationError, MERKLE_CHUNK};
pub use rows::{
    ChainHeadRow, ChunkRow, EventRow, FindingRow, SourcePosition, WitnessedHeadRow, KEY_ROTATION,
    POLICY_LOADED,
};
