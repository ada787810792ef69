//! What an HTTP upstream announces outside any request reaches the agents: the sample server
//! withdraws `long_task` on SIGHUP and says `notifications/tools/list_changed` on the stream the
//! gateway keeps open for it — a `GET` stream when the upstream speaks only the handshake era,
//! a `subscriptions/listen` stream when it speaks 2026-07-28. The gateway refreshes its catalog
//! and tells its own agents (rmcp clients, on their GET streams); `tools/list` follows. The
//! upstream is then restarted on the same port: the gateway reopens its stream, resynchronises
//! its catalog, and hears the new process.

use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::mcp::HttpProcess;

const KEY: &str = "key-agent-a";

#[derive(Clone, Default)]
struct ToolChanges(Arc<AtomicUsize>);

impl ClientHandler for ToolChanges {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("verdict-itest", "1.0"),
        )
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

async fn tool_names(client: &RunningService<RoleClient, ToolChanges>) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    names
}

/// Waits until the agent has been told of `count` changes in all and `long_task` is listed or
/// not as `listed` says.
async fn wait_for(
    client: &RunningService<RoleClient, ToolChanges>,
    changes: &AtomicUsize,
    count: usize,
    listed: bool,
    gateway: &HttpProcess,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names = tool_names(client).await;
        let told = changes.load(Ordering::SeqCst);
        if told >= count && names.iter().any(|n| n == "long_task") == listed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "told of {told} changes (want {count}), tools {names:?} (long_task listed: {listed})\n\
             gateway log:\n{}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn announcements_reach_agents(upstream_args: &[&str]) {
    let mut upstream = HttpProcess::work_memory(upstream_args).unwrap();
    let gateway = HttpProcess::gateway(&format!(
        "[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n\n[upstreams.remote]\nurl = \"{}\"\n",
        key_digest(KEY),
        upstream.url()
    ))
    .unwrap();
    let config = StreamableHttpClientTransportConfig::with_uri(gateway.url()).auth_header(KEY);
    let changes = ToolChanges::default();
    let told = Arc::clone(&changes.0);
    let client = changes
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("initialize through the gateway");
    client
        .set_response_cache_config(rmcp::ClientCacheConfig::disabled())
        .await;
    assert!(tool_names(&client).await.contains(&"long_task".to_owned()));

    upstream.hang_up();
    wait_for(&client, &told, 1, false, &gateway).await;
    upstream.hang_up();
    wait_for(&client, &told, 2, true, &gateway).await;
    let before_restart = told.load(Ordering::SeqCst);

    // A restarted upstream (a new process, fresh state: long_task listed) on the same port.
    // The gateway reopens its stream (renegotiating a session where there is one), refreshes
    // its catalog and tells the agent, since nothing missed meanwhile is replayed.
    let port = upstream.port;
    upstream.kill();
    let restarted = HttpProcess::work_memory_at(port, upstream_args).unwrap();
    wait_for(&client, &told, before_restart + 1, true, &gateway).await;
    // Then it hears the new process's own announcements.
    tokio::time::sleep(Duration::from_secs(1)).await;
    restarted.hang_up();
    wait_for(&client, &told, before_restart + 2, false, &gateway).await;
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_era_upstream_announces_on_the_get_stream() {
    announcements_reach_agents(&["--max-protocol", "2025-11-25"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_upstream_announces_on_its_subscription() {
    announcements_reach_agents(&[]).await;
}
