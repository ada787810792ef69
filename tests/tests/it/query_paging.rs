//! Stable cursor paging: 25,000 stored events (some stored twice, as a Kafka redelivery would,
//! many sharing a timestamp) read in pages of 1,000 while new events keep arriving. Every event
//! present at the start is returned exactly once, in newest-first order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use verdict_proto::pb::{self, DecisionKind, RiskClass};
use verdict_proto::{ChainWriter, SecretKey, SignedEvent};
use verdict_tests::audit_rows::{self, Call};
use verdict_tests::query::{authed, QueryService, TOKEN};
use verdict_tests::ClickHouse;

const T0: i64 = 1_750_000_000_000_000_000;
const INITIAL: usize = 25_000;

fn events(writer: &mut ChainWriter, count: usize, time: impl Fn(usize) -> i64) -> Vec<SignedEvent> {
    (0..count)
        .map(|i| {
            writer.append(
                Call {
                    time_unix_nanos: time(i),
                    agent: if i % 2 == 0 { "agent-a" } else { "agent-b" },
                    session: "s",
                    tool: "list_work_memories",
                    risk: RiskClass::Read,
                    arguments_json: "{}",
                    targets: &[],
                    decision: DecisionKind::Allow,
                    reason: "",
                }
                .body(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_have_no_duplicates_and_no_skips_while_rows_arrive() {
    let clickhouse = ClickHouse::start().expect("clickhouse");
    let db = clickhouse.client();
    audit_rows::migrate(&db).await.unwrap();
    let key = SecretKey::from_seed(&[2; 32]);
    // Two chains interleaved in time; groups of 10 events share one timestamp, so paging must
    // break ties on (chain_id, seq).
    let mut chains = [
        ChainWriter::new("gw-a", key.clone()),
        ChainWriter::new("gw-b", key.clone()),
    ];
    let mut initial = Vec::new();
    for (c, writer) in chains.iter_mut().enumerate() {
        initial.extend(events(writer, INITIAL / 2, |i| {
            T0 + ((2 * i + c) / 10) as i64 * 1_000_000
        }));
    }
    for batch in initial.chunks(5_000) {
        audit_rows::store_events(&db, batch).await.unwrap();
    }
    // A redelivered batch: stored twice, must still be returned once.
    audit_rows::store_events(&db, &initial[..1_000])
        .await
        .unwrap();
    let expected: HashSet<(String, u64)> = initial
        .iter()
        .map(|e| (e.chain_id.clone(), e.seq))
        .collect();
    assert_eq!(expected.len(), INITIAL);

    let service = QueryService::start(&clickhouse.url(), None, "").expect("verdict-query");
    let mut client = service.client().await;

    // New events keep arriving while we page: newer ones on a live chain, and older-dated ones
    // (late delivery) on another.
    let stop = Arc::new(AtomicBool::new(false));
    let writer_db = clickhouse.client();
    let writer_stop = Arc::clone(&stop);
    let writer = tokio::spawn(async move {
        let mut live = ChainWriter::new("gw-live", SecretKey::from_seed(&[3; 32]));
        let mut late = ChainWriter::new("gw-late", SecretKey::from_seed(&[3; 32]));
        let mut batches = 0;
        while !writer_stop.load(Ordering::Relaxed) {
            let newer = events(&mut live, 100, |i| {
                T0 + 10_000_000_000 + (batches * 100 + i) as i64
            });
            let older = events(&mut late, 100, |i| T0 + (batches * 100 + i) as i64 * 1_000);
            audit_rows::store_events(&writer_db, &newer).await.unwrap();
            audit_rows::store_events(&writer_db, &older).await.unwrap();
            batches += 1;
            tokio::task::yield_now().await;
        }
        batches
    });

    let mut seen = HashSet::new();
    let mut duplicates = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    let mut previous: Option<(i64, String, u64)> = None;
    loop {
        let page = client
            .search(authed(
                pb::SearchRequest {
                    filter: None,
                    page_size: 1000,
                    page_token: token.clone(),
                },
                TOKEN,
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", service.log_tail()))
            .into_inner();
        pages += 1;
        for event in &page.events {
            let a = event.attempt.as_ref().unwrap();
            let key = (a.time_unix_nanos, a.chain_id.clone(), a.seq);
            if let Some(prev) = &previous {
                assert!(key < *prev, "not newest first: {key:?} after {prev:?}");
            }
            previous = Some(key);
            if !seen.insert((a.chain_id.clone(), a.seq)) {
                duplicates.push((a.chain_id.clone(), a.seq));
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        assert_eq!(page.events.len(), 1000);
        token = page.next_page_token;
    }
    stop.store(true, Ordering::Relaxed);
    let batches = writer.await.unwrap();
    assert!(batches > 0, "the concurrent writer never ran");
    assert_eq!(duplicates, Vec::<(String, u64)>::new());
    let missing: Vec<_> = expected.difference(&seen).take(10).collect();
    assert_eq!(missing, Vec::<&(String, u64)>::new(), "events skipped");
    assert!(pages >= INITIAL / 1000);

    // A forged token is refused, not misread.
    let err = client
        .search(authed(
            pb::SearchRequest {
                filter: None,
                page_size: 10,
                page_token: "bm90IGEgY3Vyc29y".into(),
            },
            TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // Page sizes above the limit are refused.
    let err = client
        .search(authed(
            pb::SearchRequest {
                filter: None,
                page_size: 1001,
                page_token: String::new(),
            },
            TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
