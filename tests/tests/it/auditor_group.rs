//! Several auditors in one consumer group: two start, a third joins and one leaves mid-stream;
//! and a member joins while another holds a batch it has not stored yet. Partitions move between
//! them with uncommitted tails; the persisted chain heads, the redelivery rule and the revoke
//! callback (which stores and commits the batch in flight before partitions move) must still
//! give exactly one `verified` row per event, every event counted once in the hourly sums, and
//! no findings.

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

/// The fault hook's line (`VERDICT_AUDITOR_FAULT`).
const FAULT_REACHED: &str = "VERDICT_AUDITOR_FAULT reached";

/// Waits until `auditor`'s log has `line`.
async fn wait_logged(auditor: &AuditorProcess, line: &str) {
    let start = Instant::now();
    while !auditor.log().contains(line) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "never logged {line:?}:\n{}",
            auditor.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `auditor` has been assigned partitions (the group has rebalanced onto it).
async fn wait_assigned(auditor: &AuditorProcess) {
    wait_logged(auditor, "partitions assigned").await;
}

/// A broker with the topic, a ClickHouse server, an auditor setup trusting the chains' key,
/// and the chains' encoded events interleaved as gateways would send them.
struct Stream {
    broker: Broker,
    clickhouse: ClickHouse,
    setup: AuditorSetup,
    events: Vec<(String, Vec<u8>)>,
    _dir: tempfile::TempDir,
}

impl Stream {
    async fn start(group: &str) -> Self {
        let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
        broker.create_topic(TOPIC, PARTITIONS).await.unwrap();
        let dir = temp_dir();
        let (key, public) = key_in(dir.path(), "gw");
        let chains: Vec<_> = (1..=CHAINS)
            .map(|i| chain(&format!("gw-{i}"), &key, PER_CHAIN))
            .collect();
        let events = (0..PER_CHAIN as usize)
            .flat_map(|i| chains.iter().map(move |c| &c[i]))
            .map(|e| (e.chain_id.clone(), e.encode()))
            .collect();
        let setup =
            AuditorSetup::trusting(broker.bootstrap(), clickhouse.url(), group, public, 300);
        Self {
            broker,
            clickhouse,
            setup,
            events,
            _dir: dir,
        }
    }

    /// Waits until the group committed every event, then checks that each is stored once,
    /// verified, counted once in `event_counts`, with no finding and the heads at the end.
    async fn assert_each_event_stored_and_counted_once(&self) {
        let total = self.events.len();
        wait_committed(
            &self.broker.bootstrap(),
            &self.setup.group,
            TOPIC,
            PARTITIONS,
            total as i64,
            Duration::from_secs(180),
        )
        .await;
        let client = self.clickhouse.client();
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
        // The hourly counts are summed by a materialized view at insert: an event stored twice
        // (a batch finished by an auditor that lost its partitions, and again by their new
        // owner) is counted twice there, whatever `FINAL` hides in `events`.
        assert_eq!(
            count(&client, "SELECT sum(events) FROM event_counts").await,
            total as u64
        );
        assert_eq!(
            count(&client, "SELECT sum(seq) FROM chain_heads FINAL").await,
            total as u64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_joining_and_leaving_the_group_lose_nothing_and_duplicate_nothing() {
    let stream = Stream::start("group").await;
    let all = &stream.events;
    let third = all.len() / 3;
    let producer = producer(&stream.broker.bootstrap());

    let mut first = AuditorProcess::start(&stream.setup).unwrap();
    let second = AuditorProcess::start(&stream.setup).unwrap();
    wait_assigned(&first).await;
    wait_assigned(&second).await;
    produce(&producer, TOPIC, &all[..third]).await;
    let third_auditor = AuditorProcess::start(&stream.setup).unwrap();
    produce(&producer, TOPIC, &all[third..2 * third]).await;
    // The group must have rebalanced onto the newcomer before one member leaves.
    wait_assigned(&third_auditor).await;
    let status = first.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{}", first.log());
    produce(&producer, TOPIC, &all[2 * third..]).await;

    stream.assert_each_event_stored_and_counted_once().await;
    // Every auditor took part.
    for auditor in [&first, &second, &third_auditor] {
        assert!(
            auditor.log().contains("partitions assigned"),
            "{}",
            auditor.log()
        );
    }
}

/// The race CI found in the cluster tests, made certain: the first auditor holds its second
/// batch for 15 s before storing it, without polling, while a second auditor joins; its third
/// batch is then held as well, so the rebalance reaches it with that batch in flight. The events
/// trickle in one per chain at a time for longer than both holds, and a batch waits up to 3 s to
/// fill, so no batch is empty and every batch holds messages of every partition, including
/// those that move. Without the revoke callback finishing the batch, the newcomer read
/// the moved partitions from the last commit and stored the held events itself, and the held
/// batch landed on top: its events counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_while_a_batch_is_being_stored_counts_nothing_twice() {
    let stream = Stream::start("held").await;
    let holds = [
        ("VERDICT_AUDITOR_FAULT", "2:hold=15,3:hold=15"),
        ("VERDICT_AUDITOR_BATCH__MAX_WAIT_MS", "3000"),
    ];
    let holding = AuditorProcess::start_with_env(&stream.setup, &holds).unwrap();
    wait_assigned(&holding).await;
    let producer = producer(&stream.broker.bootstrap());
    let trickle = async {
        for round in stream.events.chunks(CHAINS) {
            produce(&producer, TOPIC, round).await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    let newcomer = async {
        wait_logged(&holding, FAULT_REACHED).await;
        let newcomer = AuditorProcess::start(&stream.setup).unwrap();
        wait_assigned(&newcomer).await;
        newcomer
    };
    let ((), newcomer) = tokio::join!(trickle, newcomer);

    stream.assert_each_event_stored_and_counted_once().await;
    let log = holding.log();
    assert_eq!(log.matches(FAULT_REACHED).count(), 2, "{log}");
    assert!(
        log.contains("batch in flight stored and committed before revoke"),
        "{log}"
    );
    assert!(newcomer.log().contains("partitions assigned"));
}
