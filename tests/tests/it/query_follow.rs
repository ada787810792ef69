//! `Follow` against the real pipeline: events produced to a real broker, stored by a real
//! auditor that is killed and restarted between waves (so rows are redelivered and stored late),
//! through a ClickHouse outage, while a client disconnects and resumes with its last cursor at
//! 100+ random points. In the end the client's events, chain by chain, equal `Export` exactly: no
//! gap, no duplicate, per-chain seq order. `verdict follow` resumes from its cursor file the same
//! way, and its OCSF lines validate against the published schema.

use std::collections::BTreeMap;
use std::time::Duration;
use verdict_proto::pb;
use verdict_proto::SecretKey;
use verdict_tests::auditor::{
    produce, producer, temp_dir, wait_committed, AuditorProcess, AuditorSetup,
};
use verdict_tests::bins::cargo_bin;
use verdict_tests::chains::{chain, key_in};
use verdict_tests::ocsf::assert_valid_ocsf;
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::query::{authed, QueryService, TOKEN};
use verdict_tests::{Broker, ClickHouse};

const TOPIC: &str = "verdict.events";
const CHAINS: [&str; 3] = ["gw-1", "gw-2", "gw-3"];
const PER_CHAIN: u64 = 500;
const WAVES: usize = 5;

/// Every chain's events, interleaved, as keyed messages.
fn messages(key: &SecretKey) -> Vec<(String, Vec<u8>)> {
    let chains: Vec<_> = CHAINS.iter().map(|id| chain(id, key, PER_CHAIN)).collect();
    (0..PER_CHAIN as usize)
        .flat_map(|i| chains.iter().map(move |c| &c[i]))
        .map(|e| (e.chain_id.clone(), e.encode()))
        .collect()
}

/// A small deterministic xorshift: the "random" points where the follower disconnects.
struct Points(u64);

impl Points {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// What a follower received: `(chain_id, seq, line)` in arrival order, and how often it
/// reconnected.
struct Followed {
    events: Vec<(String, u64, String)>,
    reconnects: usize,
}

/// Follows until `total` events arrived, dropping the stream after 1–20 events at a time for the
/// first 110 connections, resuming each time with the cursor of the last message received;
/// errors (ClickHouse down, service busy) also reconnect.
async fn follow(url: String, total: usize) -> Followed {
    let mut points = Points(0x9E37_79B9_7F4A_7C15);
    let mut got = Followed {
        events: Vec::new(),
        reconnects: 0,
    };
    let mut cursor = String::new();
    while got.events.len() < total {
        let budget = if got.reconnects < 110 {
            points.next(20) + 1
        } else {
            u64::MAX
        };
        let Ok(mut client) = pb::audit_query_client::AuditQueryClient::connect(url.clone()).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let request = pb::FollowRequest {
            format: pb::ExportFormat::Jsonl as i32,
            cursor: cursor.clone(),
            ..Default::default()
        };
        got.reconnects += 1;
        let Ok(response) = client.follow(authed(request, TOKEN)).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut stream = response.into_inner();
        let mut taken = 0;
        while taken < budget && got.events.len() < total {
            let Ok(Some(message)) = stream.message().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            };
            cursor = message.cursor;
            if !message.data.is_empty() {
                let line = String::from_utf8(message.data).unwrap();
                got.events.push((message.chain_id, message.seq, line));
                taken += 1;
            }
        }
    }
    got
}

/// Lines grouped by chain, in the order given.
fn per_chain<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeMap<String, Vec<String>> {
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in lines {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(chain) = record["chain_id"].as_str() {
            chains
                .entry(chain.to_owned())
                .or_default()
                .push(line.trim_end().to_owned());
        }
    }
    chains
}

