//! `verdict-forwarder` settings: where the feed comes from, where each destination's cursor is
//! kept, and the destinations. TOML plus `VERDICT_FORWARDER_*` overrides (one loader for every
//! service); the query token only from the environment, so it is never in a file or a log.

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub use verdict_service::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderConfig {
    /// The query service's gRPC URL.
    pub query_url: String,
    /// Directory of the per-destination cursor files (`<name>.cursor`).
    pub state_dir: PathBuf,
    pub destinations: Vec<Destination>,
}

/// One place the feed is pushed to, with its own cursor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Names the cursor file and the logs; unique.
    pub name: String,
    pub kind: Kind,
    /// `host:port` of the receiver.
    pub address: String,
    #[serde(default)]
    pub payload: Payload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// RFC 5424 messages over TCP, octet-counted (RFC 6587).
    Syslog,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// ArcSight CEF, one line per event (README "Forwarder").
    #[default]
    Cef,
    /// The OCSF 1.4.0 object of Export.
    Ocsf,
}

impl ForwarderConfig {
    /// Loads `path` (if given) and applies `VERDICT_FORWARDER_*` overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        verdict_service::config::load(
            "forwarder",
            path,
            "VERDICT_FORWARDER_",
            &["config", "query_token"],
        )
    }
}
