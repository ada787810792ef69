//! `verdict-gateway`: the MCP proxy agents talk to.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use verdict_gateway::admin::AdminService;
use verdict_gateway::audit::witness_watch::{WitnessStatus, WitnessWatch};
use verdict_gateway::audit::{Audit, Recorder, Shipping};
use verdict_gateway::downstream;
use verdict_gateway::policy::PolicyTrail;
use verdict_gateway::{Gateway, GatewayConfig};
use verdict_service::credentials::Credentials;
use verdict_service::net::accept_no_delay;
use verdict_service::process::{init_tracing, shutdown_signal, stop_signals};

/// Verdict gateway: an MCP proxy that decides and audits every agent tool call.
///
/// Serves Streamable HTTP at http://LISTEN/mcp (agents authenticate with `Authorization: Bearer
/// <api key>`), or stdio with --stdio for clients that launch a command: standalone with
/// `--agent` (its own journal, which only one process may write), or relaying to a running HTTP
/// gateway with `--connect` (any number of copies; the agent's key in VERDICT_API_KEY). Every
/// setting in the TOML config can be overridden by an environment variable VERDICT_GATEWAY_<KEY>
/// (nested keys joined with `__`). In stdio mode SIGTERM, SIGINT, SIGHUP and the end of stdin all
/// stop the gateway cleanly.
#[derive(Parser)]
#[command(name = "verdict-gateway", version)]
#[command(group(clap::ArgGroup::new("stdio_front").args(["agent", "connect"])))]
struct Args {
    /// TOML config file (see README "Gateway configuration"); not used with --connect.
    #[arg(long, env = "VERDICT_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Serve one agent over stdin/stdout instead of HTTP (with --agent or --connect).
    #[arg(long, requires = "stdio_front")]
    stdio: bool,
    /// The agent id for a standalone --stdio gateway (the launching user is trusted as this agent).
    #[arg(long, requires = "stdio")]
    agent: Option<String>,
    /// Relay --stdio to the running HTTP gateway at this URL (e.g. http://127.0.0.1:8780/mcp),
    /// authenticated with the API key in the environment variable VERDICT_API_KEY. No journal,
    /// no upstreams: that gateway decides and records every call.
    #[arg(long, requires = "stdio", value_name = "URL")]
    connect: Option<String>,
    /// Once listening, write the bound address (e.g. 127.0.0.1:8780) to this file; with
    /// `listen = "127.0.0.1:0"` this is how scripts and tests learn the port. The admin API's
    /// address goes to the same path with the extension `.admin`.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// Where a relay finds the agent's API key (never argv, which other local users can read).
const API_KEY_ENV: &str = "VERDICT_API_KEY";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let result = runtime.block_on(run());
    // Stdin is read by a blocking thread that cannot be interrupted; waiting for it would keep a
    // stopped stdio gateway alive until its client writes another line.
    runtime.shutdown_background();
    result
}

