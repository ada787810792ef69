//! Query service benchmark: fills a fresh ClickHouse with N synthetic events, then measures the
//! real `verdict-query` over gRPC.
//!
//! Events are real: bodies encoded like the gateway's and signed with `ChainWriter` (4 chains,
//! signed on all cores), stored with the auditor's row mapping. Measured: WhoTried (a tool + an
//! argument filter), Search's first page, Summarize over 30 days by agent × decision (p50 of 15
//! runs each after one warm-up), and a full JSONL Export in rows/s.
//!
//! With `QUERY_BENCH_BASELINE=path/to/another/verdict-query`, the three queries are measured again
//! on the same data in three rounds, alternating that build and this one (a change's pair, free
//! of the machine's drift between runs).
//!
//! `cargo run -p verdict-tests --example query_bench -- 1000000` (the dev profile optimises
//! dependencies at -O3; the numbers in BENCHMARKS.md were measured that way, binaries included).

use std::time::{Duration, Instant};
use tonic::transport::Channel;
use verdict_proto::pb::audit_query_client::AuditQueryClient;
use verdict_proto::pb::{self, DecisionKind, RiskClass};
use verdict_proto::{ChainWriter, Hash, SecretKey, SignedEvent, ZERO_HASH};
use verdict_tests::audit_rows::{self, Call};
use verdict_tests::query::{authed, QueryService, TOKEN};
use verdict_tests::ClickHouse;

const CHAINS: usize = 4;
const DAY: i64 = 86_400 * 1_000_000_000;
const TOOLS: [&str; 5] = [
    "session_manager",
    "list_work_memories",
    "add_work_memory",
    "search",
    "shell",
];
const ACTIONS: [&str; 4] = ["delete_session", "set_active", "clear", "enable_auto_link"];
const DECISIONS: [DecisionKind; 4] = [
    DecisionKind::Allow,
    DecisionKind::Deny,
    DecisionKind::RateLimited,
    DecisionKind::Approved,
];

/// The body of event `i` of chain `chain` (of `per_chain`), spread over the last 30 days.
fn body(chain: usize, i: usize, per_chain: usize, now: i64) -> Vec<u8> {
    let n = i * CHAINS + chain;
    let agent = format!("agent-{}", n % 50);
    let session = format!("s{}", n % 1000);
    let args = format!(
        r#"{{"action":"{}","session_id":"{session}"}}"#,
        ACTIONS[n % 4]
    );
    let targets = [("session_id", session.as_str())];
    Call {
        time_unix_nanos: now - 30 * DAY + (i as i64) * (30 * DAY / per_chain as i64),
        agent: &agent,
        session: "mcp",
        tool: TOOLS[n % 5],
        risk: RiskClass::Destructive,
        arguments_json: &args,
        targets: &targets,
        decision: DECISIONS[n % 4],
        reason: "synthetic",
    }
    .body()
}

