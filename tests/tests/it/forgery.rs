//! The attack of an outsider who can write to the audit topic but holds no signing key: they read
//! the chain's head J and publish envelopes for seqs J+1..J+5 signed with a key of their own,
//! claiming harmless reads by another agent dated in the year 2100. Then the gateway's genuine
//! J+1..J+5 arrive: bob's five denied session deletes.
//!
//! Through the real topic, auditor, ClickHouse and query service, every read path must answer
//! with the genuine events — WhoTried (attempts and the grouped view), Search, Export and
//! VerifyChain — and the forgeries stay visible as `unknown_key` findings with their bytes.

use std::time::Duration;
use verdict_proto::pb::{self, DecisionKind as D, RiskClass};
use verdict_proto::{ChainWriter, SecretKey, SignedEvent};
use verdict_tests::audit_rows::Call;
use verdict_tests::auditor::{
    findings, produce, producer, temp_dir, wait_committed, AuditorProcess, AuditorSetup,
};
use verdict_tests::chains::{key_in, messages};
use verdict_tests::query::{authed, verify_whole_chain, who_tried, QueryService, TOKEN};
use verdict_tests::{Broker, ClickHouse};

const TOPIC: &str = "verdict.events";
const CHAIN: &str = "gw-victim";
/// 2023-11-14, the genuine events' time.
const T0: i64 = 1_700_000_000_000_000_000;
/// 2100-01-01, the forgeries' claimed time.
const T2100: i64 = 4_102_444_800_000_000_000;
const SEC: i64 = 1_000_000_000;
/// The genuine chain's head before the attack.
const J: u64 = 10;

fn call(at: i64, agent: &str, tool: &str, args: &str, session: &str, decision: D) -> Vec<u8> {
    let targets: &[(&str, &str)] = &[("session_id", session)];
    Call {
        time_unix_nanos: at,
        agent,
        session: "mcp-1",
        tool,
        risk: if tool == "session_manager" {
            RiskClass::Destructive
        } else {
            RiskClass::Read
        },
        arguments_json: args,
        targets,
        decision,
        reason: "sessions are deleted by humans only",
    }
    .body()
}

