//! Gateway configuration: a TOML file, then `VERDICT_GATEWAY_*` environment overrides
//! (`__` separates nesting, e.g. `VERDICT_GATEWAY_LISTEN=127.0.0.1:9000`).
//!
//! Unknown keys are errors, so a misspelt setting is reported instead of silently ignored.
//! Relative paths in the file (policy, journal, key, an upstream's `command` and `cwd`) resolve
//! against the file's directory, so a config works the same from any working directory (a desktop
//! client launches the gateway from its own).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address of the Streamable HTTP endpoint (`/mcp`) and `/healthz`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address for Prometheus `/metrics` and `/healthz`, for operators (not agents); off when
    /// unset.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Timeouts and the connection limit of the `listen` endpoint.
    #[serde(default)]
    pub http: HttpConfig,
    /// Largest request body accepted, in bytes (larger: HTTP 413).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Tools per downstream `tools/list` page.
    #[serde(default = "default_page_size")]
    pub tools_page_size: usize,
    /// Seconds an idle handshake-era session lives.
    #[serde(default = "default_session_idle")]
    pub session_idle_secs: u64,
    /// Live handshake-era sessions one agent may hold; an `initialize` past it gets HTTP 429.
    #[serde(default = "default_max_sessions")]
    pub max_sessions_per_agent: usize,
    /// Seconds a forwarded tool call may take before it is cancelled upstream and answered with
    /// an error.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_secs: u64,
    /// The policy file (`policy.json`); reloaded on change and on SIGHUP. Without one, every
    /// call is allowed and recorded with rule `no-policy`.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Agents and their API keys.
    #[serde(default)]
    pub agents: Vec<Credential>,
    /// Upstream MCP servers by name. Names appear in events and prefix colliding tool names.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// The audit trail: signing key, journal, shipping to Kafka.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The admin gRPC API (approvals).
    #[serde(default)]
    pub admin: AdminConfig,
    /// URL that gets a Slack-compatible JSON message when a call is held for approval and again
    /// when it is decided (README "Approvals"); off when unset.
    #[serde(default)]
    pub approval_webhook: Option<String>,
}

/// What the HTTP listener allows a connection, so that slow or stalled clients cannot hold it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds to send a whole request header; also how long a kept-alive connection may sit
    /// idle between requests. Closed past it.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds to send a whole request body (HTTP 408 past it).
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_secs: u64,
    /// Connections served at once; further ones wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        // Same defaults as an empty `[http]` table.
        serde_json::from_value(serde_json::json!({})).expect("http defaults")
    }
}

impl HttpConfig {
    pub fn limits(&self) -> crate::downstream::http::Limits {
        crate::downstream::http::Limits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
        }
    }
}

/// The admin API, off unless `listen` is set. Tokens are separate from agents' keys: an agent can
/// never approve its own call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the `verdict.v1.GatewayAdmin` gRPC service.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Approvers: their id (recorded as the approver) and the SHA-256 of their bearer token.
    #[serde(default)]
    pub tokens: Vec<Credential>,
}

