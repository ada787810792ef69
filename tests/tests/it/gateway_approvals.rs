//! Approvals end to end: a `require_approval` rule holds the real call; a human approves or
//! rejects it with the real `verdict approvals` CLI over the gateway's admin gRPC API, or it
//! expires; the agent gets the result or the reason; every step is a signed event naming the
//! approver and bound to the held call's arguments.

use serde_json::json;
use std::process::Output;
use verdict_proto::pb::DecisionKind;
use verdict_service::credentials::digest as key_digest;
use verdict_tests::approvals::pending;
use verdict_tests::mcp::{call_tool, connect, work_memory_bin, HttpProcess};
use verdict_tests::trail::{self, journal_events};

const AGENT_KEY: &str = "approvals-agent-key";
const ADMIN_TOKEN: &str = "approvals-admin-token";

const POLICY: &str = r#"{
  "version": "1",
  "default": "allow",
  "rules": [
    {"id": "quick-expiry", "match": {"tool": "session_manager", "arguments": {"action": "delete_session", "session_id": "s3"}},
     "action": "require_approval", "timeout": 1},
    {"id": "human-deletes", "match": {"tool": "session_manager", "arguments": {"action": "delete_session"}},
     "action": "require_approval", "timeout": 60}
  ]
}"#;

fn approvals(gateway: &HttpProcess, token: &str, args: &[&str]) -> Output {
    verdict_tests::approvals::approvals(&gateway.admin_url(), token, args)
}

/// Waits until exactly one call is pending for `session_id` and returns its approval id.
fn wait_pending(gateway: &HttpProcess, session_id: &str) -> String {
    let one = pending(&gateway.admin_url(), ADMIN_TOKEN, session_id);
    assert_eq!(one["agent"], "agent-a");
    assert_eq!(one["rule"], "human-deletes");
    one["approval_id"].as_str().unwrap().to_owned()
}

fn text(result: &rmcp::model::CallToolResult) -> String {
    serde_json::to_value(result).unwrap()["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_calls_are_approved_rejected_or_expire_and_every_step_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let config = format!(
        "policy = \"{}\"\n[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n[upstreams.memory]\ncommand = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nid = \"alice\"\napi_key_sha256 = \"{}\"\n",
        policy.display(),
        key_digest(AGENT_KEY),
        work_memory_bin().display(),
        key_digest(ADMIN_TOKEN)
    );
    let gateway = HttpProcess::gateway(&config).unwrap();
    let client = std::sync::Arc::new(connect(&gateway.url(), AGENT_KEY).await);
    let held = |session: &'static str| {
        let client = std::sync::Arc::clone(&client);
        tokio::spawn(async move {
            call_tool(
                &client,
                "session_manager",
                json!({"action": "delete_session", "session_id": session, "confirm": true}),
            )
            .await
            .unwrap()
        })
    };

    // Approved: the call reaches the upstream.
    let approved_call = held("s1");
    let s1 = tokio::task::block_in_place(|| wait_pending(&gateway, "s1"));
    let denied = approvals(&gateway, "wrong-token", &["approve", &s1]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("admin token"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let output =
        tokio::task::block_in_place(|| approvals(&gateway, ADMIN_TOKEN, &["approve", &s1]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result = approved_call.await.unwrap();
    assert!(
        text(&result).starts_with("✅ 세션 삭제 완료"),
        "{}",
        text(&result)
    );
    let replay = approvals(&gateway, ADMIN_TOKEN, &["approve", &s1]);
    assert!(!replay.status.success(), "an approval is used once");
    assert!(String::from_utf8_lossy(&replay.stderr).contains("no pending approval"));

    // Rejected: the agent reads who refused and why.
    let rejected_call = held("s2");
    let s2 = tokio::task::block_in_place(|| wait_pending(&gateway, "s2"));
    let output = tokio::task::block_in_place(|| {
        approvals(
            &gateway,
            ADMIN_TOKEN,
            &["reject", &s2, "--reason", "세션은 사람이 삭제합니다"],
        )
    });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result = rejected_call.await.unwrap();
    assert!(result.is_error.unwrap_or(false));
    let refusal = text(&result);
    assert!(
        refusal.starts_with(
            "[approval rejected] rule human-deletes by alice: 세션은 사람이 삭제합니다"
        ),
        "{refusal}"
    );

    // Expired: nobody decided within the rule's timeout.
    let result = held("s3").await.unwrap();
    assert!(
        text(&result).starts_with("[approval expired] rule quick-expiry: no decision within 1 s"),
        "{}",
        text(&result)
    );

    let events = journal_events(&gateway.journal_dir());
    assert!(trail::findings(&events, &gateway.public_key()).is_empty());
    let steps: Vec<_> = events
        .iter()
        .filter_map(trail::decision)
        .filter(|d| d.tool == "session_manager")
        .collect();
    let kinds: Vec<_> = steps
        .iter()
        .map(|d| DecisionKind::try_from(d.decision).unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            DecisionKind::ApprovalRequested,
            DecisionKind::Approved,
            DecisionKind::ApprovalRequested,
            DecisionKind::Rejected,
            DecisionKind::ApprovalRequested,
            DecisionKind::ApprovalExpired,
        ]
    );
    for pair in steps.chunks(2) {
        assert_eq!(pair[0].approval_id, pair[1].approval_id);
        assert_eq!(
            pair[0].arguments_sha256, pair[1].arguments_sha256,
            "bound to the held call"
        );
        assert_eq!(pair[0].policy_sha256, pair[1].policy_sha256);
    }
    assert_eq!(steps[0].approval_id, s1);
    assert_eq!(
        (steps[1].approver.as_str(), steps[3].approver.as_str()),
        ("alice", "alice")
    );
    assert_eq!(steps[5].approver, "");
}
