//! Auditor throughput on this machine: `cargo run -p verdict-tests --example auditor_bench [N]`
//! (add `--release` for release numbers).
//!
//! 1. Verification alone: `ChainVerifier::verify` one by one vs `verify_batch` in batches of
//!    5,000, over the same N events of 4 chains.
//! 2. End to end: a topic pre-filled with the N events (4 partitions, real tansu), then the real
//!    `verdict-auditor` binary started against real ClickHouse; timed from start until the group
//!    has committed all N (so every row is stored), i.e. events verified and stored per second.
//! 3. With `--witness` (after N): the same run with the auditor's witness on (its Merkle tree,
//!    chunk roots and signed heads, issue 16), then the query service's inclusion and consistency
//!    proofs timed end to end over gRPC, their ClickHouse reads included.
//!    Also printed: the CPU seconds the auditor and the ClickHouse server used meanwhile.
//! 4. With `--checkpoint-every K` (a multiple of 100): chains with a checkpoint every K events
//!    instead of every 100 (each verified checkpoint is a witnessed head), e.g. 6,000 for a
//!    gateway checkpointing every 60 s at 100 calls/s.
//! 5. With `--no-baselines`: step 1 and the bare consumer are skipped (a 10M-event run of the
//!    witness's proofs spends half an hour on them otherwise).

use std::time::{Duration, Instant};
use verdict_proto::pb;
use verdict_proto::{ChainVerifier, PublicKey, SignedEvent, TrustedKeys};
use verdict_tests::auditor::{
    count, produce, producer, temp_dir, wait_committed, AuditorProcess, AuditorSetup,
};
use verdict_tests::chains::{chain_checkpointed, key_in};
use verdict_tests::process::cpu_seconds;
use verdict_tests::query::{authed, QueryService, TOKEN};
use verdict_tests::{Broker, ClickHouse};

const CHAINS: usize = 4;
const BATCH: usize = 5000;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N must be a number"))
        .unwrap_or(100_000);
    let witness = std::env::args().any(|a| a == "--witness");
    let dir = temp_dir();
    key_in(dir.path(), "witness");
    let (key, public) = key_in(dir.path(), "gw");
    let per_chain = (n / CHAINS) as u64;
    let every = std::env::args()
        .skip_while(|a| a != "--checkpoint-every")
        .nth(1)
        .map_or(100, |k| k.parse().expect("K must be a multiple of 100"));
    let chains: Vec<Vec<SignedEvent>> = (1..=CHAINS)
        .map(|i| chain_checkpointed(&format!("gw-{i}"), &key, per_chain, every))
        .collect();
    let events: Vec<SignedEvent> = (0..per_chain as usize)
        .flat_map(|i| chains.iter().map(move |c| c[i].clone()))
        .collect();
    let n = events.len();
    let baselines = !std::env::args().any(|a| a == "--no-baselines");
    if baselines {
        verify_alone(&events, &public);
    }

    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    broker.create_topic("verdict.events", 4).await.unwrap();
    let messages: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.chain_id.clone(), e.encode()))
        .collect();
    let started = Instant::now();
    produce(&producer(&broker.bootstrap()), "verdict.events", &messages).await;
    report(
        "pre-filling the topic (idempotent producer, acks=all)",
        n,
        started.elapsed(),
    );

    if baselines {
        let started = Instant::now();
        consume_all(&broker.bootstrap(), n).await;
        report(
            "plain consumer, no processing (baseline)",
            n,
            started.elapsed(),
        );
    }

    let setup = AuditorSetup::trusting(
        broker.bootstrap(),
        clickhouse.url(),
        "bench",
        public.clone(),
        BATCH,
    );
    let witness_config = match witness {
        true => format!(
            "[witness]\nkey = {:?}\nevery_secs = 1\n",
            dir.path().join("witness").join("verdict.key")
        ),
        false => String::new(),
    };
    let auditor = AuditorProcess::start_with_config(&setup, &witness_config, &[]).unwrap();
    // Joining the group takes the broker's rebalance delay; time from the assignment on.
    while !auditor.log().contains("partitions assigned") {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu = || {
        let seconds = |pid: Option<u32>| pid.and_then(cpu_seconds).unwrap_or_default();
        (seconds(auditor.pid()), seconds(clickhouse.pid()))
    };
    let (started, cpu_before) = (Instant::now(), cpu());
    wait_committed(
        &broker.bootstrap(),
        "bench",
        "verdict.events",
        4,
        n as i64,
        // At least 10 minutes, and room for 10M events at 5,000 a second.
        Duration::from_secs((n as u64 / 5_000).max(600)),
    )
    .await;
    report(
        "auditor end to end: verified, stored, committed",
        n,
        started.elapsed(),
    );
    // CPU used meanwhile: steadier than the wall time on a shared 2-core machine, and it says
    // which process paid (ClickHouse's background merges included).
    let cpu_after = cpu();
    for (who, used) in [
        ("auditor", cpu_after.0 - cpu_before.0),
        ("clickhouse-server", cpu_after.1 - cpu_before.1),
    ] {
        println!(
            "{who:<40} {used:>10.2} CPU s  {:>8.1} µs/event",
            used * 1e6 / n as f64
        );
    }
    let metrics = reqwest_metrics(&auditor.metrics).await;
    for line in metrics.lines().filter(|l| {
        l.starts_with("verdict_auditor_insert_seconds_sum")
            || l.starts_with("verdict_auditor_insert_seconds_count")
    }) {
        println!("{line}");
    }
    let stored = count(&clickhouse.client(), "SELECT count() FROM events FINAL").await;
    assert_eq!(stored, n as u64);
    if witness {
        let query = QueryService::start(&clickhouse.url(), Some(&public), "").unwrap();
        time_proofs(&query, "gw-1", per_chain).await;
    }
}

