//! `verdict-forwarder` settings: where the feed comes from, where each destination's cursor is
//! kept, and the destinations. TOML plus `VERDICT_FORWARDER_*` overrides (one loader for every
//! service); the query token only from the environment, so it is never in a file or a log.
//! `[audit]` is the gateway's own section (key, journal, Kafka): the forwarder records its
//! destination changes in a chain of its own with the gateway's recorder (see `config_trail`).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use verdict_gateway::config::AuditConfig;

pub use verdict_service::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderConfig {
    /// The query service's gRPC URL.
    pub query_url: String,
    /// Directory of the per-destination cursor files (`<name>.cursor`).
    pub state_dir: PathBuf,
    /// HTTP address for `/metrics` (Prometheus text, per destination) and `/healthz`; off when
    /// absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    pub destinations: Vec<Destination>,
    /// The forwarder's own chain, where every change of `destinations` is recorded: the
    /// gateway's `[audit]` settings (signing key, journal, `[audit.kafka]`). Relative paths
    /// resolve against the config file's directory; without `[audit.kafka]` the journal alone is
    /// the record.
    #[serde(default)]
    pub audit: AuditConfig,
}

/// One place the feed is pushed to, with its own cursor.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Names the cursor and dead-letter files and the logs; unique.
    pub name: String,
    pub kind: Kind,
    /// `host:port` (syslog) or the URL (webhook).
    pub address: String,
    #[serde(default)]
    pub payload: Payload,
    /// Argument key words masked on the way out, beyond the gateway's default ones (the same
    /// rule: a key containing one, ignoring case and `_ - .`).
    #[serde(default)]
    pub redact_keys: Vec<String>,
    /// What the destination gets: events, the auditor's integrity findings, or both.
    #[serde(default)]
    pub items: Items,
    /// Syslog over TLS (RFC 5425) instead of plain TCP; syslog only (a webhook's TLS is its
    /// `https://` address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SyslogTls>,
    /// Webhook body framing.
    #[serde(default)]
    pub framing: Framing,
    /// Webhook: the environment variable that holds the HMAC-SHA256 key (and, for Splunk HEC,
    /// the HEC token); the key itself is never in a file or a log.
    #[serde(default)]
    pub secret_env: String,
    /// Events per delivery at most.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Webhook: attempts per batch before it goes to the dead-letter file.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Webhook: the first retry's delay; each retry doubles it.
    #[serde(default = "default_retry_initial_millis")]
    pub retry_initial_millis: u64,
}

/// The receiver's authentication for syslog over TLS.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogTls {
    /// PEM file of the CA certificate(s) that sign the receiver's certificate; only these are
    /// trusted (not the system's roots). Relative: against the config file's directory.
    pub ca: PathBuf,
    /// The name the receiver's certificate must be issued for (DNS name or IP address).
    pub server_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// RFC 5424 messages over TCP, octet-counted (RFC 6587).
    Syslog,
    /// HTTP POST of JSON batches, signed with HMAC-SHA256.
    Webhook,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// ArcSight CEF, one line per event (README "Forwarder"); syslog only.
    #[default]
    Cef,
    /// The export record (JSON, with its envelope).
    Json,
    /// The OCSF 1.4.0 object of Export.
    Ocsf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Items {
    Events,
    Findings,
    /// Events and findings (a SIEM wants to hear of a forgery first).
    #[default]
    All,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// `{"events": [{"id": "chain:seq", "event": {...}}, ...]}`.
    #[default]
    Json,
    /// Splunk HTTP Event Collector: one `{"time", "source", "sourcetype", "event"}` object per
    /// event, concatenated, with `Authorization: Splunk <secret>`.
    SplunkHec,
}

fn default_batch_size() -> usize {
    100
}
fn default_max_attempts() -> u32 {
    5
}
fn default_retry_initial_millis() -> u64 {
    200
}

impl ForwarderConfig {
    /// Loads `path` (if given) and applies `VERDICT_FORWARDER_*` overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config: Self = verdict_service::config::load(
            "forwarder",
            path,
            "VERDICT_FORWARDER_",
            &["config", "query_token"],
        )?;
        let base = path.and_then(Path::parent).unwrap_or(Path::new(""));
        config.audit.resolve_against(base);
        for tls in config
            .destinations
            .iter_mut()
            .filter_map(|d| d.tls.as_mut())
        {
            tls.ca = base.join(&tls.ca);
        }
        Ok(config)
    }
}
