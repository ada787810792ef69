//! Policies enforced by the real gateway on real MCP traffic (rmcp client, sample server in the
//! real Work Memory server's shape): default deny, hide, deny with a reason the agent reads,
//! argument rules (and the spellings that used to slip past them), rate limits per session, hot
//! reload, and plain-text failures recorded as `tool_error`.

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use verdict_proto::pb::OutcomeKind;
use verdict_service::credentials::digest as key_digest;
use verdict_tests::mcp::{work_memory_bin, HttpProcess};
use verdict_tests::trail::{self, journal_events};

const KEY: &str = "policy-test-key";

const POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "hide": ["search_work_memory"],
  "rules": [
    {"id": "no-delete", "match": {"tool": "session_manager", "arguments": {"action": "delete_session"}}, "action": "deny", "reason": "sessions are deleted by humans only"},
    {"id": "session-ops", "match": {"tool": "session_manager", "arguments": {"action": "set_active"}}, "action": "allow"},
    {"id": "reads", "match": {"risk": "read"}, "action": "allow", "rate_limit": {"max": 3, "window": 2}}
  ]
}"#;

struct Setup {
    gateway: HttpProcess,
    policy_dir: tempfile::TempDir,
    url: String,
}

fn setup(policy: &str) -> Setup {
    setup_with(policy, "")
}

/// `upstream_extra`: more keys for the upstream's table.
fn setup_with(policy: &str, upstream_extra: &str) -> Setup {
    let policy_dir = tempfile::tempdir().unwrap();
    std::fs::write(policy_dir.path().join("policy.json"), policy).unwrap();
    let config = format!(
        "policy = \"{}\"\n[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n[upstreams.memory]\ncommand = \"{}\"\n{upstream_extra}\n",
        policy_dir.path().join("policy.json").display(),
        key_digest(KEY),
        work_memory_bin().display()
    );
    let gateway = HttpProcess::gateway(&config).unwrap();
    let url = gateway.url();
    Setup {
        gateway,
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
        !names.contains(&"search_work_memory".to_owned()),
        "hidden tool listed: {names:?}"
    );
    assert!(names.contains(&"session_manager".to_owned()));

    let denied = call(
        &client,
        "session_manager",
        json!({"action": "delete_session", "session_id": "s1", "confirm": true}),
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
        (
            None,
            "✅ 활성 세션이 설정되었습니다.\n세션 ID: s1".to_owned()
        )
    );

    let by_default = call(&client, "add_work_memory", json!({"content": "v"}))
        .await
        .unwrap();
    assert!(
        text(&by_default).starts_with("[policy denied] rule default:"),
        "{}",
        text(&by_default)
    );

    // A hidden tool fails exactly like a tool that does not exist.
    let hidden = call(&client, "search_work_memory", json!({"query": "x"}))
        .await
        .unwrap_err();
    let missing = call(&client, "no_such_tool", json!({"query": "x"}))
        .await
        .unwrap_err();
    let shape = |e: &ServiceError| match e {
        ServiceError::McpError(data) => (
            data.code.0,
            data.message
                .replace("search_work_memory", "NAME")
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
        let ok = call(&first, "list_work_memories", json!({})).await.unwrap();
        assert!(!text(&ok).starts_with('['), "{}", text(&ok));
    }
    let limited = call(&first, "list_work_memories", json!({})).await.unwrap();
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
            &call(&second, "list_work_memories", json!({}))
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
    let again = call(&first, "list_work_memories", json!({})).await.unwrap();
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
    let write = || call(&client, "add_work_memory", json!({"content": "v"}));
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
        if text(&result).starts_with("✅") {
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

/// The attack of issue 15 item 11: spellings of a denied value that the upstream may still accept
/// (case, whitespace, a one-element array) once passed an equality rule and reached an allow rule
/// behind it. They are denied by the rule now; `{"exact": ...}` keeps exact equality on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spellings_of_a_denied_value_are_denied_too() {
    let setup = setup(
        r#"{"version": "1", "default": "deny", "rules": [
          {"id": "no-delete", "match": {"tool": "session_manager", "arguments": {"action": "delete_session"}}, "action": "deny", "reason": "humans only"},
          {"id": "no-cascade", "match": {"tool": "session_manager", "arguments": {"action": {"glob": "delete_session_c*"}}}, "action": "deny", "reason": "humans only"},
          {"id": "exactly-clear", "match": {"tool": "session_manager", "arguments": {"action": {"exact": "clear"}}}, "action": "deny", "reason": "exact"},
          {"id": "session-ops", "match": {"tool": "session_manager"}, "action": "allow"}]}"#,
    );
    let client = client(&setup.url).await;
    let denied_by = |rule: &str| format!("[policy denied] rule {rule}: ");
    for (action, rule) in [
        (json!("DELETE_SESSION"), "no-delete"),
        (json!("delete_session "), "no-delete"),
        (json!(" Delete_Session\t"), "no-delete"),
        (json!(["delete_session"]), "no-delete"),
        (json!(["list_sessions", "delete_session"]), "no-delete"),
        (json!("DELETE_SESSION_CASCADE"), "no-cascade"),
        (json!(["delete_session_cascade"]), "no-cascade"),
    ] {
        let arguments = json!({"action": action, "session_id": "s1", "confirm": true});
        let result = call(&client, "session_manager", arguments.clone()).await;
        let result =
            result.unwrap_or_else(|e| panic!("{arguments}: not decided by the policy: {e}"));
        assert!(
            text(&result).starts_with(&denied_by(rule)),
            "{arguments}: {}",
            text(&result)
        );
    }
    let exact = call(&client, "session_manager", json!({"action": "CLEAR"}))
        .await
        .unwrap();
    assert!(
        !text(&exact).starts_with('['),
        "exact match is exact: {}",
        text(&exact)
    );
    let cleared = call(&client, "session_manager", json!({"action": "clear"}))
        .await
        .unwrap();
    assert!(
        text(&cleared).starts_with(&denied_by("exactly-clear")),
        "{}",
        text(&cleared)
    );
    client.cancel().await.unwrap();
}

