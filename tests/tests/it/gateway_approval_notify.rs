//! Approval notifications: with `approval_webhook` set, a real HTTP receiver gets a
//! Slack-compatible message when a real call is held (before anyone decided it, naming the
//! agent, tool, targets, arguments digest, rule and the command that approves it) and another
//! after it is approved with the real `verdict approvals` CLI, in that order.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::approvals::{approvals, pending};
use verdict_tests::mcp::{call_tool, connect, work_memory_bin, HttpProcess};

const AGENT_KEY: &str = "notify-agent-key";
const ADMIN_TOKEN: &str = "notify-admin-token";
const POLICY: &str = r#"{"version": "1", "default": "allow", "rules": [
  {"id": "human-deletes", "match": {"tool": "session_manager", "arguments": {"action": "delete_session"}},
   "action": "require_approval", "timeout": 60}]}"#;

type Inbox = Arc<Mutex<Vec<Value>>>;

async fn record(State(inbox): State<Inbox>, Json(message): Json<Value>) -> &'static str {
    inbox.lock().unwrap().push(message);
    "ok"
}

/// A webhook receiver; returns its URL and what it received.
async fn receiver() -> (String, Inbox) {
    let inbox = Inbox::default();
    let app = Router::new()
        .route("/hook", post(record))
        .with_state(Arc::clone(&inbox));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, inbox)
}

async fn wait_messages(inbox: &Inbox, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let messages = inbox.lock().unwrap().clone();
        if messages.len() >= n {
            return messages;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{messages:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_call_is_announced_before_its_decision_and_the_decision_after() {
    let (url, inbox) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let config = format!(
        "policy = \"{}\"\napproval_webhook = {url:?}\n[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n[upstreams.memory]\ncommand = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nid = \"alice\"\napi_key_sha256 = \"{}\"\n",
        policy.display(),
        key_digest(AGENT_KEY),
        work_memory_bin().display(),
        key_digest(ADMIN_TOKEN)
    );
    let gateway = HttpProcess::gateway(&config).unwrap();
    let client = connect(&gateway.url(), AGENT_KEY).await;
    let call = tokio::spawn(async move {
        call_tool(
            &client,
            "session_manager",
            json!({"action": "delete_session", "session_id": "s1", "confirm": true}),
        )
        .await
        .unwrap()
    });
    let id = tokio::task::block_in_place(|| pending(&gateway.admin_url(), ADMIN_TOKEN, "s1"))
        ["approval_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Announced while the call is still held.
    let held = wait_messages(&inbox, 1).await;
    assert!(!call.is_finished(), "nobody decided yet");
    assert_eq!(held.len(), 1, "{held:#?}");
    let verdict = &held[0]["verdict"];
    assert_eq!(verdict["event"], "approval_requested");
    assert_eq!(verdict["approval_id"], id.as_str());
    assert_eq!(verdict["agent"], "agent-a");
    assert_eq!(verdict["tool"], "session_manager");
    assert_eq!(verdict["rule"], "human-deletes");
    assert_eq!(verdict["arguments_sha256"].as_str().unwrap().len(), 64);
    assert!(verdict["expires_unix_nanos"].as_i64().unwrap() > 0);
    assert_eq!(
        verdict["approve_command"],
        format!("verdict approvals approve {id}")
    );
    assert!(held[0]["text"].as_str().unwrap().contains(&id));

    let output = tokio::task::block_in_place(|| {
        approvals(&gateway.admin_url(), ADMIN_TOKEN, &["approve", &id])
    });
    assert!(output.status.success(), "{output:?}");
    call.await.unwrap();
    let messages = wait_messages(&inbox, 2).await;
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert_eq!(messages[0]["verdict"]["event"], "approval_requested");
    assert_eq!(messages[1]["verdict"]["event"], "approved");
    assert_eq!(messages[1]["verdict"]["approval_id"], id.as_str());
    assert_eq!(messages[1]["verdict"]["approver"], "alice");
}
