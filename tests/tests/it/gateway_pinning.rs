//! Tool pinning against a rug pull, end to end: the sample server changes `session_manager`'s
//! description at run time (SIGUSR1) while the gateway's policy pins it. Under `hold` the call
//! waits for a human, under `on_change_deny` (after a gateway restart, which compares with the
//! lock file) it is refused naming the change, and once `verdict policy pin` accepts the new
//! definition it goes through again. Every step is a verified event in WhoTried, each change and
//! each refusal a finding; the acceptance itself is the gateway's `PolicyLoaded` reload naming the
//! re-pinned tool (found by Search, between the refusal and the call it let through) and a
//! `tool_repinned` finding. On a gateway without pinning the poisoned tool is simply forwarded.

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use verdict_proto::pb::{self, DecisionKind};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::approvals::{approvals, pending};
use verdict_tests::auditor::{AuditorProcess, AuditorSetup};
use verdict_tests::bins::cargo_bin;
use verdict_tests::mcp::{call_tool, connect, HttpProcess};
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::query::{authed, findings, who_tried, QueryService, TOKEN};
use verdict_tests::trail::{decision, journal_events, outcome};
use verdict_tests::{wait_until, Broker, ClickHouse};

const AGENT_KEY: &str = "pinning-agent-key";
const ADMIN_TOKEN: &str = "pinning-admin-token";
const CHAIN: &str = "pinning-gateway";
const RUG_PULL_MARK: &str = "<IMPORTANT>";

