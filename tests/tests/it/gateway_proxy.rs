//! The gateway as a real MCP proxy, driven by an independent client (the official Rust SDK,
//! rmcp) over Streamable HTTP and stdio, in both protocol eras. The same scenario runs against
//! the sample server directly and through the gateway (which merges two upstreams of the sample
//! server, one over stdio and one over HTTP), and the transcripts must be equal.

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation,
    ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use verdict_service::credentials::digest as key_digest;
use verdict_tests::mcp::{gateway_bin, work_memory_bin, write_config, HttpProcess};

const KEY_A: &str = "key-agent-a";
const KEY_B: &str = "key-agent-b";
/// Tools of the stdio upstream; the HTTP upstream serves the rest.
const STDIO_TOOLS: &str = "add_work_memory,list_work_memories,long_task";
const HTTP_TOOLS: &str = "session_manager,search_work_memory,delete_work_memory";

#[derive(Clone)]
struct Recorder {
    info: ClientConfig,
    progress: Arc<AtomicUsize>,
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }

    async fn on_progress(
        &self,
        _params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Debug)]
enum Era {
    Handshake(ProtocolVersion),
    Stateless,
}

type Client = RunningService<RoleClient, Recorder>;

async fn connect<T, E, A>(transport: T, era: Era) -> (Client, Arc<AtomicUsize>)
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let progress = Arc::new(AtomicUsize::new(0));
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("verdict-itest", "1.0"),
    );
    let client = match era {
        Era::Handshake(version) => {
            let info = info.with_protocol_version(version);
            Recorder {
                info,
                progress: Arc::clone(&progress),
            }
            .serve(transport)
            .await
            .expect("initialize")
        }
        Era::Stateless => {
            let lifecycle = ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            };
            Recorder {
                info,
                progress: Arc::clone(&progress),
            }
            .serve_with_lifecycle(transport, lifecycle)
            .await
            .expect("discover")
        }
    };
    client
        .set_response_cache_config(rmcp::ClientCacheConfig::disabled())
        .await;
    (client, progress)
}

fn http_transport(url: &str, key: Option<&str>) -> StreamableHttpClientTransport<reqwest::Client> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned())
        .reinit_on_expired_session(false);
    if let Some(key) = key {
        config = config.auth_header(key.to_owned());
    }
    StreamableHttpClientTransport::from_config(config)
}

async fn call(client: &Client, tool: &str, arguments: Value) -> String {
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(arguments.as_object().unwrap().clone());
    let result = client
        .call_tool(params)
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let value = serde_json::to_value(&result).unwrap();
    format!(
        "{}{}",
        if result.is_error == Some(true) {
            "error: "
        } else {
            ""
        },
        value["content"][0]["text"].as_str().unwrap_or("")
    )
}

/// What a client observes; must be identical directly and through the gateway.
#[derive(Debug, PartialEq)]
struct Transcript {
    tools: Vec<String>,
    session_manager_definition: Value,
    results: Vec<String>,
    progress_updates: usize,
    cancellation_reached_server: String,
}

