//! Several auditors in one consumer group: two start, a third joins and one leaves mid-stream.
//! Partitions move between them with uncommitted tails; the persisted chain heads and the
//! redelivery rule must still give exactly one `verified` row per event and no findings.

use std::time::{Duration, Instant};
use verdict_tests::auditor::{
    count, findings, produce, producer, temp_dir, wait_committed, AuditorProcess, AuditorSetup,
};
use verdict_tests::chains::{chain, key_in};
use verdict_tests::{Broker, ClickHouse};

const TOPIC: &str = "verdict.events";
const PARTITIONS: i32 = 4;
const CHAINS: usize = 6;
const PER_CHAIN: u64 = 1500;

/// Waits until `auditor` has been assigned partitions (the group has rebalanced onto it).
async fn wait_assigned(auditor: &AuditorProcess) {
    let start = Instant::now();
    while !auditor.log().contains("partitions assigned") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never assigned:\n{}",
            auditor.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_joining_and_leaving_the_group_lose_nothing_and_duplicate_nothing() {
    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    broker.create_topic(TOPIC, PARTITIONS).await.unwrap();
    let dir = temp_dir();
    let (key, public) = key_in(dir.path(), "gw");
    let chains: Vec<_> = (1..=CHAINS)
        .map(|i| chain(&format!("gw-{i}"), &key, PER_CHAIN))
        .collect();
    let all: Vec<(String, Vec<u8>)> = (0..PER_CHAIN as usize)
        .flat_map(|i| chains.iter().map(move |c| &c[i]))
        .map(|e| (e.chain_id.clone(), e.encode()))
        .collect();
    let total = all.len();
    let third = total / 3;
    let setup = AuditorSetup {
        brokers: broker.bootstrap(),
        topic: TOPIC.into(),
        group: "group".into(),
        clickhouse_url: clickhouse.url(),
        keys: vec![(public, None)],
        max_events: 300,
    };
    let producer = producer(&broker.bootstrap());

    let mut first = AuditorProcess::start(&setup).unwrap();
    let second = AuditorProcess::start(&setup).unwrap();
    wait_assigned(&first).await;
    wait_assigned(&second).await;
    produce(&producer, TOPIC, &all[..third]).await;
    let third_auditor = AuditorProcess::start(&setup).unwrap();
    produce(&producer, TOPIC, &all[third..2 * third]).await;
    // The group must have rebalanced onto the newcomer before one member leaves.
    wait_assigned(&third_auditor).await;
    let status = first.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{}", first.log());
    produce(&producer, TOPIC, &all[2 * third..]).await;

    wait_committed(
        &broker.bootstrap(),
        "group",
        TOPIC,
        PARTITIONS,
        total as i64,
        Duration::from_secs(180),
    )
    .await;
    let client = clickhouse.client();
    assert_eq!(
        count(&client, "SELECT count() FROM events FINAL").await,
        total as u64
    );
    assert_eq!(
        count(
            &client,
            "SELECT count() FROM events FINAL WHERE verification = 'verified'"
        )
        .await,
        total as u64
    );
    assert_eq!(findings(&client).await, vec![]);
    assert_eq!(
        count(&client, "SELECT sum(seq) FROM chain_heads FINAL").await,
        total as u64
    );
    // Every auditor took part.
    for auditor in [&first, &second, &third_auditor] {
        assert!(
            auditor.log().contains("partitions assigned"),
            "{}",
            auditor.log()
        );
    }
}
