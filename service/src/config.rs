//! The one config loader: a TOML file, then environment overrides.
//!
//! `VERDICT_<SERVICE>_<KEY>` overrides `<key>`; `__` separates nesting levels
//! (`VERDICT_QUERY_CLICKHOUSE__URL`). Services reject unknown keys (`deny_unknown_fields`), so a
//! misspelt setting is an error that names it rather than a silently ignored line.

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("invalid {service} configuration: {source}")]
pub struct ConfigError {
    service: &'static str,
    source: Box<figment::Error>,
}

/// Loads `path` (if given) and applies the environment variables named `prefix` + KEY, except
/// those in `not_settings` (variables of the same prefix that are not settings, such as the
/// binary's own `--config`).
pub fn load<T: DeserializeOwned>(
    service: &'static str,
    path: Option<&Path>,
    prefix: &str,
    not_settings: &[&str],
) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment
        .merge(Env::prefixed(prefix).ignore(not_settings).split("__"))
        .extract()
        .map_err(|e| ConfigError {
            service,
            source: Box::new(e),
        })
}
