//! Against the REAL Work Memory server (moontmsai/work-memory-mcp at d9cdd18e43a8, the 18-tool
//! version with `session_manager`), when `VERDICT_REAL_WORK_MEMORY` names its built
//! `dist/index.js` (README, "The real Work Memory server"); skipped with a notice otherwise, so CI
//! stays green without Node. The sample server is a stand-in for this one: here the policies are
//! checked against the real thing — both delete actions denied through the gateway, `list_sessions`
//! allowed, its ❌ texts recorded as tool errors, and `policy check` catching `{"action": "delete"}`.

use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use verdict_proto::pb::OutcomeKind;
use verdict_service::credentials::digest as key_digest;
use verdict_tests::bins::cargo_bin;
use verdict_tests::mcp::{call_tool, connect, HttpProcess};
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::trail::{self, journal_events};

const ENV: &str = "VERDICT_REAL_WORK_MEMORY";
const KEY: &str = "real-work-memory-key";

fn real_server() -> Option<PathBuf> {
    match std::env::var_os(ENV) {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            eprintln!("skipped: set {ENV}=/path/to/work-memory-mcp/dist/index.js to run this test against the real Work Memory server");
            None
        }
    }
}

/// The `[upstreams.memory]` table for the real server, its data in `data`.
fn upstream(index_js: &std::path::Path, data: &std::path::Path) -> String {
    format!(
        "[upstreams.memory]\ncommand = \"node\"\nargs = [{:?}]\ncwd = {:?}\nenv = {{ WORK_MEMORY_DIR = {:?} }}\nfailure_text_prefixes = [\"❌\"]\n",
        index_js.display().to_string(),
        data.display().to_string(),
        data.display().to_string()
    )
}

fn text(result: &rmcp::model::CallToolResult) -> String {
    serde_json::to_value(result).unwrap()["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_server_behind_the_gateway() {
    let Some(index_js) = real_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"version": "1", "default": "deny", "rules": [
  {"id": "no-delete", "match": {"tool": "session_manager", "arguments": {"action": {"glob": "delete_session*"}}}, "action": "deny", "reason": "sessions are deleted by humans only"},
  {"id": "session-ops", "match": {"tool": "session_manager"}, "action": "allow"}]}"#,
    )
    .unwrap();
    let mut gateway = HttpProcess::gateway(&format!(
        "policy = {:?}\n[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n{}",
        policy.display().to_string(),
        key_digest(KEY),
        upstream(&index_js, &data)
    ))
    .unwrap();
    let client = connect(&gateway.url(), KEY).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 18, "the 18-tool version");

    for action in [
        "delete_session",
        "delete_session_cascade",
        "DELETE_SESSION ",
    ] {
        let arguments = json!({"action": action, "session_id": "s1", "confirm": true});
        let result = call_tool(&client, "session_manager", arguments)
            .await
            .unwrap();
        assert_eq!(
            text(&result),
            "[policy denied] rule no-delete: sessions are deleted by humans only",
            "{action}"
        );
    }
    let listed = call_tool(
        &client,
        "session_manager",
        json!({"action": "list_sessions"}),
    )
    .await
    .unwrap();
    assert!(
        text(&listed).starts_with("📋 세션 리스트"),
        "{}",
        text(&listed)
    );
    let unknown = call_tool(&client, "session_manager", json!({"action": "delete"}))
        .await
        .unwrap();
    assert!(text(&unknown).starts_with("❌"), "{}", text(&unknown));
    client.cancel().await.unwrap();
    gateway.terminate();

    let outcomes: Vec<i32> = journal_events(&gateway.journal_dir())
        .iter()
        .filter_map(trail::outcome)
        .map(|o| o.kind)
        .collect();
    assert_eq!(
        outcomes,
        [OutcomeKind::Ok as i32, OutcomeKind::ToolError as i32],
        "list_sessions ok; the real server's ❌ reply to an unknown action is a tool error"
    );
}

#[test]
fn policy_check_against_the_real_server_flags_a_rule_on_delete() {
    let Some(index_js) = real_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        "{\"version\": \"1\", \"default\": \"deny\", \"rules\": [\n  {\"id\": \"no-delete\", \"match\": {\"tool\": \"session_manager\", \"arguments\": {\"action\": \"delete\"}}, \"action\": \"deny\"}]}",
    )
    .unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, upstream(&index_js, &data)).unwrap();
    let out = Command::new(cargo_bin("verdict"))
        .args(["policy", "check"])
        .arg(&policy)
        .arg("--gateway-config")
        .arg(&config)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(":2: error: rule no-delete: argument action of session_manager: \"delete\" matches no allowed value (allowed: set_active, clear, enable_auto_link, disable_auto_link, delete_session, delete_session_cascade, list_sessions)"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (tool, risk) in [
        ("list_work_memories", "read"),
        ("batch_operations", "destructive"),
        ("restore_memory_version", "destructive"),
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{tool} ")))
            .unwrap_or_else(|| panic!("{tool} missing:\n{stdout}"));
        assert_eq!(row.split_whitespace().nth(2), Some(risk), "{row}");
    }
}
