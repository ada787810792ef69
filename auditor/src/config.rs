//! Auditor configuration: a TOML file, then `VERDICT_AUDITOR_*` environment overrides (`__`
//! separates nesting, e.g. `VERDICT_AUDITOR_KAFKA__BROKERS=127.0.0.1:9092`).
//!
//! Unknown keys are errors, so a misspelt setting is reported instead of silently ignored. The
//! trusted keys are loaded here too (with the one loader every verifier uses), once, so a weak or unreadable key stops the auditor at start
//! instead of turning every event into a finding.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use verdict_proto::{SecretKey, TrustError, TrustedKey, TrustedKeys};
use verdict_schema::ClickHouseConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditorConfig {
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub clickhouse: ClickHouseConfig,
    /// Public key files (`verdict.pub`, SPKI PEM), each optionally restricted to some chains
    /// (see `verdict_proto::trusted`).
    #[serde(default)]
    pub trusted_keys: Vec<TrustedKey>,
    /// A directory whose `*.pub` and `*.pem` files are all trusted for every chain.
    #[serde(default)]
    pub trusted_keys_dir: Option<PathBuf>,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Address of the HTTP server for `/metrics` (Prometheus) and `/healthz`; none if unset.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds of slack after a chain's promised checkpoint interval before a `silent_chain`
    /// finding is stored.
    #[serde(default = "default_grace")]
    pub checkpoint_grace_secs: u64,
    /// The witness key that signs verified chain heads (see the `witness` module); without it
    /// heads are verified but not witnessed.
    #[serde(default)]
    pub witness: Option<WitnessConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness's private key (PKCS#8 PEM, e.g. `verdict keygen --out DIR` → `DIR/verdict.key`).
    /// It must not be a gateway key: a head signed by a gateway's own key witnesses nothing.
    pub key: PathBuf,
    /// Longest time between two signed heads of a growing chain (every verified gateway
    /// checkpoint is also witnessed).
    #[serde(default = "default_witness_every")]
    pub every_secs: u64,
    /// Topic the signed heads are published on; `<kafka.topic>.witness` when unset. Created at
    /// start (one partition) when missing.
    #[serde(default)]
    pub topic: Option<String>,
    /// Replication factor of the witness topic when the auditor creates it.
    #[serde(default = "default_witness_replication")]
    pub replication: i32,
    /// The witness key `key` replaces: the first head of each chain after start is then signed
    /// by it and hands the witness role to `key` (`next_witness_key`). Remove it once handed over.
    #[serde(default)]
    pub previous_key: Option<PathBuf>,
}

fn default_witness_replication() -> i32 {
    1
}

impl WitnessConfig {
    pub fn topic(&self, events_topic: &str) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("{events_topic}.witness"))
    }
}

fn default_witness_every() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Consumer group; every auditor of one deployment shares it.
    #[serde(default = "default_group")]
    pub group: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most messages verified and stored together.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Longest wait for a batch to fill before it is processed anyway.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: default_max_events(),
            max_wait_ms: default_max_wait_ms(),
        }
    }
}

impl BatchConfig {
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }
}

fn default_topic() -> String {
    "verdict.events".into()
}
fn default_group() -> String {
    "verdict-auditor".into()
}
fn default_max_events() -> usize {
    5000
}
fn default_max_wait_ms() -> u64 {
    200
}
fn default_grace() -> u64 {
    30
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Parse(#[from] verdict_service::config::ConfigError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("no trusted keys configured: every event would be a finding")]
    NoKeys,
    #[error("batch.max_events must be at least 1")]
    EmptyBatch,
    #[error("witness key: {0}")]
    WitnessKey(#[from] verdict_proto::KeyError),
    #[error("the witness key {0} is also a trusted gateway key; give the witness a key of its own (`verdict keygen --out DIR`)")]
    WitnessIsGateway(String),
}

impl AuditorConfig {
    /// Loads `path` (if given) and applies `VERDICT_AUDITOR_*` overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        // Read by the binary itself, not settings.
        let not_settings = ["config", "fault"];
        let config: Self =
            verdict_service::config::load("auditor", path, "VERDICT_AUDITOR_", &not_settings)?;
        if config.batch.max_events == 0 {
            return Err(ConfigError::EmptyBatch);
        }
        Ok(config)
    }

    /// Reads every configured key file (each checked for weakness when parsed).
    pub fn trusted_keys(&self) -> Result<TrustedKeys, ConfigError> {
        let keys = TrustedKeys::load(&self.trusted_keys, self.trusted_keys_dir.as_deref())?;
        if keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        Ok(keys)
    }

    /// The witness key, if configured; refused when a gateway key is trusted under the same id.
    /// The witness key and the one it replaces, if any; neither may be a trusted gateway key.
    pub fn witness_keys(
        &self,
        keys: &TrustedKeys,
    ) -> Result<Option<(SecretKey, Option<SecretKey>)>, ConfigError> {
        let Some(witness) = &self.witness else {
            return Ok(None);
        };
        let read = |path: &PathBuf| -> Result<SecretKey, ConfigError> {
            let key = SecretKey::read_pem_file(path)?;
            match keys.contains(key.public().key_id()) {
                true => Err(ConfigError::WitnessIsGateway(key.public().key_id().into())),
                false => Ok(key),
            }
        };
        let previous = witness.previous_key.as_ref().map(read).transpose()?;
        Ok(Some((read(&witness.key)?, previous)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_proto::keys::write_keypair;
    use verdict_proto::SecretKey;

    #[test]
    fn loads_defaults_and_keys_from_a_file_and_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (_, one) =
            write_keypair(&dir.path().join("one"), &SecretKey::generate(), false).unwrap();
        let (_, _) =
            write_keypair(&dir.path().join("many"), &SecretKey::generate(), false).unwrap();
        let file = dir.path().join("auditor.toml");
        std::fs::write(
            &file,
            format!(
                "trusted_keys_dir = {:?}\n[kafka]\nbrokers = \"127.0.0.1:1\"\n\
                 [[trusted_keys]]\npath = {:?}\nchains = [\"gw-1\"]\n",
                dir.path().join("many"),
                one
            ),
        )
        .unwrap();
        let config = AuditorConfig::load(Some(&file)).unwrap();
        assert_eq!(config.kafka.topic, "verdict.events");
        assert_eq!(config.kafka.group, "verdict-auditor");
        assert_eq!(config.batch.max_events, 5000);
        assert_eq!(config.clickhouse.database, "default");
        assert_eq!(config.trusted_keys().unwrap().len(), 2);
    }

    #[test]
    fn rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auditor.toml");
        std::fs::write(&file, "[kafka]\nbrokers = \"x\"\nbrokerz = \"y\"\n").unwrap();
        let error = AuditorConfig::load(Some(&file)).unwrap_err().to_string();
        assert!(error.contains("brokerz"), "{error}");
    }
}
