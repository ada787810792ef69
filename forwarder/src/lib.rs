//! `verdict-forwarder`: the query service's `Follow` feed pushed to SIEM destinations, each
//! destination with its own cursor file, so one that was down gets everything it missed.
//!
//! A separate service rather than part of the query service: the query service stays read-only
//! and stateless, a slow or failing receiver cannot hold query resources beyond one follower,
//! and the forwarder can run next to the SIEM with only a query token.
//!
//! - `config`: TOML + `VERDICT_FORWARDER_*`; `destination`: one delivery loop per destination;
//! - `config_trail`: every change of the destinations signed into the forwarder's own chain
//!   (with the gateway's recorder) before anything is delivered;
//! - `metrics`: Prometheus metrics per destination on their own listener;
//! - `payload`: masking and each record's payload; `cef`: the CEF payload;
//! - `syslog`: RFC 5424 over TCP or TLS (octet-counted; `tls`: rustls, the destination's CA
//!   only); `webhook`: signed JSON or Splunk HEC batches
//!   with retries and a dead-letter file.

mod cef;
pub mod config;
mod config_trail;
mod destination;
pub mod metrics;
mod payload;
mod syslog;
mod tls;
mod webhook;

pub use config::{ConfigError, ForwarderConfig};
pub use config_trail::{record_changes, TrailError};
pub use destination::Feed;
pub use metrics::Metrics;

use tokio::sync::watch;

/// Runs every destination until `shutdown` resolves; each stops between two deliveries.
pub async fn run(
    config: ForwarderConfig,
    feed: Feed,
    metrics: &Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop_tx, stop) = watch::channel(false);
    let tasks: Vec<_> = config
        .destinations
        .into_iter()
        .map(|d| {
            let metrics = metrics.destination(&d.name);
            tokio::spawn(destination::run(d, feed.clone(), metrics, stop.clone()))
        })
        .collect();
    shutdown.await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
}
