//! Key rotation through a real gateway: restarted with a new `[audit] key` and the old one as
//! `previous_key`, it hands its chain over with a `KeyRotation` signed by the old key. An auditor,
//! a query service and `verdict verify` that trust only the old key verify the whole chain, also
//! an auditor restarted after the hand-over (it re-learns the rotation from ClickHouse) and a
//! VerifyChain that starts after it. A thief holding the old key who appends to the chain after
//! the hand-over is a `retired_key` finding: before rotations existed, that event verified.

use std::process::Command;
use std::time::{Duration, Instant};
use verdict_proto::pb;
use verdict_proto::{ChainWriter, SecretKey};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::auditor::{count, findings, produce, producer, AuditorProcess, AuditorSetup};
use verdict_tests::bins::cargo_bin;
use verdict_tests::chains::{body, key_in};
use verdict_tests::mcp::{add_notes, work_memory_bin, HttpProcess};
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::query::{authed, QueryService, TOKEN};
use verdict_tests::trail::journal_events;
use verdict_tests::{Broker, ClickHouse};

const TOPIC: &str = "verdict.events";
const CHAIN: &str = "rotating-gw";
const AGENT_KEY: &str = "rotation-agent-key";

fn config(brokers: &str, audit: &str) -> String {
    format!(
        "[[agents]]\nid = \"agent-r\"\napi_key_sha256 = \"{}\"\n\
         [upstreams.memory]\ncommand = {:?}\n\
         [audit]\nchain_id = \"{CHAIN}\"\ncheckpoint_secs = 3600\n{audit}\
         [audit.kafka]\nbrokers = \"{brokers}\"\n",
        key_digest(AGENT_KEY),
        work_memory_bin().display().to_string(),
    )
}

/// Waits until ClickHouse holds `seq` events of the chain.
async fn stored(clickhouse: &ClickHouse, seq: u64) {
    let sql = format!("SELECT count() FROM events FINAL WHERE chain_id = '{CHAIN}'");
    let started = Instant::now();
    while count(&clickhouse.client(), &sql).await < seq {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{seq} events not stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_gateway_key_verifies_everywhere_and_the_retired_key_is_a_finding() {
    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    broker.create_topic(TOPIC, 1).await.unwrap();
    let mut gateway = HttpProcess::gateway(&config(&broker.bootstrap(), "")).unwrap();
    let old_public = gateway.public_key();
    let setup = AuditorSetup {
        brokers: broker.bootstrap(),
        topic: TOPIC.into(),
        group: "rotation".into(),
        clickhouse_url: clickhouse.url(),
        keys: vec![(old_public.clone(), Some(vec![CHAIN.into()]))],
        max_events: 50,
    };
    let mut auditor = AuditorProcess::start(&setup).unwrap();
    add_notes(&gateway.url(), AGENT_KEY, "k", 5).await;
    gateway.terminate();

    // The new key; the old one hands the chain over at the next start.
    let (new_key, _) = key_in(gateway.dir.path(), "new");
    let rotate = "key = \"new/verdict.key\"\nprevious_key = \"keys/verdict.key\"\n";
    std::fs::write(
        gateway.dir.path().join("gateway.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\n{}",
            config(&broker.bootstrap(), rotate)
        ),
    )
    .unwrap();
    gateway.restart_gateway().unwrap();
    add_notes(&gateway.url(), AGENT_KEY, "k", 5).await;
    gateway.terminate();
    let events = journal_events(&gateway.journal_dir());
    let rotation = events
        .iter()
        .find(|e| {
            matches!(
                e.decode_body().unwrap().kind,
                Some(pb::event_body::Kind::KeyRotation(_))
            )
        })
        .expect("a key rotation in the journal")
        .clone();
    let old_id = verdict_proto::PublicKey::read_pem_file(&old_public)
        .unwrap()
        .key_id()
        .to_owned();
    assert_eq!(rotation.key_id, old_id, "signed by the old key");
    assert!(events
        .iter()
        .filter(|e| e.seq > rotation.seq)
        .all(|e| e.key_id == new_key.public().key_id()));

    // An auditor restarted after the hand-over re-learns it from its stored row.
    stored(&clickhouse, events.last().unwrap().seq).await;
    auditor.kill();
    let _auditor = AuditorProcess::start(&setup).unwrap();
    gateway.restart_gateway().unwrap();
    add_notes(&gateway.url(), AGENT_KEY, "k", 3).await;
    gateway.terminate();
    let events = journal_events(&gateway.journal_dir());
    let last = events.last().unwrap().clone();
    stored(&clickhouse, last.seq).await;
    let client = clickhouse.client();
    assert_eq!(
        findings(&client).await,
        vec![],
        "the rotated chain verifies"
    );
    let rotations = count(
        &client,
        &format!(
            "SELECT count() FROM events FINAL WHERE kind = 'key_rotation' \
             AND has(target_values, '{}')",
            new_key.public().key_id()
        ),
    )
    .await;
    assert_eq!(rotations, 1);

    // VerifyChain from after the rotation, and `verdict verify` offline, trusting the old key.
    let query = QueryService::start(&clickhouse.url(), Some(&old_public), "").unwrap();
    let report = query
        .client()
        .await
        .verify_chain(authed(
            pb::VerifyChainRequest {
                chain_id: CHAIN.into(),
                from_seq: rotation.seq + 1,
                to_seq: 0,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(report.ok, "{:?}", report.breaks);
    let offline = Command::new(cargo_bin("verdict"))
        .args(["verify", "--journal"])
        .arg(gateway.journal_dir())
        .arg("--public-key")
        .arg(&old_public)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    assert!(
        offline.status.success(),
        "{}{}",
        String::from_utf8_lossy(&offline.stdout),
        String::from_utf8_lossy(&offline.stderr)
    );

    // The old key, stolen, continues the chain: retired for it since the hand-over.
    let stolen = SecretKey::read_pem_file(&old_public.with_file_name("verdict.key")).unwrap();
    let mut thief = ChainWriter::resume(CHAIN, stolen, last.seq, last.hash);
    let forged = thief.append(body(1));
    produce(
        &producer(&broker.bootstrap()),
        TOPIC,
        &[(CHAIN.into(), forged.encode())],
    )
    .await;
    let started = Instant::now();
    let finding = loop {
        if let Some(f) = findings(&client).await.into_iter().next() {
            break f;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "no finding");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (finding.kind.as_str(), finding.seq),
        ("retired_key", last.seq + 1)
    );
    assert!(finding
        .detail
        .contains(&format!("handed this chain over at seq {}", rotation.seq)));
}
