//! The harness itself, against the real servers: ClickHouse stores and returns rows through the
//! `clickhouse` crate, and the broker carries 10,000 keyed messages through an idempotent producer
//! and a consumer group with manual commits, counted exactly.

use clickhouse::Row;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Duration;
use verdict_tests::{Broker, ClickHouse};

#[derive(Debug, Row, Serialize, Deserialize, PartialEq)]
struct Sample {
    id: u64,
    text: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_round_trips_rows_with_bound_parameters() {
    let server = ClickHouse::start().expect("start clickhouse");
    let client = server.client();
    client
        .query("CREATE TABLE samples (id UInt64, text String) ENGINE = MergeTree ORDER BY id")
        .execute()
        .await
        .unwrap();
    let mut insert = client.insert::<Sample>("samples").await.unwrap();
    for id in 0..1000u64 {
        insert
            .write(&Sample {
                id,
                text: format!("세션 {id} ' OR 1=1 --"),
            })
            .await
            .unwrap();
    }
    insert.end().await.unwrap();
    let count: u64 = client
        .query("SELECT count() FROM samples")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(count, 1000);
    let row: Sample = client
        .query("SELECT id, text FROM samples WHERE text = ?")
        .bind("세션 7 ' OR 1=1 --")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        row,
        Sample {
            id: 7,
            text: "세션 7 ' OR 1=1 --".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_carries_10000_keyed_messages_through_a_consumer_group() {
    let broker = Broker::start().expect("start broker");
    broker.create_topic("smoke", 3).await.unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    const N: usize = 10_000;
    let sends: Vec<_> = (0..N)
        .map(|i| {
            let producer = producer.clone();
            async move {
                let key = format!("chain-{}", i % 7);
                let payload = i.to_string();
                producer
                    .send(
                        FutureRecord::to("smoke").key(&key).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        })
        .collect();
    for result in futures_join(sends).await {
        result.unwrap();
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "smoke-group")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["smoke"]).unwrap();
    let mut seen = HashSet::new();
    while seen.len() < N {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("no message within 60 s")
            .unwrap();
        let payload: usize = std::str::from_utf8(message.payload().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            message.key().unwrap(),
            format!("chain-{}", payload % 7).as_bytes()
        );
        assert!(seen.insert(payload), "message {payload} delivered twice");
        if seen.len() % 1000 == 0 {
            consumer.commit_consumer_state(CommitMode::Sync).unwrap();
        }
    }
    assert_eq!(seen.len(), N);
    // The group's committed offsets account for every message exactly.
    let committed = consumer.committed(Duration::from_secs(10)).unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| e.offset().to_raw().unwrap_or(0))
        .sum();
    assert_eq!(total, N as i64);
}

/// Awaits all futures concurrently on the current task.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.into_iter().map(|f| Box::pin(f)).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await);
    }
    out
}
