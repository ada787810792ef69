//! Several desktop copies at once: `verdict-gateway --stdio --connect URL` relays, started at the
//! same moment, each as another agent (handshake era and 2026-07-28), each trying a delete the
//! policy denies, through one HTTP gateway → tansu → auditor → ClickHouse → query service. The
//! trail has zero findings and WhoTried names every agent. Also: the gateway's own notifications
//! reach each relay's client over the session's GET stream, a refused key and an unreachable
//! gateway are JSON-RPC errors, and every relay exits 0 on stdin EOF or SIGTERM.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use verdict_proto::pb::{self, DecisionKind};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::auditor::{AuditorProcess, AuditorSetup};
use verdict_tests::mcp::{gateway_bin, work_memory_bin, HttpProcess};
use verdict_tests::query::{
    findings as query_findings, verify_whole_chain, who_tried, QueryService,
};
use verdict_tests::stdio::StdioProcess;
use verdict_tests::{Broker, ClickHouse};

const CHAIN: &str = "relay-gateway";
const AGENTS: [&str; 4] = ["desk-a", "desk-b", "desk-c", "desk-d"];
const POLICY: &str = r#"{"version": "1", "default": "allow", "rules": [
  {"id": "no-delete", "match": {"tool": "session_manager", "arguments": {"action": "delete_session"}},
   "action": "deny", "reason": "sessions are deleted by humans only"}]}"#;

fn agent_key(agent: &str) -> String {
    format!("relay-key-{agent}")
}

fn gateway_config(policy: &Path, brokers: &str) -> String {
    let mut text = format!("policy = {:?}\n", policy.display().to_string());
    for agent in AGENTS {
        text += &format!(
            "[[agents]]\nid = \"{agent}\"\napi_key_sha256 = \"{}\"\n",
            key_digest(&agent_key(agent))
        );
    }
    text + &format!(
        "[upstreams.memory]\ncommand = {:?}\n[audit]\nchain_id = \"{CHAIN}\"\n[audit.kafka]\nbrokers = \"{brokers}\"\n",
        work_memory_bin().display().to_string()
    )
}

/// `verdict-gateway --stdio --connect URL` with `key` in the environment.
fn relay(url: &str, key: &str, log: &Path) -> StdioProcess {
    let mut command = tokio::process::Command::new(gateway_bin());
    command
        .args(["--stdio", "--connect", url])
        .env("VERDICT_API_KEY", key)
        .env_remove("VERDICT_GATEWAY_CONFIG")
        .env("RUST_LOG", "info");
    StdioProcess::spawn(command, log)
}

fn stateless_meta(agent: &str) -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": format!("desktop-{agent}"), "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}})
}

/// One desktop copy's session: the handshake (even copies) or 2026-07-28 requests (odd ones),
/// then a delete the policy denies.
async fn try_delete(relay: &mut StdioProcess, index: usize, agent: &str) {
    let mut params = json!({"name": "session_manager",
        "arguments": {"action": "delete_session", "session_id": format!("s-{agent}"), "confirm": true}});
    if index.is_multiple_of(2) {
        let init = relay.initialize("2025-06-18").await;
        assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    } else {
        params["_meta"] = stateless_meta(agent);
    }
    let reply = relay.request(1, "tools/call", params).await;
    let text = reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.starts_with("[policy denied] rule no-delete"),
        "{agent}: {reply}"
    );
}