/// Seqs 1..=J of harmless reads, then bob's five denied deletes at J+1..=J+5.
fn genuine(key: &SecretKey) -> Vec<SignedEvent> {
    let mut writer = ChainWriter::new(CHAIN, key.clone());
    let mut events: Vec<SignedEvent> = (1..=J as i64)
        .map(|i| {
            writer.append(call(
                T0 + i * SEC,
                "alice-agent",
                "memory_read",
                r#"{"key":"k"}"#,
                "s0",
                D::Allow,
            ))
        })
        .collect();
    for i in 1..=5i64 {
        let session = format!("s{i}");
        let args =
            format!(r#"{{"action":"delete_session","session_id":"{session}","confirm":true}}"#);
        events.push(writer.append(call(
            T0 + (J as i64 + i) * SEC,
            "bob-agent",
            "session_manager",
            &args,
            &session,
            D::Deny,
        )));
    }
    events
}

/// Envelopes for J+1..=J+5 linked to the genuine head J but signed by the attacker's own key.
fn forgeries(head: &SignedEvent) -> Vec<SignedEvent> {
    let attacker = SecretKey::generate();
    let mut writer = ChainWriter::resume(CHAIN, attacker, head.seq, head.hash);
    (1..=5i64)
        .map(|i| {
            writer.append(call(
                T2100 + i * SEC,
                "carol-agent",
                "memory_read",
                r#"{"key":"harmless"}"#,
                &format!("s{i}"),
                D::Allow,
            ))
        })
        .collect()
}

fn bob_filter() -> pb::EventFilter {
    pb::EventFilter {
        agents: vec!["bob-agent".into()],
        tools: vec!["session_manager".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_forgery_at_future_seqs_hides_no_genuine_event() {
    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    broker.create_topic(TOPIC, 1).await.unwrap();
    let dir = temp_dir();
    let (key, public) = key_in(dir.path(), "gw");
    let setup = AuditorSetup::trusting(
        broker.bootstrap(),
        clickhouse.url(),
        "forgery",
        public.clone(),
        50,
    );
    let events = genuine(&key);
    let forged = forgeries(&events[J as usize - 1]);
    let _auditor = AuditorProcess::start(&setup).unwrap();
    let producer = producer(&broker.bootstrap());
    // The head, then the forgeries (seen and stored first), then the genuine tail.
    produce(&producer, TOPIC, &messages(&events[..J as usize])).await;
    produce(&producer, TOPIC, &messages(&forged)).await;
    wait_committed(
        &broker.bootstrap(),
        "forgery",
        TOPIC,
        1,
        15,
        Duration::from_secs(60),
    )
    .await;
    produce(&producer, TOPIC, &messages(&events[J as usize..])).await;
    wait_committed(
        &broker.bootstrap(),
        "forgery",
        TOPIC,
        1,
        20,
        Duration::from_secs(60),
    )
    .await;

    // The forgeries are findings with their bytes as evidence, and nothing else.
    let db = clickhouse.client();
    let found = findings(&db).await;
    let unknown: Vec<(u64, Vec<u8>)> = found
        .iter()
        .map(|f| {
            assert_eq!(
                (f.kind.as_str(), f.chain_id.as_str()),
                ("unknown_key", CHAIN)
            );
            (f.seq, f.evidence.clone())
        })
        .collect();
    let expected: Vec<(u64, Vec<u8>)> = forged.iter().map(|e| (e.seq, e.encode())).collect();
    assert_eq!(unknown, expected);

    let service = QueryService::start(&clickhouse.url(), Some(&public), "").unwrap();
    let mut client = service.client().await;
    let bob_seqs: Vec<u64> = (J + 1..=J + 5).rev().collect();

    // WhoTried: bob's five denied deletes, newest first, all verified; the grouped view counts
    // exactly those.
    let who = who_tried(&mut client, bob_filter(), true, 0).await;
    let attempts: Vec<(u64, &str, i32, &str)> = who
        .attempts
        .iter()
        .map(|a| {
            (
                a.seq,
                a.agent_id.as_str(),
                a.decision,
                a.verification.as_str(),
            )
        })
        .collect();
    let bob: Vec<(u64, &str, i32, &str)> = bob_seqs
        .iter()
        .map(|&seq| (seq, "bob-agent", D::Deny as i32, "verified"))
        .collect();
    assert_eq!(attempts, bob);
    let everyone = who_tried(&mut client, pb::EventFilter::default(), true, 0).await;
    assert!(
        everyone
            .attempts
            .iter()
            .all(|a| a.agent_id != "carol-agent"),
        "a forged attempt is answered: {:?}",
        everyone.attempts
    );
    type Group = (String, String, Vec<(i32, u64)>);
    let grouped: Vec<Group> = everyone
        .groups
        .iter()
        .map(|g| {
            let target = g.target.clone().unwrap_or_default().value;
            let counts = g.counts.iter().map(|c| (c.decision, c.count)).collect();
            (g.agent_id.clone(), target, counts)
        })
        .collect();
    let mut expected_groups = vec![(
        "alice-agent".to_owned(),
        "s0".to_owned(),
        vec![(D::Allow as i32, J)],
    )];
    for i in 1..=5 {
        expected_groups.push((
            "bob-agent".into(),
            format!("s{i}"),
            vec![(D::Deny as i32, 1)],
        ));
    }
    assert_eq!(grouped, expected_groups);

    // Search: the same five rows, with the genuine envelopes.
    let search = client
        .search(authed(
            pb::SearchRequest {
                filter: Some(bob_filter()),
                page_size: 100,
                page_token: String::new(),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let envelopes: Vec<(u64, Vec<u8>)> = search
        .events
        .iter()
        .map(|e| {
            let attempt = e.attempt.clone().unwrap();
            (attempt.seq, e.envelope.clone().unwrap().body)
        })
        .collect();
    let genuine_bodies: Vec<(u64, Vec<u8>)> = bob_seqs
        .iter()
        .map(|&seq| (seq, events[seq as usize - 1].body.clone()))
        .collect();
    assert_eq!(envelopes, genuine_bodies);

    // Export of the whole chain: seqs 1..=J+5 once each, every one the genuine hash.
    let mut stream = client
        .export(authed(
            pb::ExportRequest {
                filter: Some(pb::EventFilter {
                    chain_ids: vec![CHAIN.into()],
                    ..Default::default()
                }),
                format: pb::ExportFormat::Jsonl as i32,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut text = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        text.extend(chunk.data);
    }
    let exported: Vec<(u64, String)> = String::from_utf8(text)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let seq = v["seq"].as_u64()?;
            Some((seq, v["hash"].as_str().unwrap().to_owned()))
        })
        .collect();
    let all: Vec<(u64, String)> = events
        .iter()
        .map(|e| (e.seq, hex::encode(e.hash)))
        .collect();
    assert_eq!(exported, all);

    // VerifyChain over the stored envelopes: the whole chain verifies.
    let report = verify_whole_chain(&mut client, CHAIN).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(
        (report.first_seq, report.last_seq, report.events),
        (1, J + 5, J + 5)
    );
}