async fn run() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    // Installed first: a client that signals right after the handshake must not kill us uncleanly.
    let stdio_stop = match args.stdio {
        true => Some(stop_signals().context("installing signal handlers")?),
        false => None,
    };
    let stdio_stop = match (&args.connect, stdio_stop) {
        (Some(url), Some(stop)) => {
            let key = std::env::var(API_KEY_ENV)
                .with_context(|| format!("--connect needs the agent's API key in {API_KEY_ENV}"))?;
            let (input, output) = (tokio::io::stdin(), tokio::io::stdout());
            downstream::relay::run(url, &key, input, output, stop).await?;
            return Ok(());
        }
        (_, stop) => stop,
    };
    let config = GatewayConfig::load(args.config.as_deref())?;
    let mode = if args.stdio { "stdio" } else { "http" };
    let audit = Audit::open(&config.audit, mode).context("opening the audit trail")?;
    let recorder = Arc::clone(&audit.recorder);
    recorder.spawn_timers();
    let shipping =
        Shipping::start(&config.audit, &recorder).context("creating the Kafka producer")?;
    let mut gateway = Gateway::new(&config, audit)?;
    if let Some(status) = shipping.status.clone() {
        gateway.metrics.watch_shipper(status);
    }
    if let Some(status) = watch_witness(&config, &recorder)? {
        gateway.metrics.watch_witness(status);
    }
    let mut policy = None;
    if let Some(path) = &config.policy {
        let decider = Arc::new(verdict_gateway::policy::PolicyDecider::load(path)?);
        tracing::info!(path = %path.display(), policy_sha256 = %hex::encode(decider.policy().sha256), "policy loaded");
        gateway = gateway.with_decider(Box::new(Arc::clone(&decider)));
        policy = Some(decider);
    }
    if policy.is_none() && !args.stdio {
        // SIGHUP's default action would kill the gateway; with no policy there is nothing to reload.
        tokio::spawn(async {
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .expect("SIGHUP handler");
            while hangup.recv().await.is_some() {
                tracing::warn!("SIGHUP: no policy configured, nothing to reload");
            }
        });
    }
    // The policy in force is in the trail before any call is decided under it; a start marks a
    // restart (empty rate-limit windows) for replays.
    let trail = PolicyTrail::new(&gateway.audit);
    let in_force = policy.as_ref().map(|decider| decider.policy());
    let source = config.policy.clone().unwrap_or_default();
    trail
        .record(in_force.as_deref(), &source, None)
        .await
        .context("recording the policy in the audit trail")?;
    let gateway = Arc::new(gateway);
    gateway.watch_upstreams();
    if let Some(decider) = policy {
        let notify = Arc::clone(&gateway);
        let changed = verdict_gateway::jsonrpc::notification(
            "notifications/tools/list_changed",
            serde_json::json!({}),
        );
        decider.watch(trail, move || notify.sessions.broadcast(&changed));
    }
    gateway.warm_up().await;
    if let Some(admin) = config.admin.listen {
        serve_admin(admin, &config, &gateway, args.ready_file.as_deref()).await?;
    }
    if let Some(address) = config.metrics_listen {
        downstream::http::serve_metrics(address, Arc::clone(&gateway), args.ready_file.as_deref())
            .await
            .with_context(|| format!("serving /metrics on {address}"))?;
    }
    if let (Some(agent), Some(stop)) = (args.agent, stdio_stop) {
        let (input, output) = (tokio::io::stdin(), tokio::io::stdout());
        downstream::stdio::serve(Arc::clone(&gateway), agent, input, output, stop).await;
        finish(&gateway, &recorder, shipping).await;
        tracing::info!("gateway stopped");
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
    downstream::http::serve(
        listener,
        Arc::clone(&gateway),
        config.http.limits(),
        shutdown_signal(),
    )
    .await;
    finish(&gateway, &recorder, shipping).await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Starts reading the witness's heads back when `[audit.witness]` is configured.
fn watch_witness(
    config: &GatewayConfig,
    recorder: &Arc<Recorder>,
) -> anyhow::Result<Option<Arc<WitnessStatus>>> {
    let Some(witness) = &config.audit.witness else {
        return Ok(None);
    };
    let kafka = config
        .audit
        .kafka
        .as_ref()
        .context("[audit.witness] reads heads from Kafka: it needs [audit.kafka]")?;
    let watch = WitnessWatch::new(
        witness,
        kafka,
        recorder.chain_id(),
        config.audit.journal_dir.clone(),
    )
    .context("reading the witness's heads")?;
    let status = Arc::clone(&watch.status);
    tokio::spawn(watch.run(recorder.written()));
    Ok(Some(status))
}

/// The approvals API (gRPC `GatewayAdmin`) on `listen`, in either mode; its address goes to the
/// ready file's `.admin` sibling.
async fn serve_admin(
    listen: std::net::SocketAddr,
    config: &GatewayConfig,
    gateway: &Arc<Gateway>,
    ready_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let tokens = Credentials::from_config(&config.admin.tokens)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the admin API to {listen}"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "admin API (approvals) listening");
    if let Some(path) = ready_file {
        let path = path.with_extension("admin");
        std::fs::write(&path, address.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let service = AdminService::server(Arc::clone(gateway), tokens);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(accept_no_delay(listener), shutdown_signal()),
    );
    Ok(())
}

/// After the last call: the shutdown checkpoint, a final fsync, what the shipper can still
/// deliver (the rest ships at the next start), and the upstream processes stopped.
async fn finish(gateway: &Gateway, recorder: &Recorder, shipping: Shipping) {
    recorder.shutdown().await;
    shipping.finish().await;
    gateway.stop_upstreams().await;
}
