//! Auditor throughput on a ClickHouse cluster, with 1 and 2 auditors and 1 and 2 shards:
//! `cargo run --release -p verdict-tests --example cluster_bench [N]` (README "Operations",
//! BENCHMARKS.md "Cluster").
//!
//! Why a benchmark of its own: what scales past one machine is the number of auditors (Kafka
//! partitions) and shards, and their ratios are what an operator sizes with. For each layout a
//! fresh cluster (one replica per shard, real ZooKeeper and `clickhouse-server`) and a topic
//! pre-filled with N events of 8 chains (8 partitions, real tansu); the auditors start in one
//! group with `[clickhouse] cluster`, and the time runs from the first partition assignment (the
//! schema is migrated by then) until the group has committed all N (every row stored). It also reports the bytes
//! per stored event (`system.parts`) and the rows each shard holds.

use std::time::{Duration, Instant};
use verdict_tests::auditor::{
    count, produce, producer, temp_dir, wait_committed, AuditorProcess, AuditorSetup,
};
use verdict_tests::chains::{interleaved_messages, key_in};
use verdict_tests::cluster::{ClickHouseCluster, Layout, CLUSTER};
use verdict_tests::Broker;

const CHAINS: usize = 8;
const PARTITIONS: i32 = 8;
const TOPIC: &str = "verdict.events";

#[tokio::main]
async fn main() {
    let n = std::env::args()
        .nth(1)
        .map_or(100_000, |a| a.parse::<usize>().expect("N must be a number"));
    let dir = temp_dir();
    let (key, public) = key_in(dir.path(), "gw");
    let messages = interleaved_messages(&key, CHAINS, (n / CHAINS) as u64);
    let n = messages.len();
    let broker = Broker::start().unwrap();
    broker.create_topic(TOPIC, PARTITIONS).await.unwrap();
    produce(&producer(&broker.bootstrap()), TOPIC, &messages).await;

    let mut baseline = None;
    for shards in [1, 2] {
        for auditors in [1, 2] {
            let layout = Layout {
                shards,
                replicas: 1,
            };
            let group = format!("bench-{shards}-{auditors}");
            let setup = AuditorSetup {
                brokers: broker.bootstrap(),
                topic: TOPIC.into(),
                group: group.clone(),
                clickhouse_url: String::new(),
                keys: vec![(public.clone(), None)],
                max_events: 5000,
            };
            let rate = run(layout, auditors, setup, n).await;
            let base = *baseline.get_or_insert(rate);
            println!(
                "{shards} shard(s), {auditors} auditor(s): {n} events, {rate:.0} events/s ({:.2}× the 1 × 1 rate)",
                rate / base
            );
        }
    }
}

/// Events per second for `auditors` auditors on a fresh cluster of `layout`.
async fn run(layout: Layout, auditors: usize, mut setup: AuditorSetup, n: usize) -> f64 {
    let cluster = ClickHouseCluster::start(layout).unwrap();
    let processes: Vec<AuditorProcess> = (0..auditors)
        .map(|i| {
            setup.clickhouse_url = cluster.servers()[i % cluster.servers().len()].url();
            AuditorProcess::start_with_env(
                &setup,
                &[("VERDICT_AUDITOR_CLICKHOUSE__CLUSTER", CLUSTER)],
            )
            .unwrap()
        })
        .collect();
    // From the first assignment on: a member joining later costs the group a rebalance, which
    // belongs in the figure; the schema migration before it does not.
    while !processes
        .iter()
        .any(|a| a.log().contains("partitions assigned"))
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    wait_committed(
        &setup.brokers,
        &setup.group,
        TOPIC,
        PARTITIONS,
        n as i64,
        Duration::from_secs(1200),
    )
    .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let client = cluster.servers()[0].client();
    assert_eq!(
        count(&client, "SELECT count() FROM events FINAL").await,
        n as u64
    );
    for (i, server) in cluster.servers().iter().enumerate() {
        let client = server.client();
        let _ = client
            .query("OPTIMIZE TABLE events_local FINAL")
            .execute()
            .await;
        let rows = count(&client, "SELECT count() FROM events_local").await;
        let bytes = count(
            &client,
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND table = 'events_local'",
        )
        .await;
        println!(
            "  shard {}: {rows} rows, {} bytes per event on disk (events_local, after OPTIMIZE)",
            i + 1,
            bytes.checked_div(rows).unwrap_or(0)
        );
    }
    rate
}
