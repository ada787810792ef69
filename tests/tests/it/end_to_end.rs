//! The whole product: rmcp agents → gateway (policy, approvals, journal) → tansu → auditor →
//! ClickHouse → query service, every part the real binary on real servers. Asserts the answer to
//! "who tried to delete which session", zero integrity findings, a clean chain verification, and
//! reports how long a decision takes to become queryable.

use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use verdict_proto::pb::gateway_admin_client::GatewayAdminClient;
use verdict_proto::pb::{self, DecisionKind, OutcomeKind};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::auditor::{AuditorProcess, AuditorSetup};
use verdict_tests::mcp::{call_tool, connect, work_memory_bin, HttpProcess};
use verdict_tests::query::{
    authed, findings as query_findings, verify_whole_chain, who_tried, QueryService,
};
use verdict_tests::{Broker, ClickHouse};

const ADMIN_TOKEN: &str = "e2e-admin-token";
const CHAIN: &str = "e2e-gateway";

fn agent_key(agent: &str) -> String {
    format!("e2e-key-{agent}")
}

fn gateway_config(policy: &std::path::Path, brokers: &str) -> String {
    let mut text = format!("policy = {:?}\n", policy.display().to_string());
    for agent in ["agent-a", "agent-b", "ops-agent"] {
        text += &format!(
            "[[agents]]\nid = \"{agent}\"\napi_key_sha256 = \"{}\"\n",
            key_digest(&agent_key(agent))
        );
    }
    text + &format!(
        "[upstreams.memory]\ncommand = {:?}\n[audit]\nchain_id = \"{CHAIN}\"\n[audit.kafka]\nbrokers = \"{brokers}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nid = \"security-lead\"\napi_key_sha256 = \"{}\"\n",
        work_memory_bin().display().to_string(),
        key_digest(ADMIN_TOKEN)
    )
}

fn delete_filter() -> pb::EventFilter {
    pb::EventFilter {
        tools: vec!["session_manager".into()],
        arguments: vec![pb::ArgumentMatch {
            key: "action".into(),
            value: "delete_session".into(),
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_answers_who_tried_to_delete_which_session() {
    let broker = Broker::start().unwrap();
    broker.create_topic("verdict.events", 3).await.unwrap();
    let clickhouse = ClickHouse::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo/policy.json"),
        &policy,
    )
    .unwrap();
    let gateway = HttpProcess::gateway(&gateway_config(&policy, &broker.bootstrap())).unwrap();
    let _auditor = AuditorProcess::start(&AuditorSetup::for_gateway(
        broker.bootstrap(),
        clickhouse.url(),
        gateway.public_key(),
        CHAIN,
    ))
    .unwrap();
    let query = QueryService::start(&clickhouse.url(), Some(&gateway.public_key()), "").unwrap();

    // The agents.
    let a = connect(&gateway.url(), &agent_key("agent-a")).await;
    let b = connect(&gateway.url(), &agent_key("agent-b")).await;
    let ops = std::sync::Arc::new(connect(&gateway.url(), &agent_key("ops-agent")).await);
    let delete =
        |session: &str| json!({"action": "delete_session", "session_id": session, "confirm": true});
    let refused = call_tool(&a, "session_manager", delete("s1"))
        .await
        .unwrap();
    assert!(refused.is_error.unwrap_or(false));
    call_tool(
        &a,
        "add_work_memory",
        json!({"project": "notes", "content": "세션 정리"}),
    )
    .await
    .unwrap();
    let refused = call_tool(&b, "session_manager", delete("s2"))
        .await
        .unwrap();
    assert!(refused.is_error.unwrap_or(false));
    let held = {
        let ops = std::sync::Arc::clone(&ops);
        tokio::spawn(async move {
            call_tool(&ops, "session_manager", delete("s3"))
                .await
                .unwrap()
        })
    };
    let mut admin = GatewayAdminClient::connect(gateway.admin_url())
        .await
        .unwrap();
    let approval_id = loop {
        let pending = admin
            .list_approvals(authed(pb::ListApprovalsRequest {}, ADMIN_TOKEN))
            .await
            .unwrap()
            .into_inner()
            .approvals;
        if let Some(first) = pending.first() {
            break first.approval_id.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    admin
        .decide_approval(authed(
            pb::DecideApprovalRequest {
                approval_id,
                approve: true,
                reason: "ticket OPS-42".into(),
                arguments_sha256: Vec::new(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    let approved = held.await.unwrap();
    let approved_text = serde_json::to_value(&approved).unwrap()["content"][0]["text"].clone();
    assert!(
        approved_text
            .as_str()
            .unwrap_or_default()
            .starts_with("✅ 세션 삭제 완료"),
        "the approved delete reached the upstream: {approved_text}"
    );
    let decided_at = Instant::now();

    // Until the answer is complete: the approved call's outcome is the last thing recorded.
    let mut client = query.client().await;
    let answer = loop {
        let answer = who_tried(&mut client, delete_filter(), true, 0).await;
        let complete = answer.attempts.len() == 4
            && answer
                .attempts
                .iter()
                .any(|a| a.outcome == OutcomeKind::Ok as i32);
        if complete {
            break answer;
        }
        assert!(
            decided_at.elapsed() < Duration::from_secs(60),
            "not queryable within 60 s: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "decision → visible in WhoTried: {} ms",
        decided_at.elapsed().as_millis()
    );

    let attempts: BTreeSet<_> = answer
        .attempts
        .iter()
        .map(|a| {
            assert_eq!(a.chain_id, CHAIN);
            assert_eq!(a.verification, "verified");
            let target = &a.targets[0];
            assert_eq!(target.name, "session_id");
            let decision = DecisionKind::try_from(a.decision).unwrap();
            (
                a.agent_id.clone(),
                target.value.clone(),
                decision,
                a.approver.clone(),
            )
        })
        .collect();
    let expected = BTreeSet::from([
        (
            "agent-a".to_owned(),
            "s1".to_owned(),
            DecisionKind::Deny,
            String::new(),
        ),
        (
            "agent-b".to_owned(),
            "s2".to_owned(),
            DecisionKind::Deny,
            String::new(),
        ),
        (
            "ops-agent".to_owned(),
            "s3".to_owned(),
            DecisionKind::ApprovalRequested,
            String::new(),
        ),
        (
            "ops-agent".to_owned(),
            "s3".to_owned(),
            DecisionKind::Approved,
            "security-lead".to_owned(),
        ),
    ]);
    assert_eq!(attempts, expected);
    let groups: BTreeSet<_> = answer
        .groups
        .iter()
        .map(|g| {
            let counts: Vec<_> = g.counts.iter().map(|c| (c.decision, c.count)).collect();
            (
                g.agent_id.clone(),
                g.target.clone().unwrap().value,
                counts.len(),
                counts.iter().map(|c| c.1).sum::<u64>(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        BTreeSet::from([
            ("agent-a".to_owned(), "s1".to_owned(), 1, 1),
            ("agent-b".to_owned(), "s2".to_owned(), 1, 1),
            ("ops-agent".to_owned(), "s3".to_owned(), 2, 2),
        ])
    );

    let findings = query_findings(&mut client).await;
    assert!(findings.is_empty(), "no integrity findings: {findings:?}");
    let report = verify_whole_chain(&mut client, CHAIN).await;
    assert!(report.ok && report.breaks.is_empty(), "{report:?}");
    assert_eq!(report.first_seq, 1);
}
