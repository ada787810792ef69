//! `verdict-forwarder`: pushes the audit feed to SIEM destinations.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use verdict_forwarder::{Feed, ForwarderConfig, Metrics};
use verdict_gateway::audit::{Audit, Shipping};
use verdict_service::process::{init_tracing, shutdown_signal};

/// Verdict forwarder: follows the query service's feed (`Follow`) and pushes every event to
/// each configured destination, with one cursor file per destination in `state_dir`.
///
/// The query token comes from VERDICT_FORWARDER_QUERY_TOKEN only (never a file or a log).
///
/// Settings (TOML; each overridable as VERDICT_FORWARDER_<KEY>):
///   query_url = "http://127.0.0.1:8790"
///   state_dir = "/var/lib/verdict-forwarder"
///   metrics_listen = "127.0.0.1:9793"   # /metrics and /healthz (off when absent)
///   [[destinations]]
///   name = "soc-syslog"
///   kind = "syslog"                 # RFC 5424 over TCP, octet-counted
///   address = "127.0.0.1:6514"
///   payload = "cef"                 # cef | json | ocsf
///   items = "all"                   # events | findings | all
///   redact_keys = ["email"]         # masked on the way out, beyond the gateway's words
///   [audit]                         # the forwarder's own chain: every change of the
///   key = "keys/verdict.key"        # destinations is signed into it at start (the gateway's
///   journal_dir = "journal"         # [audit] settings, [audit.kafka] to ship it to the auditor)
///   chain_id = "forwarder-1"
#[derive(Parser)]
#[command(name = "verdict-forwarder", version, verbatim_doc_comment)]
struct Args {
    /// TOML config file (see README "Forwarder").
    #[arg(long, env = "VERDICT_FORWARDER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    let config = ForwarderConfig::load(args.config.as_deref())?;
    let token = std::env::var("VERDICT_FORWARDER_QUERY_TOKEN")
        .context("set VERDICT_FORWARDER_QUERY_TOKEN to a query service token")?;
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    anyhow::ensure!(
        config.audit.witness.is_none(),
        "[audit.witness] is a gateway setting; the forwarder does not read witnessed heads"
    );
    let audit =
        Audit::open(&config.audit, "forwarder").context("opening the forwarder's audit trail")?;
    let recorder = audit.recorder;
    recorder.spawn_timers();
    let shipping =
        Shipping::start(&config.audit, &recorder).context("creating the Kafka producer")?;
    let recorded =
        verdict_forwarder::record_changes(&config.destinations, &config.state_dir, &recorder)
            .await
            .context("recording the destination changes (nothing was delivered)")?;
    tracing::info!(
        chain_id = recorder.chain_id(),
        recorded,
        "destination changes recorded"
    );
    let feed = Feed {
        query_url: config.query_url.clone(),
        authorization: format!("Bearer {token}"),
        state_dir: config.state_dir.clone(),
    };
    tracing::info!(
        destinations = config.destinations.len(),
        "forwarder starting"
    );
    let metrics = Arc::new(Metrics::new());
    if let Some(address) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the metrics listener {address}"))?;
        tracing::info!(address = %listener.local_addr()?, "metrics listening");
        let app = verdict_forwarder::metrics::router(Arc::clone(&metrics));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    verdict_forwarder::run(config, feed, &metrics, shutdown_signal()).await;
    recorder.shutdown().await;
    shipping.finish().await;
    tracing::info!("forwarder stopped");
    Ok(())
}