/// Where decisions are recorded. Relative paths resolve against the config file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of journal segments (and the shipper's acknowledged mark).
    #[serde(default = "default_journal_dir")]
    pub journal_dir: PathBuf,
    /// Private signing key (PKCS#8 PEM, `verdict keygen`). Created with its public key beside it,
    /// mode 0600, when the file does not exist.
    #[serde(default = "default_key")]
    pub key: PathBuf,
    /// The key that signed the chain before `key` (key rotation): at start, when the chain's last
    /// event is signed by it, the gateway appends a `KeyRotation` signed by it that hands the
    /// chain to `key`. Remove it again after that start.
    #[serde(default)]
    pub previous_key: Option<PathBuf>,
    /// This gateway's chain; default `<host name>-<key id>`. Must stay stable across restarts.
    #[serde(default)]
    pub chain_id: Option<String>,
    /// `batch`: appends reach the OS before the call proceeds, fsync at most `fsync_window_ms`
    /// later; `always`: fsync before the call proceeds.
    #[serde(default)]
    pub fsync: FsyncMode,
    #[serde(default = "default_fsync_window")]
    pub fsync_window_ms: u64,
    /// A segment file rolls over past this size.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Delete segments the broker fully acknowledged this many seconds after their last write;
    /// unset keeps every segment.
    #[serde(default)]
    pub retention_secs: Option<u64>,
    /// A signed checkpoint of the chain head is appended at least this often, even when idle.
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_secs: u32,
    /// Refusals of unauthenticated requests are journaled as one aggregate event (counts per
    /// source and reason) this often, never one event per request.
    #[serde(default = "default_refusal_interval")]
    pub refusal_interval_secs: u64,
    /// Refusals one source address may cause per interval; past it, HTTP 429 and the connection
    /// is closed.
    #[serde(default = "default_refusals_per_source")]
    pub refusals_per_source: u64,
    /// Free space on the journal's disk kept for decisions: below it, refusals of strangers are
    /// only counted in memory.
    #[serde(default = "default_min_free")]
    pub min_free_bytes: u64,
    /// Below this much free space, the log warns, `/healthz` says degraded and
    /// `verdict_gateway_journal_space` rises.
    #[serde(default = "default_alarm_free")]
    pub alarm_free_bytes: u64,
    /// How arguments are stored in events: `redacted` (the default), `full` or `hash`.
    #[serde(default)]
    pub redaction: RedactionMode,
    /// Words that mark an argument key as secret for `redacted`: a key (any depth) whose name,
    /// lowercased and without `_`, `-`, `.`, contains one of them has its value replaced.
    #[serde(default = "default_sensitive_keys")]
    pub sensitive_keys: Vec<String>,
    /// Per tool, the argument names recorded as targets; tools not listed use arguments named
    /// like `*_id`, `id`, `session*`, `name`, `path`.
    #[serde(default)]
    pub targets: BTreeMap<String, Vec<String>>,
    /// Ship the journal to Kafka; without it the journal alone is the audit trail.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// Read the auditor's witnessed heads of this chain back from Kafka and alarm when one
    /// differs from the journal (see `audit::witness_watch`); needs `[audit.kafka]`.
    #[serde(default)]
    pub witness: Option<WitnessWatchConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessWatchConfig {
    /// The witness's public key files (`verdict.pub` of its `verdict keygen`).
    pub keys: Vec<PathBuf>,
    /// The topic the auditor publishes heads on; default `<kafka.topic>.witness`.
    #[serde(default)]
    pub topic: Option<String>,
    /// Witness keys revoked from a time on: key id → RFC 3339 time. Heads such a key signed
    /// from then on are rejected, and hand nothing over.
    #[serde(default)]
    pub revoked: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    #[default]
    Batch,
    Always,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactionMode {
    Full,
    #[default]
    Redacted,
    Hash,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`
    pub brokers: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Extra librdkafka producer properties (e.g. `security.protocol`); idempotence and
    /// `acks=all` cannot be turned off.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Create the topic at start when it does not exist (through the Kafka admin API).
    #[serde(default = "default_true")]
    pub create_topic: bool,
    /// Partitions of a topic the gateway creates (one chain always stays in one partition).
    #[serde(default = "default_topic_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of a topic the gateway creates.
    #[serde(default = "default_topic_replication")]
    pub topic_replication: i32,
}

impl AuditConfig {
    /// Resolves the relative paths (journal, keys, witness keys) against `base`, the config
    /// file's directory.
    pub fn resolve_against(&mut self, base: &Path) {
        for relative in [
            Some(&mut self.journal_dir),
            Some(&mut self.key),
            self.previous_key.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            *relative = base.join(&*relative);
        }
        if let Some(witness) = &mut self.witness {
            witness
                .keys
                .iter_mut()
                .for_each(|key| *key = base.join(&*key));
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        // Same defaults as an empty `[audit]` table.
        serde_json::from_value(serde_json::json!({})).expect("audit defaults")
    }
}

pub use verdict_service::credentials::Credential;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, untagged)]
pub enum UpstreamConfig {
    /// A Streamable HTTP MCP endpoint.
    Http {
        url: String,
        /// Extra headers sent upstream, e.g. the upstream's own Authorization.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        failure_text_prefixes: Vec<String>,
    },
    /// A command the gateway launches and speaks to over stdio (restarted if it dies).
    Stdio {
        /// A bare name (`node`) is looked up on `PATH`; a path with a directory in it
        /// (`bin/server`) resolves against the config file's directory.
        command: PathBuf,
        #[serde(default)]
        args: Vec<String>,
        /// Added to the gateway's own environment.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// The child's working directory (relative: against the config file's directory);
        /// default the gateway's.
        #[serde(default)]
        cwd: Option<PathBuf>,
        #[serde(default)]
        failure_text_prefixes: Vec<String>,
    },
}

impl UpstreamConfig {
    /// Result texts that mean the call failed, for servers that report failures as plain text
    /// instead of `isError` (the Work Memory server starts them with `❌`): a result whose first
    /// text starts with one of them (after leading whitespace) is recorded as `tool_error`.
    pub fn failure_text_prefixes(&self) -> &[String] {
        match self {
            UpstreamConfig::Http {
                failure_text_prefixes,
                ..
            }
            | UpstreamConfig::Stdio {
                failure_text_prefixes,
                ..
            } => failure_text_prefixes,
        }
    }

    /// Resolves a relative `command` (one with a directory part) and `cwd` against `base`.
    fn resolve_against(&mut self, base: &Path) {
        if let UpstreamConfig::Stdio { command, cwd, .. } = self {
            if command.is_relative() && command.components().count() > 1 {
                *command = base.join(&*command);
            }
            if let Some(cwd) = cwd {
                *cwd = base.join(&*cwd);
            }
        }
    }
}

fn default_listen() -> SocketAddr {
    ([127, 0, 0, 1], 8780).into()
}
fn default_header_read_timeout() -> u64 {
    10
}
fn default_body_read_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_body() -> usize {
    4 << 20
}
fn default_page_size() -> usize {
    100
}
fn default_session_idle() -> u64 {
    3600
}
fn default_max_sessions() -> usize {
    256
}
fn default_call_timeout() -> u64 {
    600
}
fn default_journal_dir() -> PathBuf {
    "journal".into()
}
fn default_key() -> PathBuf {
    "keys/verdict.key".into()
}
fn default_fsync_window() -> u64 {
    5
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_checkpoint_secs() -> u32 {
    60
}
fn default_refusal_interval() -> u64 {
    60
}
fn default_refusals_per_source() -> u64 {
    1000
}
fn default_min_free() -> u64 {
    256 << 20
}
fn default_alarm_free() -> u64 {
    1 << 30
}
fn default_true() -> bool {
    true
}
fn default_topic_partitions() -> i32 {
    3
}
fn default_topic_replication() -> i32 {
    1
}
fn default_topic() -> String {
    "verdict.events".into()
}
fn default_sensitive_keys() -> Vec<String> {
    verdict_service::redact::DEFAULT_SENSITIVE_KEYS
        .iter()
        .map(|&k| k.to_owned())
        .collect()
}

pub use verdict_service::config::ConfigError;

impl GatewayConfig {
    /// Loads `path` (if given) and applies `VERDICT_GATEWAY_*` overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config: Self =
            verdict_service::config::load("gateway", path, "VERDICT_GATEWAY_", &["config"])?;
        let base = path
            .and_then(Path::parent)
            .map(Path::to_owned)
            .unwrap_or_default();
        if let Some(policy) = &mut config.policy {
            *policy = base.join(&*policy);
        }
        config.audit.resolve_against(&base);
        for upstream in config.upstreams.values_mut() {
            upstream.resolve_against(&base);
        }
        Ok(config)
    }
}