/// Step 1: verification alone, one by one and in batches.
fn verify_alone(events: &[SignedEvent], public: &std::path::Path) {
    let n = events.len();
    let mut keys = TrustedKeys::default();
    keys.add(PublicKey::read_pem_file(public).unwrap(), None);

    let mut verifier = ChainVerifier::new(keys.clone());
    let started = Instant::now();
    for event in events {
        assert!(verifier.verify(event).finding.is_none());
    }
    report("verify one by one", n, started.elapsed());
    let mut verifier = ChainVerifier::new(keys);
    let started = Instant::now();
    for batch in events.chunks(BATCH) {
        assert!(verifier
            .verify_batch(batch)
            .iter()
            .all(|v| v.finding.is_none()));
    }
    report("verify_batch (5,000 per batch)", n, started.elapsed());
}

/// Medians of 20 inclusion proofs (seqs spread over the chain) and 20 consistency proofs (the
/// oldest and the newest witnessed head) of `chain`, once its head at `seq` is witnessed.
async fn time_proofs(query: &QueryService, chain: &str, seq: u64) {
    let mut client = query.client().await;
    let heads = loop {
        let request = pb::ListWitnessedHeadsRequest {
            chain_id: chain.into(),
            limit: 1000,
        };
        let heads: Vec<pb::WitnessedHead> = client
            .list_witnessed_heads(authed(request, TOKEN))
            .await
            .unwrap()
            .into_inner()
            .heads
            .iter()
            .map(|h| prost::Message::decode(h.head.as_slice()).unwrap())
            .collect();
        if heads.first().is_some_and(|h| h.seq >= seq) {
            break heads;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (newest, oldest) = (heads[0].seq, heads[heads.len() - 1].seq);
    let mut inclusion = Vec::new();
    let mut consistency = Vec::new();
    for i in 0..20u64 {
        let request = pb::InclusionProofRequest {
            chain_id: chain.into(),
            seq: 1 + i * (newest - 1) / 19,
            ..Default::default()
        };
        let started = Instant::now();
        client
            .get_inclusion_proof(authed(request, TOKEN))
            .await
            .unwrap();
        inclusion.push(started.elapsed());
        let request = pb::ConsistencyProofRequest {
            chain_id: chain.into(),
            first: oldest,
            second: newest,
        };
        let started = Instant::now();
        client
            .get_consistency_proof(authed(request, TOKEN))
            .await
            .unwrap();
        consistency.push(started.elapsed());
    }
    inclusion.sort();
    consistency.sort();
    println!(
        "proofs over gRPC, chain of {newest} events ({} witnessed heads): inclusion median {:.2} ms, \
         consistency {oldest} -> {newest} median {:.2} ms",
        heads.len(),
        inclusion[10].as_secs_f64() * 1e3,
        consistency[10].as_secs_f64() * 1e3
    );
}

fn report(what: &str, n: usize, elapsed: Duration) {
    println!(
        "{what}: {n} events in {:.2} s = {:.0} events/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
}

async fn reqwest_metrics(address: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

/// Reads `n` messages with a bare `StreamConsumer` (group `baseline`), from its assignment on.
async fn consume_all(brokers: &str, n: usize) {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "baseline")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["verdict.events"]).unwrap();
    let first = consumer.recv().await.unwrap();
    drop(first);
    let started = Instant::now();
    for _ in 1..n {
        consumer.recv().await.unwrap();
    }
    report(
        "  of which after the first message",
        n - 1,
        started.elapsed(),
    );
}
