//! `verdict-auditor`: verifies the audit topic and stores events and findings in ClickHouse.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;
use verdict_auditor::{Auditor, AuditorConfig, Faults, Metrics};
use verdict_service::process::{init_tracing, shutdown_signal};

/// Verdict auditor: consumes the audit topic, verifies every event's signature and chain link
/// with the trusted keys, and stores events, integrity findings and chain heads in ClickHouse.
///
/// Settings (TOML; each overridable by VERDICT_AUDITOR_<KEY>, nested keys joined with `__`,
/// e.g. VERDICT_AUDITOR_KAFKA__BROKERS):
///
///   kafka.brokers          bootstrap servers, e.g. "127.0.0.1:9092" (required)
///   kafka.topic            audit topic (default "verdict.events")
///   kafka.group            consumer group shared by all auditors (default "verdict-auditor")
///   clickhouse.url         HTTP interface (default "http://127.0.0.1:8123")
///   clickhouse.database    database (default "default"); tables are created on start
///   clickhouse.user        user (optional)
///   clickhouse.password    password (optional)
///   [[trusted_keys]]       path = "gw.pub" (SPKI PEM), chains = ["gw-1"] (optional: the only
///                          chains this key may sign)
///   trusted_keys_dir       every *.pub / *.pem file in it is trusted for any chain
///   batch.max_events       most messages verified and stored together (default 5000)
///   batch.max_wait_ms      longest wait for a batch to fill (default 200)
///   metrics_listen         address for /metrics (Prometheus) and /healthz (optional)
///   checkpoint_grace_secs  slack after a chain's checkpoint interval before a silent_chain
///                          finding (default 30)
///
/// Offsets are committed only after a batch's rows are stored. SIGTERM or ctrl-c finishes the
/// current batch, commits it and exits. For fault tests only, VERDICT_AUDITOR_FAULT=N aborts the
/// process after the N-th stored batch, before its offsets are committed (`N:rows`: after its
/// events, before its chain heads; a trailing `:pause`: waits there to be killed); `N:hold=SECS`
/// waits SECS before storing the N-th batch; several points are separated by commas.
#[derive(Parser)]
#[command(name = "verdict-auditor", version, verbatim_doc_comment)]
struct Args {
    /// TOML config file.
    #[arg(long, env = "VERDICT_AUDITOR_CONFIG")]
    config: Option<PathBuf>,
    /// Once the schema is migrated, the group joined and the heads restored, write "ready"
    /// (or the metrics address, when metrics_listen is set) to this file.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Apply the schema migrations (on the cluster, with `[clickhouse] cluster`) and exit,
    /// without reading the topic: the step that creates a cluster's schema before a single
    /// server's rows are copied into it.
    #[arg(long)]
    migrate_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    let config = AuditorConfig::load(args.config.as_deref())?;
    let faults = match std::env::var("VERDICT_AUDITOR_FAULT") {
        Ok(points) => points
            .parse::<Faults>()
            .map_err(anyhow::Error::msg)
            .context("VERDICT_AUDITOR_FAULT")?,
        Err(_) => Faults::default(),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let metrics = Metrics::default();
    if args.migrate_only {
        Auditor::migrate_only(&config, &metrics, &shutdown).await?;
        tracing::info!("schema migrated");
        return Ok(());
    }
    let mut ready = "ready".to_owned();
    if let Some(address) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        ready = listener.local_addr()?.to_string();
        tracing::info!(address = %ready, "serving /metrics and /healthz");
        tokio::spawn(metrics.clone().serve(listener, shutdown.clone()));
    }
    let auditor = Auditor::start(&config, metrics, &shutdown)
        .await?
        .with_faults(faults);
    if let Some(path) = &args.ready_file {
        std::fs::write(path, &ready).with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(topic = %config.kafka.topic, group = %config.kafka.group, "auditor running");
    auditor.run(shutdown).await?;
    Ok(())
}

async fn watch_signals(shutdown: CancellationToken) {
    shutdown_signal().await;
    tracing::info!("shutdown requested: finishing the current batch");
    shutdown.cancel();
}
