//! Query service configuration: a TOML file, then `VERDICT_QUERY_*` environment overrides
//! (`__` separates nesting, e.g. `VERDICT_QUERY_CLICKHOUSE__URL=http://ch:8123`).
//!
//! The same loader as every Verdict service (`verdict_service::config`). Unknown keys are errors, so a
//! misspelt setting is reported instead of silently ignored.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use verdict_proto::TrustedKey;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// gRPC listen address (`verdict.v1.AuditQuery`, health, reflection).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// HTTP address for `/metrics` (Prometheus text) and `/healthz`; off when absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub clickhouse: ClickHouseConfig,
    /// Bearer tokens of query clients (separate from the agents' API keys).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Public key files (PEM) whose signatures `VerifyChain` trusts, each a path or a table
    /// `{ path, chains }` scoping it to some chains — the auditor's shape and loader
    /// (`verdict_proto::trusted`), so both give a chain the same verdict.
    #[serde(default)]
    pub trusted_keys: Vec<TrustedKey>,
    /// Serve gRPC over TLS (`[tls]` cert, key, optional client_ca); plaintext when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub limits: Limits,
}

/// ClickHouse connection settings, the same as the auditor's (`[clickhouse]`: url, database, user,
/// password).
pub use verdict_schema::ClickHouseConfig;

/// A query client's token: `id` (who holds it; appears in logs) and `sha256` of the token.
pub use verdict_service::credentials::Credential as TokenConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (PEM): mutual TLS, on top
    /// of the bearer token.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest `Search` / `ListFindings` page.
    #[serde(default = "default_max_page_size")]
    pub max_page_size: u32,
    /// Largest `WhoTried` limit.
    #[serde(default = "default_max_whotried_limit")]
    pub max_whotried_limit: u32,
    /// Longest explicit time range a request may name; `Summarize` without a start counts
    /// this many days back from its end.
    #[serde(default = "default_max_range_days")]
    pub max_range_days: u32,
    /// Most values in one repeated filter field (agents, tools, ...).
    #[serde(default = "default_max_filter_values")]
    pub max_filter_values: usize,
    /// Seconds a request may run when the client sets no deadline (`grpc-timeout`); also the
    /// ClickHouse `max_execution_time` of each query.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// `Follow`: milliseconds between looks at the store when a follower is caught up.
    #[serde(default = "default_follow_poll_millis")]
    pub follow_poll_millis: u64,
    /// `Follow`: stored events a follower may be behind while its stream is full before it is
    /// disconnected (it resumes with its last cursor).
    #[serde(default = "default_follow_max_lag")]
    pub follow_max_lag: u64,
    /// `Follow`: seconds a hole in a chain is waited for (a late or out-of-order arrival) before
    /// it is passed as a real gap; counted from when the event after it was stored.
    #[serde(default = "default_follow_gap_grace_secs")]
    pub follow_gap_grace_secs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_page_size: default_max_page_size(),
            max_whotried_limit: default_max_whotried_limit(),
            max_range_days: default_max_range_days(),
            max_filter_values: default_max_filter_values(),
            request_timeout_secs: default_request_timeout(),
            follow_poll_millis: default_follow_poll_millis(),
            follow_max_lag: default_follow_max_lag(),
            follow_gap_grace_secs: default_follow_gap_grace_secs(),
        }
    }
}

fn default_listen() -> SocketAddr {
    ([127, 0, 0, 1], 8790).into()
}
fn default_max_page_size() -> u32 {
    1000
}
fn default_max_whotried_limit() -> u32 {
    10_000
}
fn default_max_range_days() -> u32 {
    400
}
fn default_max_filter_values() -> usize {
    100
}
fn default_request_timeout() -> u64 {
    60
}
fn default_follow_poll_millis() -> u64 {
    200
}
fn default_follow_max_lag() -> u64 {
    100_000
}
fn default_follow_gap_grace_secs() -> u32 {
    60
}

pub use verdict_service::config::ConfigError;

impl QueryConfig {
    /// Loads `path` (if given) and applies `VERDICT_QUERY_*` overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        // Not settings: the binary's --config and the CLI's client variables.
        verdict_service::config::load(
            "query service",
            path,
            "VERDICT_QUERY_",
            &["config", "url", "token"],
        )
    }
}
