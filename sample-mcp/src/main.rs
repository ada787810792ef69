//! `work-memory`: a sample upstream MCP server for Verdict's demo and tests.
//!
//! It stands in for the real Work Memory server (see `tools.rs`): `session_manager` (the dangerous
//! tool Verdict exists for, with the real action names and `confirm`), `add_work_memory`,
//! `list_work_memories`, `search_work_memory` and `delete_work_memory`, all published exactly as the real server
//! publishes them (Korean descriptions, no annotations, failures as ❌ text), plus the sample's own
//! `long_task` that reports progress and honours cancellation. Serves stdio or Streamable HTTP, in
//! every protocol revision rmcp knows (both the handshake era and 2026-07-28) or, with
//! `--max-protocol`, up to one. SIGHUP toggles a maintenance mode that withdraws `long_task`, SIGUSR1
//! (or `--rug-pull` at start) a changed `session_manager` description; both are announced outside
//! any request (see `changes.rs`).

mod changes;
mod tools;

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::Parser;
use rmcp::model::ProtocolVersion;
use rmcp::transport::streamable_http_server::{
    session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use rmcp::ServiceExt;
use std::net::SocketAddr;
use tools::WorkMemory;

#[derive(Parser)]
#[command(
    name = "work-memory",
    about = "Sample \"work memory\" MCP server (stdio or Streamable HTTP)"
)]
struct Args {
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Tools per `tools/list` page (0: all in one page).
    #[arg(long, default_value_t = 0)]
    page_size: usize,
    /// Once listening (--http), write the bound address to this file (for port 0).
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// Serve only these tools (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Serve protocol revisions up to this one only, e.g. 2025-11-25 for the handshake era alone.
    #[arg(long, value_name = "VERSION")]
    max_protocol: Option<String>,
    /// Stdio: keep running after stdin closes, until SIGTERM, as the real Work Memory server does.
    #[arg(long)]
    stay_after_eof: bool,
    /// Start with `session_manager`'s description changed, as a new version of a poisoned server
    /// would publish it (SIGUSR1 toggles it at run time).
    #[arg(long)]
    rug_pull: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let max_protocol = args
        .max_protocol
        .map(|v| serde_json::from_value::<ProtocolVersion>(serde_json::Value::String(v)))
        .transpose()
        .context("--max-protocol")?;
    let server = WorkMemory::new(args.page_size, &args.only).with_max_protocol(max_protocol);
    if args.rug_pull {
        server.changes().toggle_rug_pull().await;
    }
    tokio::spawn(toggle_on_signals(server.changes()));
    let ready_file = args.ready_file.clone();
    match args.http {
        None => {
            server
                .serve(rmcp::transport::stdio())
                .await?
                .waiting()
                .await?;
            if args.stay_after_eof {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?
                    .recv()
                    .await;
            }
        }
        Some(addr) => {
            let service = StreamableHttpService::new(
                move || Ok(server.clone()),
                LocalSessionManager::default().into(),
                StreamableHttpServerConfig::default(),
            );
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let address = listener.local_addr()?;
            eprintln!("work-memory listening on http://{address}/mcp");
            if let Some(path) = &ready_file {
                std::fs::write(path, address.to_string())?;
            }
            let app = axum::Router::new().nest_service("/mcp", service);
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
        }
    }
    Ok(())
}

/// SIGHUP toggles maintenance, SIGUSR1 the rug pull (see [`changes`]).
async fn toggle_on_signals(changes: std::sync::Arc<changes::ToolChanges>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hangups), Ok(mut usr1)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            Some(()) = hangups.recv() => changes.toggle().await,
            Some(()) = usr1.recv() => changes.toggle_rug_pull().await,
            else => return,
        }
    }
}