/// The real server reports failures as ❌ text without `isError`: with `failure_text_prefixes`
/// the trail tells a refused (unconfirmed) delete from a real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_failures_are_recorded_as_tool_errors() {
    let setup = setup_with(
        r#"{"version": "1", "default": "allow"}"#,
        "failure_text_prefixes = [\"❌\"]",
    );
    let client = client(&setup.url).await;
    let unconfirmed = call(
        &client,
        "session_manager",
        json!({"action": "delete_session", "session_id": "s1"}),
    )
    .await
    .unwrap();
    assert_eq!(
        (unconfirmed.is_error, text(&unconfirmed)),
        (
            None,
            "❌ 세션 삭제시에는 confirm=true가 필요합니다.".to_owned()
        ),
        "the agent gets the upstream's reply untouched"
    );
    let deleted = call(
        &client,
        "session_manager",
        json!({"action": "delete_session", "session_id": "s1", "confirm": true}),
    )
    .await
    .unwrap();
    assert!(
        text(&deleted).starts_with("✅ 세션 삭제 완료"),
        "{}",
        text(&deleted)
    );
    client.cancel().await.unwrap();

    let journal = setup.gateway.dir.path().join("journal");
    let deadline = Instant::now() + Duration::from_secs(10);
    let outcomes = loop {
        let outcomes: Vec<_> = journal_events(&journal)
            .iter()
            .filter_map(trail::outcome)
            .collect();
        if outcomes.len() >= 2 || Instant::now() > deadline {
            break outcomes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<(i32, &str)> = outcomes
        .iter()
        .map(|o| (o.kind, o.message.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                OutcomeKind::ToolError as i32,
                "❌ 세션 삭제시에는 confirm=true가 필요합니다."
            ),
            (OutcomeKind::Ok as i32, ""),
        ]
    );
}