fn policy(pin_action: &str) -> String {
    format!(r#"{{"version": "1", "default": "allow", "pin": {{"memory/*": "{pin_action}"}}}}"#)
}

fn gateway_config(policy: &Path, upstream: &HttpProcess, brokers: Option<&str>) -> String {
    let kafka = brokers.map_or(String::new(), |b| {
        format!("[audit.kafka]\nbrokers = \"{b}\"\n")
    });
    format!(
        "policy = {:?}\n[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n\
         [upstreams.memory]\nurl = \"{}\"\n[audit]\nchain_id = \"{CHAIN}\"\n{kafka}\
         [admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nid = \"security-lead\"\napi_key_sha256 = \"{}\"\n",
        policy.display().to_string(),
        key_digest(AGENT_KEY),
        upstream.url(),
        key_digest(ADMIN_TOKEN)
    )
}

/// `verdict policy pin POLICY --gateway-config CONFIG`, which must succeed: its stdout.
fn pin(policy: &Path, config: &Path) -> String {
    let output = Command::new(cargo_bin("verdict"))
        .args(["policy", "pin"])
        .arg(policy)
        .arg("--gateway-config")
        .arg(config)
        .output_within(COMMAND_TIMEOUT)
        .expect("running verdict policy pin");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn text(result: &rmcp::model::CallToolResult) -> String {
    serde_json::to_value(result).unwrap()["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Lists tools until `session_manager`'s description shows the rug pull: the gateway's catalog
/// (refreshed by every `tools/list`) then has the changed definition.
async fn wait_rug_pulled(client: &rmcp::service::RunningService<rmcp::RoleClient, ()>) {
    let start = Instant::now();
    loop {
        let tools = client.list_all_tools().await.unwrap();
        let described = tools
            .iter()
            .find(|t| t.name == "session_manager")
            .and_then(|t| t.description.clone())
            .unwrap_or_default();
        if described.contains(RUG_PULL_MARK) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no rug pull seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A WhoTried step (decision, rule, target) the gateway took because a pinned tool changed.
fn is_pin_refusal(step: &(i32, String, String)) -> bool {
    let refusals = [
        DecisionKind::Deny as i32,
        DecisionKind::ApprovalRequested as i32,
    ];
    step.1 == "pin" && refusals.contains(&step.0)
}

fn set_active(session: &str) -> Value {
    json!({"action": "set_active", "session_id": session})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_tool_is_held_then_denied_until_re_pinned_and_every_step_is_a_finding() {
    let broker = Broker::start().unwrap();
    broker.create_topic("verdict.events", 1).await.unwrap();
    let clickhouse = ClickHouse::start().unwrap();
    let upstream = HttpProcess::work_memory(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.json");
    std::fs::write(&policy_path, policy("hold")).unwrap();
    let config_text = gateway_config(&policy_path, &upstream, Some(&broker.bootstrap()));
    let config = verdict_tests::mcp::write_config(dir.path(), &config_text);

    // Review and pin the tools as they are.
    let pinned = pin(&policy_path, &config);
    assert!(pinned.contains("+ memory/session_manager"), "{pinned}");
    let mut gateway = HttpProcess::gateway(&config_text).unwrap();
    let _auditor = AuditorProcess::start(&AuditorSetup::for_gateway(
        broker.bootstrap(),
        clickhouse.url(),
        gateway.public_key(),
        CHAIN,
    ))
    .unwrap();
    let query = QueryService::start(&clickhouse.url(), Some(&gateway.public_key()), "").unwrap();
    let client = std::sync::Arc::new(connect(&gateway.url(), AGENT_KEY).await);
    let reviewed = call_tool(&client, "session_manager", set_active("s1"))
        .await
        .unwrap();
    assert!(!reviewed.is_error.unwrap_or(false), "{}", text(&reviewed));

    // The rug pull, announced with tools/list_changed: under `hold` the call waits for a human.
    upstream.rug_pull();
    wait_rug_pulled(&client).await;
    let held = {
        let client = std::sync::Arc::clone(&client);
        tokio::spawn(async move {
            call_tool(&client, "session_manager", set_active("s2"))
                .await
                .unwrap()
        })
    };
    let pending = tokio::task::block_in_place(|| pending(&gateway.admin_url(), ADMIN_TOKEN, "s2"));
    assert_eq!(pending["rule"], "pin");
    let approval_id = pending["approval_id"].as_str().unwrap().to_owned();
    let approved = tokio::task::block_in_place(|| {
        approvals(
            &gateway.admin_url(),
            ADMIN_TOKEN,
            &["approve", &approval_id],
        )
    });
    assert!(approved.status.success(), "{approved:?}");
    let result = held.await.unwrap();
    assert!(!result.is_error.unwrap_or(false), "{}", text(&result));

    // A restart with the changed server and `on_change_deny`: refused, naming the change.
    drop(client);
    std::fs::write(&policy_path, policy("on_change_deny")).unwrap();
    gateway.restart_gateway().unwrap();
    let client = connect(&gateway.url(), AGENT_KEY).await;
    let denied = call_tool(&client, "session_manager", set_active("s3"))
        .await
        .unwrap();
    assert!(denied.is_error.unwrap_or(false));
    assert!(
        text(&denied).starts_with(
            "[policy denied] rule pin: tool memory/session_manager changed since it was pinned (description)"
        ),
        "{}",
        text(&denied)
    );

    // Re-pinned after review: the diff shows the new description, and the call goes through.
    let repinned = pin(&policy_path, &config);
    assert!(repinned.contains("~ memory/session_manager"), "{repinned}");
    assert!(
        repinned.contains(RUG_PULL_MARK),
        "the diff shows the change: {repinned}"
    );
    let start = Instant::now();
    let allowed = loop {
        let result = call_tool(&client, "session_manager", set_active("s1"))
            .await
            .unwrap();
        if !text(&result).contains("rule pin") {
            break result;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "lock file not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!allowed.is_error.unwrap_or(false), "{}", text(&allowed));

    // The trail: each step in WhoTried, the changes and the refusals as findings.
    let mut query_client = query.client().await;
    let filter = pb::EventFilter {
        tools: vec!["session_manager".into()],
        ..Default::default()
    };
    let start = Instant::now();
    let (steps, found) = loop {
        let attempts = who_tried(&mut query_client, filter.clone(), false, 0)
            .await
            .attempts;
        let mut steps: Vec<(i32, String, String)> = attempts
            .iter()
            .map(|a| {
                let target = a
                    .targets
                    .first()
                    .map(|t| t.value.clone())
                    .unwrap_or_default();
                (a.decision, a.rule_id.clone(), target)
            })
            .collect();
        steps.sort();
        let found: Vec<(String, String)> = findings(&mut query_client)
            .await
            .into_iter()
            .map(|f| (f.kind, f.detail))
            .collect();
        let pin_refusals = steps.iter().filter(|s| is_pin_refusal(s)).count();
        let kinds = |kind: &str| found.iter().filter(|f| f.0 == kind).count();
        let allowed = steps
            .iter()
            .filter(|s| s.0 == DecisionKind::Allow as i32)
            .count();
        if allowed == 2
            && pin_refusals >= 2
            && kinds("tool_pin") == pin_refusals
            && kinds("tool_changed") >= 2
            && kinds("tool_repinned") == 1
        {
            break (steps, found);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "trail incomplete: {steps:?} {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let s = |t: &str| t.to_owned();
    let allow = DecisionKind::Allow as i32;
    assert!(steps.contains(&(allow, s("default"), s("s1"))), "{steps:?}");
    let held = (DecisionKind::ApprovalRequested as i32, s("pin"), s("s2"));
    assert!(steps.contains(&held), "{steps:?}");
    let approved = (DecisionKind::Approved as i32, s("pin"), s("s2"));
    assert!(steps.contains(&approved), "{steps:?}");
    let denied = (DecisionKind::Deny as i32, s("pin"), s("s3"));
    assert!(steps.contains(&denied), "{steps:?}");
    assert_eq!(
        found.iter().filter(|f| f.0 == "tool_changed").count(),
        2,
        "the rug pull at run time and again at restart (against the lock file): {found:?}"
    );
    assert!(found.iter().any(|f| f.0 == "tool_changed"
        && f.1 == "upstream memory: session_manager changed (description)"));

    // The acceptance: the reload that re-pinned the tool, between the refusal and the call it let
    // through, pinning the definition the rug pull introduced.
    let repin = found.iter().find(|f| f.0 == "tool_repinned").unwrap();
    assert!(repin.1.contains("memory/session_manager"), "{repin:?}");
    let attempts = who_tried(&mut query_client, filter, false, 0)
        .await
        .attempts;
    let last_seq = |decision: DecisionKind, session: &str| {
        attempts
            .iter()
            .filter(|a| a.decision == decision as i32)
            .filter(|a| a.targets.first().is_some_and(|t| t.value == session))
            .map(|a| a.seq)
            .max()
            .unwrap()
    };
    let (denied_at, allowed_at) = (
        last_seq(DecisionKind::Deny, "s3"),
        last_seq(DecisionKind::Allow, "s1"),
    );
    let repinned = pb::EventFilter {
        targets: vec![pb::TargetMatch {
            name: "repinned".into(),
            value: "memory/session_manager".into(),
        }],
        ..Default::default()
    };
    let request = pb::SearchRequest {
        filter: Some(repinned),
        ..Default::default()
    };
    let found = query_client
        .search(authed(request, TOKEN))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(found.len(), 1, "{found:?}");
    let seq = found[0].attempt.as_ref().unwrap().seq;
    assert!(
        denied_at < seq && seq < allowed_at,
        "{denied_at} < {seq} < {allowed_at}"
    );
    let envelope = found[0].envelope.as_ref().unwrap();
    let Some(pb::event_body::Kind::PolicyLoaded(loaded)) =
        <pb::EventBody as prost::Message>::decode(envelope.body.as_slice())
            .unwrap()
            .kind
    else {
        panic!("not a policy load")
    };
    assert_eq!(loaded.reason, "reload");
    assert_eq!(loaded.repinned, ["memory/session_manager"]);
    let changed = journal_events(&gateway.journal_dir())
        .iter()
        .filter_map(|e| match e.decode_body().unwrap().kind {
            Some(pb::event_body::Kind::ToolCatalog(c)) => Some(c),
            _ => None,
        })
        .flat_map(|c| c.tools)
        .filter(|t| t.change == pb::ToolChange::Changed as i32)
        .map(|t| t.sha256)
        .next_back()
        .unwrap();
    let pinned = loaded
        .pins
        .iter()
        .find(|p| p.tool == "memory/session_manager")
        .unwrap();
    assert_eq!(
        pinned.sha256, changed,
        "the rug-pulled definition is the one pinned now"
    );
}

/// The attack on its own: a server rug-pulls a pinned tool and the agent calls it. With pinning
/// the call is refused and never reaches the server (no outcome is recorded for it); a gateway
/// without pinning (as before it existed) forwards it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rug_pulled_tool_is_never_forwarded() {
    let upstream = HttpProcess::work_memory(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.json");
    std::fs::write(&policy_path, policy("on_change_deny")).unwrap();
    let config_text = gateway_config(&policy_path, &upstream, None);
    let config = verdict_tests::mcp::write_config(dir.path(), &config_text);
    pin(&policy_path, &config);
    let gateway = HttpProcess::gateway(&config_text).unwrap();
    let client = connect(&gateway.url(), AGENT_KEY).await;
    upstream.rug_pull();
    wait_rug_pulled(&client).await;
    let result = call_tool(&client, "session_manager", set_active("s2"))
        .await
        .unwrap();
    assert!(
        result.is_error.unwrap_or(false),
        "forwarded: {}",
        text(&result)
    );

    // CI's view: the lock file is out of date, and the change is shown, not accepted.
    let check = Command::new(cargo_bin("verdict"))
        .args(["policy", "pin", "--check"])
        .arg(&policy_path)
        .arg("--gateway-config")
        .arg(&config)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    let shown = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("~ memory/session_manager") && shown.contains(RUG_PULL_MARK),
        "{shown}"
    );

    let events = journal_events(&gateway.journal_dir());
    let refusal = events
        .iter()
        .find(|e| decision(e).is_some_and(|d| d.tool == "session_manager"))
        .expect("the call's decision");
    let refused = decision(refusal).unwrap();
    assert_eq!(
        (refused.decision, refused.rule_id.as_str()),
        (DecisionKind::Deny as i32, "pin")
    );
    assert!(
        !events
            .iter()
            .filter_map(outcome)
            .any(|o| o.decision_seq == refusal.seq),
        "no outcome: the call never reached the server"
    );
    let catalogs: Vec<pb::ToolCatalog> = events
        .iter()
        .filter_map(|e| match e.decode_body().unwrap().kind {
            Some(pb::event_body::Kind::ToolCatalog(c)) => Some(c),
            _ => None,
        })
        .collect();
    let change = catalogs
        .iter()
        .flat_map(|c| &c.tools)
        .find(|t| t.change == pb::ToolChange::Changed as i32)
        .expect("the change is recorded");
    assert_eq!(
        (change.name.as_str(), change.changed_fields.as_slice()),
        ("session_manager", ["description".to_owned()].as_slice())
    );
    assert_ne!(change.sha256, change.pinned_sha256);

    // The same poisoned tool behind a gateway without pinning (what the gateway did before):
    // the call is forwarded and the server acts on it.
    let unpinned_dir = tempfile::tempdir().unwrap();
    let unpinned_policy = unpinned_dir.path().join("policy.json");
    std::fs::write(&unpinned_policy, r#"{"version": "1", "default": "allow"}"#).unwrap();
    let unpinned =
        HttpProcess::gateway(&gateway_config(&unpinned_policy, &upstream, None)).unwrap();
    let client = connect(&unpinned.url(), AGENT_KEY).await;
    wait_rug_pulled(&client).await;
    let forwarded = call_tool(&client, "session_manager", set_active("s2"))
        .await
        .unwrap();
    assert!(!forwarded.is_error.unwrap_or(false), "{}", text(&forwarded));
    // The outcome is queued behind the reply (the reply does not wait for the journal).
    wait_until("the forwarded call's outcome is journaled", || {
        journal_events(&unpinned.journal_dir())
            .iter()
            .filter_map(outcome)
            .any(|o| o.kind == pb::OutcomeKind::Ok as i32)
    })
    .await;
}