/// Events `from..from + n` of chain `chain`, continuing from `head`.
fn sign_slice(
    chain: usize,
    per_chain: usize,
    from: usize,
    n: usize,
    head: (u64, Hash),
    now: i64,
) -> Vec<SignedEvent> {
    let mut writer = ChainWriter::resume(
        format!("gw-{chain}"),
        SecretKey::from_seed(&[7; 32]),
        head.0,
        head.1,
    );
    (from..from + n)
        .map(|i| writer.append(body(chain, i, per_chain, now)))
        .collect()
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |n| n.parse().expect("N"));
    let clickhouse = ClickHouse::start().expect("clickhouse");
    let db = clickhouse.client();
    audit_rows::migrate(&db).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;

    let started = Instant::now();
    let per_chain = total / CHAINS;
    let chunk = 250_000.min(per_chain);
    let mut signed = 0;
    let mut sign_time = Duration::ZERO;
    // Sign (one thread per chain) and insert in slices, so memory stays bounded.
    let mut heads: Vec<(u64, Hash)> = vec![(0, ZERO_HASH); CHAINS];
    while signed < per_chain {
        let n = chunk.min(per_chain - signed);
        let t = Instant::now();
        let slices: Vec<Vec<SignedEvent>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..CHAINS)
                .map(|c| {
                    let head = heads[c];
                    s.spawn(move || sign_slice(c, per_chain, signed, n, head, now))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        sign_time += t.elapsed();
        for (c, slice) in slices.iter().enumerate() {
            let last = slice.last().unwrap();
            heads[c] = (last.seq, last.hash);
            for batch in slice.chunks(100_000) {
                audit_rows::store_events(&db, batch).await.unwrap();
            }
        }
        signed += n;
        eprintln!("loaded {} events", signed * CHAINS);
    }
    let load = started.elapsed();
    let rows = per_chain * CHAINS;
    println!(
        "loaded {rows} events in {:.1} s ({:.0} events/s; signing {:.1} s of it)",
        load.as_secs_f64(),
        rows as f64 / load.as_secs_f64(),
        sign_time.as_secs_f64()
    );
    db.query("OPTIMIZE TABLE events FINAL").execute().await.ok();

    let service = QueryService::start(&clickhouse.url(), None, "").expect("verdict-query");
    let mut client = service.client().await;
    for (name, p) in measure(&mut client, now, rows).await {
        println!("{name}: p50 {:.1} ms", p.as_secs_f64() * 1000.0);
    }
    // Another build on the same data, alternating with this one: a pair from one machine state.
    if let Some(baseline) = std::env::var_os("QUERY_BENCH_BASELINE") {
        for round in 1..=3 {
            for (label, program) in [("baseline", Some(&baseline)), ("this build", None)] {
                let other = program.map(|p| {
                    QueryService::start_program(p.as_ref(), &clickhouse.url()).expect("baseline")
                });
                let mut client = match &other {
                    Some(s) => s.client().await,
                    None => service.client().await,
                };
                for (name, p) in measure(&mut client, now, rows).await {
                    let ms = p.as_secs_f64() * 1000.0;
                    println!("round {round}, {label}: {name}: p50 {ms:.1} ms");
                }
            }
        }
    }
    let t = Instant::now();
    let mut stream = client
        .export(authed(
            pb::ExportRequest {
                filter: None,
                format: pb::ExportFormat::Jsonl as i32,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let (mut lines, mut bytes, mut last) = (0u64, 0u64, Vec::new());
    while let Some(chunk) = stream.message().await.unwrap() {
        lines += memchr::memchr_iter(b'\n', &chunk.data).count() as u64;
        bytes += chunk.data.len() as u64;
        last = chunk.data;
    }
    let secs = t.elapsed().as_secs_f64();
    // One line per event, then the export's own last line saying what it held.
    let end = String::from_utf8_lossy(&last);
    let end = end.trim_end().rsplit('\n').next().unwrap_or_default();
    assert!(end.starts_with(r#"{"export_end""#), "last line: {end}");
    lines -= 1;
    assert_eq!(lines, rows as u64);
    println!(
        "Export JSONL: {lines} rows, {:.0} MB in {secs:.1} s = {:.0} rows/s",
        bytes as f64 / 1e6,
        lines as f64 / secs
    );
}

/// WhoTried, Search's first page and Summarize through `client`: p50 of 15 runs after a warm-up.
async fn measure(
    client: &mut AuditQueryClient<Channel>,
    now: i64,
    rows: usize,
) -> Vec<(&'static str, Duration)> {
    let delete = pb::EventFilter {
        tools: vec!["session_manager".into()],
        arguments: vec![pb::ArgumentMatch {
            key: "action".into(),
            value: "delete_session".into(),
        }],
        ..Default::default()
    };
    let mut results = Vec::new();
    for name in [
        "WhoTried session_manager action=delete (limit 1000)",
        "Search first page (100)",
        "Summarize 30 days by agent x decision",
    ] {
        let mut samples = Vec::new();
        for run in 0..16 {
            let t = Instant::now();
            match name {
                n if n.starts_with("WhoTried") => {
                    let r = client
                        .who_tried(authed(
                            pb::WhoTriedRequest {
                                filter: Some(delete.clone()),
                                grouped: false,
                                limit: 1000,
                            },
                            TOKEN,
                        ))
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(r.attempts.len(), 1000);
                }
                n if n.starts_with("Search") => {
                    let r = client
                        .search(authed(
                            pb::SearchRequest {
                                filter: None,
                                page_size: 100,
                                page_token: String::new(),
                            },
                            TOKEN,
                        ))
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(r.events.len(), 100);
                }
                _ => {
                    let r = client
                        .summarize(authed(
                            pb::SummarizeRequest {
                                filter: Some(pb::EventFilter {
                                    time: Some(pb::TimeRange {
                                        from_unix_nanos: now - 30 * DAY - 1,
                                        to_unix_nanos: now + 1,
                                    }),
                                    ..Default::default()
                                }),
                                group_by: vec![
                                    pb::Dimension::Agent as i32,
                                    pb::Dimension::Decision as i32,
                                ],
                            },
                            TOKEN,
                        ))
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(r.rows.iter().map(|r| r.count).sum::<u64>(), rows as u64);
                }
            }
            if run > 0 {
                samples.push(t.elapsed());
            }
        }
        results.push((name, p50(samples)));
    }
    results
}
