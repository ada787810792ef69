//! Policies enforced by the real gateway on real MCP traffic (rmcp client, sample server):
//! default deny, hide, deny with a reason the agent reads, argument rules, rate limits per
//! session, and hot reload.

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::mcp::{work_memory_bin, HttpProcess};

const KEY: &str = "policy-test-key";

const POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "hide": ["memory_search"],
  "rules": [
    {"id": "no-delete", "match": {"tool": "session_manager", "arguments": {"action": "delete"}}, "action": "deny", "reason": "sessions are deleted by humans only"},
    {"id": "session-ops", "match": {"tool": "session_manager", "arguments": {"action": "set_active"}}, "action": "allow"},
    {"id": "reads", "match": {"risk": "read"}, "action": "allow", "rate_limit": {"max": 3, "window": 2}}
  ]
}"#;

struct Setup {
    _gateway: HttpProcess,
    policy_dir: tempfile::TempDir,
    url: String,
}

fn setup(policy: &str) -> Setup {
    let policy_dir = tempfile::tempdir().unwrap();
    std::fs::write(policy_dir.path().join("policy.json"), policy).unwrap();
    let config = format!(
        "policy = \"{}\"\n[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n[upstreams.memory]\ncommand = \"{}\"\n",
        policy_dir.path().join("policy.json").display(),
        key_digest(KEY),
        work_memory_bin().display()
    );
    let gateway = HttpProcess::gateway(&config).unwrap();
    let url = gateway.url();
    Setup {
        _gateway: gateway,
        policy_dir,
        url,
    }
}

async fn client(url: &str) -> RunningService<RoleClient, ()> {
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(KEY.to_owned());
    let client = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    client
        .set_response_cache_config(rmcp::ClientCacheConfig::disabled())
        .await;
    client
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &str,
    arguments: Value,
) -> Result<CallToolResult, ServiceError> {
    client
        .call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(arguments.as_object().unwrap().clone()),
        )
        .await
}

fn text(result: &CallToolResult) -> String {
    serde_json::to_value(result).unwrap()["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_deny_hide_argument_rules_and_reasons_reach_the_agent() {
    let setup = setup(POLICY);
    let client = client(&setup.url).await;
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        !names.contains(&"memory_search".to_owned()),
        "hidden tool listed: {names:?}"
    );
    assert!(names.contains(&"session_manager".to_owned()));

    let denied = call(
        &client,
        "session_manager",
        json!({"action": "delete", "session_id": "s1"}),
    )
    .await
    .unwrap();
    assert_eq!(denied.is_error, Some(true));
    assert_eq!(
        text(&denied),
        "[policy denied] rule no-delete: sessions are deleted by humans only"
    );

    let allowed = call(
        &client,
        "session_manager",
        json!({"action": "set_active", "session_id": "s1"}),
    )
    .await
    .unwrap();
    assert_eq!(
        (allowed.is_error, text(&allowed)),
        (Some(false), "활성 세션: s1".to_owned())
    );

    let by_default = call(&client, "memory_write", json!({"key": "k", "value": "v"}))
        .await
        .unwrap();
    assert!(
        text(&by_default).starts_with("[policy denied] rule default:"),
        "{}",
        text(&by_default)
    );

    // A hidden tool fails exactly like a tool that does not exist.
    let hidden = call(&client, "memory_search", json!({"query": "x"}))
        .await
        .unwrap_err();
    let missing = call(&client, "no_such_tool", json!({"query": "x"}))
        .await
        .unwrap_err();
    let shape = |e: &ServiceError| match e {
        ServiceError::McpError(data) => (
            data.code.0,
            data.message
                .replace("memory_search", "NAME")
                .replace("no_such_tool", "NAME"),
            data.data.clone(),
        ),
        other => panic!("expected a JSON-RPC error, got {other}"),
    };
    assert_eq!(shape(&hidden), shape(&missing));
    assert_eq!(shape(&hidden).0, -32602);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_per_session_and_resets_after_the_window() {
    let setup = setup(POLICY);
    let first = client(&setup.url).await;
    let start = Instant::now();
    for _ in 0..3 {
        let ok = call(&first, "memory_read", json!({"key": "k"}))
            .await
            .unwrap();
        assert!(!text(&ok).starts_with('['), "{}", text(&ok));
    }
    let limited = call(&first, "memory_read", json!({"key": "k"}))
        .await
        .unwrap();
    assert_eq!(limited.is_error, Some(true));
    assert!(
        text(&limited).starts_with(
            "[rate limited] rule reads: at most 3 calls per 2 s per session; retry in"
        ),
        "{}",
        text(&limited)
    );

    let second = client(&setup.url).await;
    assert!(
        !text(
            &call(&second, "memory_read", json!({"key": "k"}))
                .await
                .unwrap()
        )
        .starts_with('['),
        "another session has its own window"
    );

    tokio::time::sleep(
        Duration::from_secs(2).saturating_sub(start.elapsed()) + Duration::from_millis(100),
    )
    .await;
    let again = call(&first, "memory_read", json!({"key": "k"}))
        .await
        .unwrap();
    assert!(
        !text(&again).starts_with('['),
        "allowed again after the window: {}",
        text(&again)
    );
    first.cancel().await.unwrap();
    second.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reloads_on_change_and_keeps_the_old_one_when_invalid() {
    let setup = setup(POLICY);
    let client = client(&setup.url).await;
    let write = || call(&client, "memory_write", json!({"key": "k", "value": "v"}));
    assert!(text(&write().await.unwrap()).starts_with("[policy denied]"));

    let path = setup.policy_dir.path().join("policy.json");
    std::fs::write(&path, "{\"version\":\"1\",\"default\":\"allow\",}").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        text(&write().await.unwrap()).starts_with("[policy denied]"),
        "invalid file ignored, old policy kept"
    );

    std::fs::write(&path, r#"{"version":"1","default":"allow"}"#).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = write().await.unwrap();
        if text(&result) == "stored k" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new policy not applied: {}",
            text(&result)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client.cancel().await.unwrap();
}
