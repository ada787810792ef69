//! Decision → queryable latency of the whole pipeline on this machine:
//! `cargo run -p verdict-tests --example e2e_bench [CALLS_PER_SEC] [SECONDS] [follow]` (default
//! 1000, 60).
//!
//! Real tansu, ClickHouse, gateway (with the demo policy), auditor and query service, the sample
//! MCP server over HTTP. Load: `add_work_memory` calls at the given rate from 8 rmcp clients. Probe:
//! every 200 ms another agent tries `session_manager delete` on a fresh session id (denied by
//! policy); from the moment the gateway answers, WhoTried is polled for that session until the
//! attempt is visible. Reported: probe latency percentiles, and whether every load call's decision
//! reached ClickHouse (0 lost).
//!
//! With `follow`, no probe: a `Follow` client (from now, the load agent's decisions, JSON lines)
//! timestamps every event it receives against the event's own time (the gateway's decision time,
//! same machine clock), so each load decision is one sample of decision → delivered to a follower.

use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verdict_proto::pb;
use verdict_service::credentials::digest as key_digest;
use verdict_tests::auditor::{count, AuditorProcess, AuditorSetup};
use verdict_tests::mcp::{call_tool, connect, HttpProcess};
use verdict_tests::query::{authed, QueryService, TOKEN};
use verdict_tests::{Broker, ClickHouse};

const CLIENTS: u64 = 8;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| {
        args.get(i)
            .map_or(default, |a| a.parse::<u64>().expect("a number"))
    };
    let (rate, seconds) = (number(0, 1000), number(1, 60));
    let follow_mode = args.get(2).is_some_and(|a| a == "follow");
    let broker = Broker::start().unwrap();
    broker.create_topic("verdict.events", 3).await.unwrap();
    let clickhouse = ClickHouse::start().unwrap();
    let upstream = HttpProcess::work_memory(&[]).unwrap();
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo/policy.json");
    let mut config = format!("policy = {policy:?}\n");
    for agent in ["load", "probe"] {
        config += &format!(
            "[[agents]]\nid = \"{agent}\"\napi_key_sha256 = \"{}\"\n",
            key_digest(agent)
        );
    }
    config += &format!(
        "[upstreams.memory]\nurl = \"{}\"\n[audit]\nchain_id = \"bench\"\n[audit.kafka]\nbrokers = \"{}\"\n",
        upstream.url(),
        broker.bootstrap()
    );
    let gateway = HttpProcess::gateway(&config).unwrap();
    let _auditor = AuditorProcess::start(&AuditorSetup::trusting(
        broker.bootstrap(),
        clickhouse.url(),
        "verdict-auditor",
        gateway.public_key(),
        5000,
    ))
    .unwrap();
    let query = QueryService::start(&clickhouse.url(), None, "").unwrap();

    let follower = match follow_mode {
        true => Some(follow_latencies(query.client().await).await),
        false => None,
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, sent) = (gateway.url(), Arc::clone(&sent));
            tokio::spawn(async move {
                let client = connect(&url, "load").await;
                let mut tick =
                    tokio::time::interval(Duration::from_secs_f64(CLIENTS as f64 / rate as f64));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut i = 0;
                while Instant::now() < deadline {
                    tick.tick().await;
                    let args = json!({"project": format!("k-{c}-{i}"), "content": "v"});
                    call_tool(&client, "add_work_memory", args)
                        .await
                        .expect("load call");
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();

    let probe = connect(&gateway.url(), "probe").await;
    let mut query_client = query.client().await;
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    let mut n = 0;
    while !follow_mode && Instant::now() < deadline {
        let session = format!("probe-{n}");
        n += 1;
        call_tool(
            &probe,
            "session_manager",
            json!({"action": "delete_session", "session_id": session}),
        )
        .await
        .unwrap();
        let decided = Instant::now();
        loop {
            let filter = pb::EventFilter {
                agents: vec!["probe".into()],
                targets: vec![pb::TargetMatch {
                    name: "session_id".into(),
                    value: session.clone(),
                }],
                ..Default::default()
            };
            let request = pb::WhoTriedRequest {
                filter: Some(filter),
                grouped: false,
                limit: 10,
            };
            let answer = query_client
                .who_tried(authed(request, TOKEN))
                .await
                .unwrap()
                .into_inner();
            if !answer.attempts.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies
            .record(decided.elapsed().as_millis() as u64)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200).saturating_sub(decided.elapsed())).await;
    }
    for task in load {
        task.await.unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    let db = clickhouse.client();
    let sql = "SELECT count() FROM (SELECT chain_id, seq FROM events FINAL WHERE kind = 'decision' AND agent_id = 'load')";
    let start = Instant::now();
    let mut stored = 0;
    while start.elapsed() < Duration::from_secs(120) {
        stored = count(&db, sql).await;
        if stored >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "rate {rate} calls/s for {seconds} s: {sent} load calls ({:.0}/s achieved), {stored} decisions stored ({} lost)",
        sent as f64 / seconds as f64,
        sent.saturating_sub(stored)
    );
    if let Some(follower) = follower {
        let (latencies, received) = follower_result(follower, sent).await;
        println!(
            "decision → delivered to a Follow client over {received} events: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            latencies.value_at_quantile(0.5),
            latencies.value_at_quantile(0.9),
            latencies.value_at_quantile(0.99),
            latencies.max()
        );
        return;
    }
    println!(
        "decision → visible in WhoTried over {} probes: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.9),
        latencies.value_at_quantile(0.99),
        latencies.max()
    );
}

type Latencies = Arc<std::sync::Mutex<Histogram<u64>>>;

/// Starts following the load agent's decisions from now; a task records, per event, the
/// milliseconds from its decision time to its arrival here.
async fn follow_latencies(
    mut client: verdict_proto::pb::audit_query_client::AuditQueryClient<tonic::transport::Channel>,
) -> Latencies {
    let latencies: Latencies = Arc::new(std::sync::Mutex::new(Histogram::new(3).unwrap()));
    let request = pb::FollowRequest {
        filter: Some(pb::EventFilter {
            agents: vec!["load".into()],
            ..Default::default()
        }),
        format: pb::ExportFormat::Jsonl as i32,
        from_now: true,
        ..Default::default()
    };
    let mut stream = client
        .follow(authed(request, TOKEN))
        .await
        .expect("Follow")
        .into_inner();
    let recorded = Arc::clone(&latencies);
    tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            if message.data.is_empty() {
                continue;
            }
            let record: serde_json::Value = serde_json::from_slice(&message.data).unwrap();
            let decided = record["time_unix_nanos"].as_i64().unwrap();
            let millis = (verdict_proto::now_unix_nanos() - decided).max(0) / 1_000_000;
            recorded.lock().unwrap().record(millis as u64).unwrap();
        }
    });
    latencies
}

/// The follower's latencies once it has received `sent` events (or 120 s passed), and how many
/// it received.
async fn follower_result(latencies: Latencies, sent: u64) -> (Histogram<u64>, u64) {
    let start = Instant::now();
    while latencies.lock().unwrap().len() < sent && start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let histogram = latencies.lock().unwrap().clone();
    let received = histogram.len();
    (histogram, received)
}