fn verdict(service: &QueryService, args: &[&str]) -> std::process::Output {
    std::process::Command::new(cargo_bin("verdict"))
        .args(args)
        .env("VERDICT_QUERY_URL", service.url())
        .env("VERDICT_QUERY_TOKEN", TOKEN)
        .output_within(COMMAND_TIMEOUT)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_resumes_exactly_through_auditor_restarts_and_a_clickhouse_outage() {
    let (broker, mut clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    broker.create_topic(TOPIC, 3).await.unwrap();
    let dir = temp_dir();
    let (key, public) = key_in(dir.path(), "gw");
    let setup = AuditorSetup::trusting(
        broker.bootstrap(),
        clickhouse.url(),
        "follow",
        public.clone(),
        50,
    );
    let service = QueryService::start(
        &clickhouse.url(),
        Some(&public),
        "[limits]\nfollow_poll_millis = 50\n",
    )
    .expect("verdict-query");
    let all = messages(&key);
    let total = all.len();
    let follower = tokio::spawn(follow(service.url(), total));

    let producer = producer(&broker.bootstrap());
    let wave = total / WAVES;
    for (i, part) in all.chunks(wave).enumerate() {
        let mut auditor = AuditorProcess::start(&setup).unwrap();
        produce(&producer, TOPIC, part).await;
        if i == 2 {
            // ClickHouse goes away under both the auditor and the follower, then comes back.
            clickhouse.stop();
            tokio::time::sleep(Duration::from_secs(3)).await;
            clickhouse.resume().unwrap();
        }
        // Killed mid-stream: whatever it stored but did not commit is redelivered to the next.
        tokio::time::sleep(Duration::from_millis(300)).await;
        auditor.kill();
    }
    let _auditor = AuditorProcess::start(&setup).unwrap();
    wait_committed(
        &broker.bootstrap(),
        "follow",
        TOPIC,
        3,
        total as i64,
        Duration::from_secs(180),
    )
    .await;
    let followed = tokio::time::timeout(Duration::from_secs(120), follower)
        .await
        .expect("the follower received every event")
        .unwrap();
    assert!(followed.reconnects >= 100, "{}", followed.reconnects);

    let export = dir.path().join("export.jsonl");
    let out = verdict(&service, &["export", "--out", export.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let exported = std::fs::read_to_string(&export).unwrap();
    let expected = per_chain(exported.lines());
    assert_eq!(expected.values().map(Vec::len).sum::<usize>(), total);
    let received = per_chain(followed.events.iter().map(|(_, _, line)| line.as_str()));
    for chain in CHAINS {
        assert_eq!(
            received[chain].len(),
            expected[chain].len(),
            "{chain}: received {} events",
            received[chain].len()
        );
        assert!(
            received[chain] == expected[chain],
            "{chain} differs from Export"
        );
    }

    // `verdict follow` resumes from its cursor file: two runs give the trail once, and its OCSF
    // lines validate.
    let cursor_file = dir.path().join("cursor");
    let mut ocsf = String::new();
    for max in [700, total - 700] {
        let out = verdict(
            &service,
            &[
                "follow",
                "--format",
                "ocsf",
                "--cursor-file",
                cursor_file.to_str().unwrap(),
                "--max-events",
                &max.to_string(),
            ],
        );
        assert!(out.status.success(), "{out:?}");
        ocsf.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    let ocsf_file = dir.path().join("follow.ocsf.jsonl");
    std::fs::write(&ocsf_file, &ocsf).unwrap();
    assert_valid_ocsf(&ocsf_file);
    let mut uids: Vec<String> = ocsf
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["metadata"]["uid"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(uids.len(), total);
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), total, "verdict follow repeated an event");
}

/// Unix seconds now, as the auditor stamps `ingested_at`.
fn now_secs() -> u32 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u32::try_from(now.unwrap().as_secs()).unwrap()
}

/// A JSONL Follow stream after `cursor`.
async fn open(service: &QueryService, cursor: &str) -> tonic::Streaming<pb::FollowMessage> {
    let request = pb::FollowRequest {
        format: pb::ExportFormat::Jsonl as i32,
        cursor: cursor.into(),
        ..Default::default()
    };
    let mut client = service.client().await;
    client
        .follow(authed(request, TOKEN))
        .await
        .unwrap()
        .into_inner()
}

/// Reads `n` event messages (skipping position-only ones) from a Follow stream.
async fn take(stream: &mut tonic::Streaming<pb::FollowMessage>, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a message within 30 s")
            .unwrap()
            .unwrap();
        if !message.data.is_empty() {
            seqs.push(message.seq);
        }
    }
    seqs
}

/// A ClickHouse with the tables, a chain of `n` signed events (not stored yet), and a query
/// service with `limits` (TOML lines of `[limits]`).
struct Stored {
    _clickhouse: ClickHouse,
    db: clickhouse::Client,
    events: Vec<verdict_proto::SignedEvent>,
    service: QueryService,
    _dir: tempfile::TempDir,
}

async fn unstored_chain(chain_id: &str, n: u64, limits: &str) -> Stored {
    let clickhouse = ClickHouse::start().expect("clickhouse");
    let db = clickhouse.client();
    verdict_tests::audit_rows::migrate(&db).await.unwrap();
    let dir = temp_dir();
    let (key, public) = key_in(dir.path(), "gw");
    let events = chain(chain_id, &key, n);
    let service = QueryService::start(
        &clickhouse.url(),
        Some(&public),
        &format!("[limits]\n{limits}"),
    )
    .expect("verdict-query");
    Stored {
        _clickhouse: clickhouse,
        db,
        events,
        service,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_waits_at_a_hole_for_the_late_event_and_passes_a_real_gap() {
    // Bound whole: its ClickHouse and temp dir live as long as the test.
    let stored = unstored_chain(
        "gw-late",
        30,
        "follow_poll_millis = 50\nfollow_gap_grace_secs = 10\n",
    )
    .await;
    let (db, events, service) = (&stored.db, &stored.events, &stored.service);
    let store = |range: std::ops::Range<usize>| {
        let (db, events) = (db.clone(), events[range].to_vec());
        async move {
            verdict_tests::audit_rows::store_events_ingested_at(&db, &events, now_secs())
                .await
                .unwrap()
        }
    };
    let mut stream = open(service, "").await;

    // seqs 1–5, then 11–15 before 6–10 (stored late): delivered 1–15 in order, nothing skipped.
    store(0..5).await;
    store(10..15).await;
    assert_eq!(take(&mut stream, 5).await, (1..=5).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(500)).await;
    store(5..10).await;
    assert_eq!(take(&mut stream, 10).await, (6..=15).collect::<Vec<_>>());

    // seqs 16–20 never arrive (a real gap): after the grace, 21–30 follow.
    store(20..30).await;
    assert_eq!(take(&mut stream, 10).await, (21..=30).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_too_far_behind_is_disconnected_with_how_to_resume() {
    let stored = unstored_chain(
        "gw-slow",
        5000,
        "follow_poll_millis = 50\nfollow_max_lag = 50\n",
    )
    .await;
    let (events, service) = (&stored.events, &stored.service);
    verdict_tests::audit_rows::store_events(&stored.db, events)
        .await
        .unwrap();

    let mut seqs = Vec::new();
    let mut cursor = String::new();
    let mut disconnects = Vec::new();
    while seqs.len() < events.len() {
        let mut stream = open(service, &cursor).await;
        if disconnects.is_empty() {
            // A client that stops reading while 5,000 events wait.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        while seqs.len() < events.len() {
            match stream.message().await {
                Ok(Some(message)) => {
                    cursor = message.cursor;
                    if !message.data.is_empty() {
                        seqs.push(message.seq);
                    }
                }
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => {
                    disconnects.push(status);
                    break;
                }
            }
        }
    }
    let first = disconnects
        .first()
        .expect("the slow follower was disconnected");
    assert_eq!(first.code(), tonic::Code::ResourceExhausted);
    assert!(
        first.message().contains("reconnect with the cursor"),
        "{}",
        first.message()
    );
    assert_eq!(seqs, (1..=5000).collect::<Vec<u64>>());
}
