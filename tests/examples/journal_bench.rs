//! The gateway's event path on this machine: `cargo run -p verdict-tests --example journal_bench
//! [N [key=value ...]]` (add `--release` for release numbers; each `key=value` is a producer
//! property, as `[audit.kafka] properties` sets it).
//!
//! N decision events are recorded through the gateway's own `Recorder` (sign, chain, journal) by
//! 64 concurrent callers, with `fsync = batch` and then `fsync = always`; with batch, the
//! gateway's `Shipper` produces the journal to a real tansu broker and the run ends when the
//! broker has acknowledged every event. Reported: events/s journaled, events/s acknowledged by
//! the broker, and the per-event `record()` latency the caller waits (p50/p99).

use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use verdict_gateway::audit::recorder::FsyncPolicy;
use verdict_gateway::audit::recorder::{Recorder, RecorderSettings};
use verdict_gateway::audit::refusals::RefusalLedger;
use verdict_gateway::audit::shipper::Shipper;
use verdict_gateway::audit::space::SpaceWatch;
use verdict_gateway::audit::{DecisionFacts, EventBuilder};
use verdict_gateway::config::{AuditConfig, KafkaConfig};
use verdict_proto::pb;
use verdict_proto::SecretKey;
use verdict_tests::Broker;

const CALLERS: usize = 64;

async fn record_all(recorder: Arc<Recorder>, n: usize) -> (Duration, Histogram<u64>) {
    let builder = Arc::new(EventBuilder::new(&AuditConfig::default()));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (recorder, builder) = (Arc::clone(&recorder), Arc::clone(&builder));
            tokio::spawn(async move {
                let mut latencies = Histogram::<u64>::new(3).unwrap();
                for i in (caller..n).step_by(CALLERS) {
                    let arguments =
                        serde_json::json!({"action": "delete_session", "session_id": format!("s-{i}")});
                    let facts = DecisionFacts {
                        upstream: "memory",
                        method: "tools/call",
                        tool: "session_manager",
                        arguments: Some(&arguments),
                        decision: pb::DecisionKind::Deny,
                        rule_id: "no-delete",
                        reason: "sessions are deleted by humans only",
                        ..Default::default()
                    };
                    let body = builder.decision(pb::Actor::default(), &facts);
                    let t = Instant::now();
                    recorder.record(&body).await.expect("journaled");
                    latencies.record(t.elapsed().as_micros() as u64).unwrap();
                }
                latencies
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new(3).unwrap();
    for task in tasks {
        all.add(task.await.unwrap()).unwrap();
    }
    (start.elapsed(), all)
}

fn recorder(dir: &std::path::Path, fsync: FsyncPolicy) -> Arc<Recorder> {
    let recorder = Recorder::open(RecorderSettings {
        chain_id: "bench".into(),
        key: SecretKey::generate(),
        previous_key: None,
        journal_dir: dir.to_owned(),
        segment_bytes: 64 << 20,
        fsync,
        checkpoint_secs: 60,
        writer_mode: "bench",
        refusals: Arc::new(RefusalLedger::new(1_000)),
        refusal_every: Duration::from_secs(60),
        space: Arc::new(SpaceWatch::new(dir.to_owned(), 0, 0)),
    })
    .unwrap();
    let recorder = Arc::new(recorder);
    recorder.spawn_timers();
    recorder
}

fn report(label: &str, n: usize, took: Duration, latencies: &Histogram<u64>) {
    println!(
        "| {label} | {n} | {:.0} | {} | {} |",
        n as f64 / took.as_secs_f64(),
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.99)
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N"))
        .unwrap_or(100_000);
    println!("| fsync | events | journaled/s | record() p50 µs | record() p99 µs |\n|---|---|---|---|---|");

    let broker = Broker::start().unwrap();
    broker.create_topic("bench", 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let batch = recorder(
        dir.path(),
        FsyncPolicy::Batch {
            window: Duration::from_millis(5),
        },
    );
    // Further arguments `key=value` are producer properties (`[audit.kafka] properties`).
    let properties: serde_json::Map<String, serde_json::Value> = std::env::args()
        .skip(2)
        .map(|a| {
            let (k, v) = a.split_once('=').expect("key=value");
            (k.to_owned(), v.into())
        })
        .collect();
    let kafka: KafkaConfig = serde_json::from_value(serde_json::json!({
        "brokers": broker.bootstrap(), "topic": "bench", "properties": properties
    }))
    .unwrap();
    let shipper = Shipper::new(&kafka, "bench", dir.path().to_owned(), None).unwrap();
    let status = Arc::clone(&shipper.status);
    let stop = CancellationToken::new();
    let shipping = tokio::spawn(shipper.run(batch.written(), stop.clone()));
    let start = Instant::now();
    let (took, latencies) = record_all(Arc::clone(&batch), n).await;
    report(
        "batch (5 ms window), shipping to tansu",
        n,
        took,
        &latencies,
    );
    let last = *batch.written().borrow();
    while status
        .acknowledged
        .load(std::sync::atomic::Ordering::Relaxed)
        < last
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shipped = start.elapsed();
    stop.cancel();
    let _ = shipping.await;

    let dir = tempfile::tempdir().unwrap();
    let always = recorder(dir.path(), FsyncPolicy::Always);
    let (took_always, latencies) = record_all(always, n / 4).await;
    report("always", n / 4, took_always, &latencies);
    println!(
        "\nbatch + shipper: {last} events journaled and acknowledged by tansu in {:.2} s = {:.0} events/s end to end",
        shipped.as_secs_f64(),
        last as f64 / shipped.as_secs_f64()
    );
}
