//! `verdict-gateway`: the MCP proxy agents talk to.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use verdict_gateway::admin::AdminService;
use verdict_gateway::audit::shipper::Shipper;
use verdict_gateway::audit::{Audit, Recorder};
use verdict_gateway::downstream;
use verdict_gateway::{Gateway, GatewayConfig};
use verdict_service::credentials::Credentials;
use verdict_service::process::{init_tracing, shutdown_signal};

/// Verdict gateway: an MCP proxy that decides and audits every agent tool call.
///
/// Serves Streamable HTTP at http://LISTEN/mcp (agents authenticate with `Authorization: Bearer
/// <api key>`), or stdio with --stdio for clients that launch a command. Every setting in the
/// TOML config can be overridden by an environment variable VERDICT_GATEWAY_<KEY> (nested keys
/// joined with `__`).
#[derive(Parser)]
#[command(name = "verdict-gateway", version)]
struct Args {
    /// TOML config file (see README "Gateway configuration").
    #[arg(long, env = "VERDICT_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Serve one agent over stdin/stdout instead of HTTP.
    #[arg(long, requires = "agent")]
    stdio: bool,
    /// The agent id for --stdio (the launching user is trusted as this agent).
    #[arg(long)]
    agent: Option<String>,
    /// Once listening, write the bound address (e.g. 127.0.0.1:8780) to this file; with
    /// `listen = "127.0.0.1:0"` this is how scripts and tests learn the port. The admin API's
    /// address goes to the same path with the extension `.admin`.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    let config = GatewayConfig::load(args.config.as_deref())?;
    let audit = Audit::open(&config.audit).context("opening the audit trail")?;
    let recorder = Arc::clone(&audit.recorder);
    recorder.spawn_timers();
    let stop_shipping = CancellationToken::new();
    let (shipping, shipper_status) = match &config.audit.kafka {
        Some(kafka) => {
            let retention = config.audit.retention_secs.map(Duration::from_secs);
            let shipper = Shipper::new(
                kafka,
                recorder.chain_id(),
                config.audit.journal_dir.clone(),
                retention,
            )
            .context("creating the Kafka producer")?;
            let status = Arc::clone(&shipper.status);
            let task = tokio::spawn(shipper.run(recorder.written(), stop_shipping.clone()));
            (Some(task), Some(status))
        }
        None => {
            tracing::info!(journal = %config.audit.journal_dir.display(), "no [audit.kafka]: the journal alone is the audit trail");
            (None, None)
        }
    };
    let mut gateway = Gateway::new(&config, audit)?;
    if let Some(status) = shipper_status {
        gateway.metrics.watch_shipper(status);
    }
    let mut policy = None;
    if let Some(path) = &config.policy {
        let decider = Arc::new(verdict_gateway::policy::PolicyDecider::load(path)?);
        tracing::info!(path = %path.display(), policy_sha256 = %hex::encode(decider.policy().sha256), "policy loaded");
        gateway = gateway.with_decider(Box::new(Arc::clone(&decider)));
        policy = Some(decider);
    }
    if policy.is_none() {
        // SIGHUP's default action would kill the gateway; with no policy there is nothing to reload.
        tokio::spawn(async {
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .expect("SIGHUP handler");
            while hangup.recv().await.is_some() {
                tracing::warn!("SIGHUP: no policy configured, nothing to reload");
            }
        });
    }
    let gateway = Arc::new(gateway);
    gateway.watch_upstreams();
    if let Some(decider) = policy {
        let notify = Arc::clone(&gateway);
        let changed = verdict_gateway::jsonrpc::notification(
            "notifications/tools/list_changed",
            serde_json::json!({}),
        );
        decider.watch(move || notify.sessions.broadcast(&changed));
    }
    gateway.warm_up().await;
    if args.stdio {
        let agent = args.agent.context("--stdio needs --agent")?;
        downstream::stdio::serve(gateway, agent, tokio::io::stdin(), tokio::io::stdout()).await;
        finish(&recorder, stop_shipping, shipping).await;
        return Ok(());
    }
    let reaper = Arc::clone(&gateway);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            reaper.sessions.reap_idle();
        }
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "gateway listening on /mcp");
    if let Some(path) = &args.ready_file {
        std::fs::write(path, address.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(admin) = config.admin.listen {
        let tokens = Credentials::from_config(&config.admin.tokens)?;
        let listener = tokio::net::TcpListener::bind(admin)
            .await
            .with_context(|| format!("binding the admin API to {admin}"))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "admin API (approvals) listening");
        if let Some(path) = &args.ready_file {
            let path = path.with_extension("admin");
            std::fs::write(&path, address.to_string())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let service = AdminService::server(Arc::clone(&gateway), tokens);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown_signal()),
        );
    }
    if let Some(address) = config.metrics_listen {
        downstream::http::serve_metrics(address, Arc::clone(&gateway), args.ready_file.as_deref())
            .await
            .with_context(|| format!("serving /metrics on {address}"))?;
    }
    downstream::http::serve(listener, gateway, config.http.limits(), shutdown_signal()).await;
    finish(&recorder, stop_shipping, shipping).await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// After the last call: the shutdown checkpoint, a final fsync, and what the shipper can still
/// deliver (the rest ships at the next start).
async fn finish(
    recorder: &Recorder,
    stop_shipping: CancellationToken,
    shipping: Option<tokio::task::JoinHandle<()>>,
) {
    recorder.shutdown().await;
    if let Some(shipping) = shipping {
        stop_shipping.cancel();
        let _ = shipping.await;
    }
}
