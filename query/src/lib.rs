//! The query service: compliance questions over the events and findings the auditor stored in
//! ClickHouse, served as `verdict.v1.AuditQuery` (tonic gRPC) with health, reflection and bearer
//! token auth.
//!
//! - [`config`]: TOML + `VERDICT_QUERY_*` settings;
//! - [`auth`]: query tokens (digests, constant-time comparison);
//! - [`filter`] and [`paging`]: request filters and cursors → bound SQL fragments;
//! - [`store`]: the ClickHouse reads; [`summary`]: Summarize from pre-aggregated hours;
//!   [`service`]: the RPCs;
//! - [`export`] and [`ocsf`]: export records (shared with the offline `verdict verify --export`);
//!   [`export_stream`]: reading and encoding an export in two overlapping stages;
//! - [`metrics`]: Prometheus `/metrics` and `/healthz`; [`server`]: wiring it all together.

pub mod auth;
pub mod config;
pub mod export;
pub mod export_stream;
pub mod filter;
pub mod metrics;
pub mod ocsf;
pub mod paging;
pub mod server;
pub mod service;
pub mod store;
pub mod summary;

pub use config::QueryConfig;