/// Rewrites the policy (same rules, new bytes) until every handshake-era relay has been told
/// `notifications/tools/list_changed` over its GET stream; a rewrite can precede a stream's
/// opening, so it is repeated rather than timed.
async fn list_changes_reach(relays: &mut [StdioProcess], policy: &Path) {
    let mut waiting: Vec<usize> = (0..relays.len()).step_by(2).collect();
    for attempt in 1..=20 {
        std::fs::write(policy, format!("{POLICY}{}", " ".repeat(attempt))).unwrap();
        let mut still = Vec::new();
        for index in waiting {
            let got = tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    let message = relays[index].recv().await;
                    if message["method"] == "notifications/tools/list_changed" {
                        return;
                    }
                }
            })
            .await;
            if got.is_err() {
                still.push(index);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            return;
        }
    }
    panic!("relays {waiting:?} never got notifications/tools/list_changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_relays_at_once_leave_one_clean_trail_that_names_every_agent() {
    let broker = Broker::start().unwrap();
    broker.create_topic("verdict.events", 3).await.unwrap();
    let clickhouse = ClickHouse::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let gateway = HttpProcess::gateway(&gateway_config(&policy, &broker.bootstrap())).unwrap();
    let _auditor = AuditorProcess::start(&AuditorSetup::for_gateway(
        broker.bootstrap(),
        clickhouse.url(),
        gateway.public_key(),
        CHAIN,
    ))
    .unwrap();
    let query = QueryService::start(&clickhouse.url(), Some(&gateway.public_key()), "").unwrap();

    // All copies launched at the same moment, then driven concurrently.
    let relays: Vec<StdioProcess> = AGENTS
        .iter()
        .map(|agent| {
            relay(
                &gateway.url(),
                &agent_key(agent),
                &dir.path().join(format!("{agent}.log")),
            )
        })
        .collect();
    let sessions = relays.into_iter().enumerate().map(|(index, mut relay)| {
        tokio::spawn(async move {
            try_delete(&mut relay, index, AGENTS[index]).await;
            relay
        })
    });
    let mut relays: Vec<StdioProcess> = futures_util::future::join_all(sessions)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    list_changes_reach(&mut relays, &policy).await;
    for (index, relay) in relays.iter_mut().enumerate() {
        match index % 2 {
            0 => relay.close_stdin(),
            _ => relay.signal("TERM"),
        }
        let status = relay.wait().await;
        assert!(
            status.success(),
            "{}: {status:?}\n{}",
            AGENTS[index],
            relay.log()
        );
        assert!(
            !relay.log().contains(&agent_key(AGENTS[index])),
            "the key is never logged"
        );
    }

    // A refused key and an unreachable gateway are JSON-RPC errors for the request.
    let mut stranger = relay(
        &gateway.url(),
        "not-a-key",
        &dir.path().join("stranger.log"),
    );
    let refused = stranger.initialize("2025-06-18").await;
    assert_eq!(refused["error"]["code"], -32001, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("VERDICT_API_KEY (HTTP 401"));
    let closed = format!(
        "http://127.0.0.1:{}/mcp",
        verdict_tests::process::free_port()
    );
    let mut lost = relay(&closed, &agent_key("desk-a"), &dir.path().join("lost.log"));
    let unreachable = lost.initialize("2025-06-18").await;
    assert_eq!(unreachable["error"]["code"], -32000, "{unreachable}");
    assert!(unreachable["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unreachable"));

    // The answer: every agent's denied delete, verified, and no finding.
    let filter = pb::EventFilter {
        tools: vec!["session_manager".into()],
        arguments: vec![pb::ArgumentMatch {
            key: "action".into(),
            value: "delete_session".into(),
        }],
        ..Default::default()
    };
    let mut client = query.client().await;
    let start = Instant::now();
    let attempts = loop {
        let answer = who_tried(&mut client, filter.clone(), false, 0).await;
        if answer.attempts.len() >= AGENTS.len() {
            break answer.attempts;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not queryable within 60 s: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let named: BTreeSet<_> = attempts
        .iter()
        .map(|a| {
            assert_eq!(
                (a.chain_id.as_str(), a.verification.as_str()),
                (CHAIN, "verified")
            );
            assert_eq!(
                DecisionKind::try_from(a.decision).unwrap(),
                DecisionKind::Deny
            );
            (a.agent_id.clone(), a.targets[0].value.clone())
        })
        .collect();
    let expected: BTreeSet<_> = AGENTS
        .iter()
        .map(|a| (a.to_string(), format!("s-{a}")))
        .collect();
    assert_eq!(named, expected);
    let findings = query_findings(&mut client).await;
    assert!(findings.is_empty(), "no integrity findings: {findings:?}");
    let report = verify_whole_chain(&mut client, CHAIN).await;
    assert!(report.ok && report.breaks.is_empty(), "{report:?}");
}
