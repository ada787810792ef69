//! An untouched stream: 50,000 events from 3 chains through the real auditor binary, real tansu
//! and real ClickHouse, all stored as `verified`, no findings, nothing twice.

use std::time::Duration;
use verdict_tests::auditor::{
    count, findings, produce, producer, temp_dir, wait_committed, AuditorProcess, AuditorSetup,
};
use verdict_tests::chains::{chain, key_in};
use verdict_tests::{Broker, ClickHouse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_untouched_events_are_stored_verified_without_findings() {
    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    broker.create_topic("verdict.events", 3).await.unwrap();
    let dir = temp_dir();
    let (key, public) = key_in(dir.path(), "gw");
    let chains: Vec<_> = [("gw-1", 16_667), ("gw-2", 16_667), ("gw-3", 16_666)]
        .into_iter()
        .map(|(id, n)| chain(id, &key, n))
        .collect();
    // Interleave the chains as gateways would; each chain stays ordered in its partition.
    let longest = chains.iter().map(Vec::len).max().unwrap();
    let messages: Vec<(String, Vec<u8>)> = (0..longest)
        .flat_map(|i| chains.iter().filter_map(move |c| c.get(i)))
        .map(|e| (e.chain_id.clone(), e.encode()))
        .collect();
    assert_eq!(messages.len(), 50_000);

    let setup = AuditorSetup::trusting(
        broker.bootstrap(),
        clickhouse.url(),
        "verdict-auditor",
        public,
        5000,
    );
    let auditor = AuditorProcess::start(&setup).unwrap();
    produce(&producer(&broker.bootstrap()), "verdict.events", &messages).await;
    wait_committed(
        &broker.bootstrap(),
        "verdict-auditor",
        "verdict.events",
        3,
        50_000,
        Duration::from_secs(120),
    )
    .await;

    let client = clickhouse.client();
    assert_eq!(
        count(&client, "SELECT count() FROM events FINAL").await,
        50_000
    );
    assert_eq!(
        count(
            &client,
            "SELECT count() FROM events FINAL WHERE verification = 'verified'"
        )
        .await,
        50_000
    );
    assert_eq!(findings(&client).await, vec![]);
    let heads = count(&client, "SELECT sum(seq) FROM chain_heads FINAL").await;
    assert_eq!(heads, 50_000);
    let metrics = reqwest::get(format!("http://{}/metrics", auditor.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("verdict_auditor_events_stored_total 50000"),
        "{metrics}"
    );
    let health = reqwest::get(format!("http://{}/healthz", auditor.metrics))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
