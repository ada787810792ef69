//! `verdict-query`: the audit query service.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use verdict_query::QueryConfig;
use verdict_service::process::{init_tracing, shutdown_signal};

/// Verdict query service: answers compliance questions over the audit trail in ClickHouse.
///
/// Serves gRPC `verdict.v1.AuditQuery` (WhoTried, Search, Summarize, Export, Follow,
/// VerifyChain, ListFindings, ListChainHeads) plus gRPC health and server reflection on `listen`. Clients
/// authenticate with `authorization: Bearer <token>`; the config lists each token's SHA-256
/// (`verdict-query --hash-token` prints it), separate from the agents' keys. Prometheus
/// `/metrics` and `/healthz` are served on `metrics_listen` when set.
///
/// Settings (TOML; each overridable as VERDICT_QUERY_<KEY>, nested keys joined with `__`):
///   listen = "127.0.0.1:8790"
///   metrics_listen = "127.0.0.1:9790"
///   trusted_keys = ["/etc/verdict/gateway-1.pub"]     # for VerifyChain
///   [clickhouse] url, database, user, password
///   [[tokens]] id = "siem", sha256 = "<hex>"
///   [limits] max_page_size = 1000, max_whotried_limit = 10000, max_range_days = 400,
///            max_filter_values = 100, request_timeout_secs = 60, follow_poll_millis = 200,
///            follow_max_lag = 100000, follow_gap_grace_secs = 60
///   [tls] cert = "server.pem", key = "server.key", client_ca = "clients-ca.pem" (optional:
///         require client certificates); without [tls] gRPC is plaintext
#[derive(Parser)]
#[command(name = "verdict-query", version, verbatim_doc_comment)]
struct Args {
    /// TOML config file (see README "Query service").
    #[arg(long, env = "VERDICT_QUERY_CONFIG")]
    config: Option<PathBuf>,
    /// Once listening, write the bound gRPC address (e.g. 127.0.0.1:8790) to this file; with
    /// `listen = "127.0.0.1:0"` this is how scripts and tests learn the port.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Print the SHA-256 of a token (read from stdin) for the config, and exit.
    #[arg(long)]
    hash_token: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    if args.hash_token {
        let mut token = String::new();
        std::io::stdin().read_line(&mut token)?;
        println!(
            "{}",
            verdict_service::credentials::digest(token.trim_end_matches(['\r', '\n']))
        );
        return Ok(());
    }
    let config = QueryConfig::load(args.config.as_deref())?;
    let grpc = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = grpc.local_addr()?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?,
        ),
        None => None,
    };
    tracing::info!(%address, metrics = ?config.metrics_listen, "query service listening");
    if let Some(path) = &args.ready_file {
        std::fs::write(path, address.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    verdict_query::serve(config, grpc, metrics, shutdown_signal()).await?;
    tracing::info!("query service stopped");
    Ok(())
}
