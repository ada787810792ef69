//! Gateway configuration: a TOML file, then `VERDICT_GATEWAY_*` environment overrides
//! (`__` separates nesting, e.g. `VERDICT_GATEWAY_LISTEN=127.0.0.1:9000`).
//!
//! Unknown keys are errors, so a misspelt setting is reported instead of silently ignored.

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address of the Streamable HTTP endpoint (`/mcp`) and `/healthz`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
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
    pub agents: Vec<AgentConfig>,
    /// Upstream MCP servers by name. Names appear in events and prefix colliding tool names.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: String,
    /// Lowercase hex SHA-256 of the agent's API key; the key itself is never stored.
    pub api_key_sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, untagged)]
pub enum UpstreamConfig {
    /// A Streamable HTTP MCP endpoint.
    Http {
        url: String,
        /// Extra headers sent upstream, e.g. the upstream's own Authorization.
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    /// A command the gateway launches and speaks to over stdio (restarted if it dies).
    Stdio {
        command: PathBuf,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
}

fn default_listen() -> SocketAddr {
    ([127, 0, 0, 1], 8780).into()
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

#[derive(Debug, thiserror::Error)]
#[error("invalid gateway configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl GatewayConfig {
    /// Loads `path` (if given) and applies `VERDICT_GATEWAY_*` overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            .merge(Env::prefixed("VERDICT_GATEWAY_").split("__"))
            .extract()
            .map_err(|e| ConfigError(Box::new(e)))
    }
}
