//! The query service: compliance questions over the events and findings the auditor stored in
//! ClickHouse, served as `verdict.v1.AuditQuery` (tonic gRPC) with health, reflection and bearer
//! token auth.
//!
//! - `config`: TOML + `VERDICT_QUERY_*` settings;
//! - `auth`: query tokens (digests, constant-time comparison);
//! - `filter` and `paging`: request filters and cursors → bound SQL fragments;
//! - `store`: the ClickHouse reads, through the stored contract (`verdict-schema`); `summary`:
//!   Summarize from pre-aggregated hours; `api`: the RPCs;
//! - `export` and `ocsf`: export records (the JSON-lines check is shared with the offline
//!   `verdict verify --export`); `export_stream`: reading and encoding an export in two
//!   overlapping stages; `follow`, `follow_cursor`, `follow_store` and `follow_findings`: the live
//!   `Follow` stream of events and findings, and its cursors;
//! - `proofs`: the witness's signed heads and Merkle proofs against them;
//! - `replay` and `replay_stream`: `ReplayPolicy`, a draft policy re-deciding the recorded calls
//!   with the gateway's engine (`verdict-policy`), from verified envelopes; `replay_explain`: the
//!   policy in force for one call, found in the trail (its `PolicyLoaded` event);
//! - `metrics`: Prometheus `/metrics` and `/healthz`; [`serve`]: wiring it all together.
//!
//! It must not write to ClickHouse, splice a request value into SQL (every value is bound), or
//! answer with anything but trusted events: untrusted material is a finding, never an event.

mod api;
mod auth;
mod config;
pub mod export;
mod export_stream;
mod filter;
mod follow;
mod follow_cursor;
pub mod follow_file;
mod follow_findings;
mod follow_store;
mod metrics;
mod ocsf;
mod paging;
mod proofs;
mod replay;
mod replay_explain;
mod replay_stream;
mod server;
mod store;
mod summary;

pub use config::{ConfigError, QueryConfig};
pub use follow_findings::FindingRecord;
pub use ocsf::{finding_to_ocsf, to_ocsf};
pub use server::{serve, ServeError};