async fn scenario(client: &Client, progress: &AtomicUsize) -> Transcript {
    let listed = client.list_all_tools().await.expect("tools/list");
    let mut tools: Vec<String> = listed.iter().map(|t| t.name.to_string()).collect();
    tools.sort();
    let session_manager = listed
        .iter()
        .find(|t| t.name == "session_manager")
        .expect("session_manager listed");
    // The real server's definition (Korean description, the action enum) passes through as is.
    let session_manager_definition = serde_json::to_value(session_manager).unwrap();
    let results = vec![
        call(
            client,
            "add_work_memory",
            json!({"project": "k1", "content": "세션 메모"}),
        )
        .await,
        call(client, "list_work_memories", json!({"project": "k1"})).await,
        call(
            client,
            "session_manager",
            json!({"action": "set_active", "session_id": "s1"}),
        )
        .await,
        call(
            client,
            "session_manager",
            json!({"action": "delete_session", "session_id": "nope"}),
        )
        .await,
        call(client, "long_task", json!({"steps": 3, "delay_ms": 20})).await,
    ];
    // rmcp hands notifications to the handler asynchronously: wait for the three updates.
    for _ in 0..100 {
        if progress.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let progress_updates = progress.load(Ordering::SeqCst);
    // A slow call abandoned by the client: rmcp cancels it (notification or dropped stream).
    let slow = CallToolRequestParams::new("long_task").with_arguments(
        json!({"steps": 200, "delay_ms": 20})
            .as_object()
            .unwrap()
            .clone(),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.call_tool(slow))
            .await
            .is_err(),
        "slow call finished early"
    );
    let mut cancellation_reached_server = String::new();
    for _ in 0..50 {
        cancellation_reached_server = call(
            client,
            "list_work_memories",
            json!({"project": "long_task"}),
        )
        .await;
        if cancellation_reached_server.starts_with("cancelled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Step numbers vary with timing; only the kind of ending is compared.
    cancellation_reached_server = cancellation_reached_server
        .split(" at ")
        .next()
        .unwrap()
        .to_owned();
    Transcript {
        tools,
        session_manager_definition,
        results,
        progress_updates,
        cancellation_reached_server,
    }
}

fn gateway_config(http_upstream: &str) -> String {
    format!(
        r#"
[[agents]]
id = "agent-a"
api_key_sha256 = "{}"

[[agents]]
id = "agent-b"
api_key_sha256 = "{}"

[upstreams.memory]
command = "{}"
args = ["--only", "{STDIO_TOOLS}"]

[upstreams.remote]
url = "{http_upstream}"
"#,
        key_digest(KEY_A),
        key_digest(KEY_B),
        work_memory_bin().display()
    )
}

async fn http_direct_and_through_gateway(era: Era) {
    let direct_server = HttpProcess::work_memory(&[]).unwrap();
    let (direct, progress) = connect(http_transport(&direct_server.url(), None), era.clone()).await;
    let expected = scenario(&direct, &progress).await;
    direct.cancel().await.unwrap();
    assert_eq!(
        expected.cancellation_reached_server, "cancelled",
        "{expected:?}"
    );
    assert_eq!(expected.progress_updates, 3, "{expected:?}");

    let remote = HttpProcess::work_memory(&["--only", HTTP_TOOLS]).unwrap();
    let gateway = HttpProcess::gateway(&gateway_config(&remote.url())).unwrap();
    let (proxied, progress) = connect(http_transport(&gateway.url(), Some(KEY_A)), era).await;
    let actual = scenario(&proxied, &progress).await;
    proxied.cancel().await.unwrap();
    assert_eq!(actual, expected, "gateway log:\n{}", gateway.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handshake_2025_11_25_matches_direct() {
    http_direct_and_through_gateway(Era::Handshake(ProtocolVersion::V_2025_11_25)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handshake_2025_03_26_matches_direct() {
    http_direct_and_through_gateway(Era::Handshake(ProtocolVersion::V_2025_03_26)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_stateless_2026_07_28_matches_direct() {
    http_direct_and_through_gateway(Era::Stateless).await;
}

async fn stdio_direct_and_through_gateway(era: Era) {
    let direct = TokioChildProcess::new(tokio::process::Command::new(work_memory_bin())).unwrap();
    let (direct, progress) = connect(direct, era.clone()).await;
    let expected = scenario(&direct, &progress).await;
    direct.cancel().await.unwrap();

    let remote = HttpProcess::work_memory(&["--only", HTTP_TOOLS]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &gateway_config(&remote.url()));
    let mut command = tokio::process::Command::new(gateway_bin());
    command
        .arg("--config")
        .arg(&config)
        .args(["--stdio", "--agent", "agent-a"])
        .env("RUST_LOG", "warn");
    let (proxied, progress) = connect(TokioChildProcess::new(command).unwrap(), era).await;
    let actual = scenario(&proxied, &progress).await;
    proxied.cancel().await.unwrap();
    assert_eq!(actual, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_handshake_matches_direct() {
    stdio_direct_and_through_gateway(Era::Handshake(ProtocolVersion::V_2025_11_25)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_stateless_matches_direct() {
    stdio_direct_and_through_gateway(Era::Stateless).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_tool_names_are_prefixed_by_upstream() {
    let remote =
        HttpProcess::work_memory(&["--only", "list_work_memories,search_work_memory"]).unwrap();
    let config = gateway_config(&remote.url()).replace(STDIO_TOOLS, "list_work_memories,long_task");
    let gateway = HttpProcess::gateway(&config).unwrap();
    let (client, _) = connect(
        http_transport(&gateway.url(), Some(KEY_A)),
        Era::Handshake(ProtocolVersion::V_2025_11_25),
    )
    .await;
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "long_task",
            "memory__list_work_memories",
            "remote__list_work_memories",
            "search_work_memory"
        ]
    );
    call(&client, "remote__list_work_memories", json!({"key": "x"})).await;
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_pages_through_a_paging_upstream() {
    let remote = HttpProcess::work_memory(&["--page-size", "1", "--only", HTTP_TOOLS]).unwrap();
    let config = format!("tools_page_size = 2\n{}", gateway_config(&remote.url()));
    let gateway = HttpProcess::gateway(&config).unwrap();
    let (client, _) = connect(
        http_transport(&gateway.url(), Some(KEY_A)),
        Era::Handshake(ProtocolVersion::V_2025_11_25),
    )
    .await;
    let first = client.list_tools(None).await.unwrap();
    assert_eq!(first.tools.len(), 2);
    assert!(first.next_cursor.is_some());
    let all = client.list_all_tools().await.unwrap();
    assert_eq!(
        all.len(),
        6,
        "3 stdio tools + 3 tools paged one by one from the HTTP upstream"
    );
    client.cancel().await.unwrap();
}
