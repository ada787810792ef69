//! Issue 21: the stored contract on a replicated, sharded ClickHouse cluster, with real servers.
//!
//! Three gateway chains (each its own key, signed by the gateway's `ChainWriter`, produced keyed
//! by chain as the gateway's shipper does) go through one topic to two auditors in one consumer
//! group writing to a cluster (`[clickhouse] cluster`), while a third auditor in a group of its
//! own writes the same topic to a single server: the reference. The cluster must then hold every
//! row once on each replica, answer WhoTried and Summarize exactly as the single server does, and
//! verify every chain — on one shard of two replicas and on two shards of one replica; and keep
//! exact counts through a replica outage and an auditor killed with SIGKILL under load.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use verdict_proto::pb;
use verdict_proto::SignedEvent;
use verdict_tests::auditor::{
    assert_exactly_verified, count, produce, producer, temp_dir, wait_committed, AuditorProcess,
    AuditorSetup,
};
use verdict_tests::chains::{chain, key_in};
use verdict_tests::cluster::{ClickHouseCluster, Layout, CLUSTER};
use verdict_tests::query::{authed, verify_whole_chain, who_tried, QueryService, TOKEN};
use verdict_tests::{Broker, ClickHouse};

const TOPIC: &str = "verdict.events";
const PARTITIONS: i32 = 4;
const CHAINS: usize = 3;
/// Events per chain: 3 × 16,667 = 50,001 events in all.
const PER_CHAIN: u64 = 16_667;
const TOTAL: u64 = CHAINS as u64 * PER_CHAIN;
/// The time of the test chains' events (`verdict_tests::chains::body`: one per millisecond).
const T0: i64 = 1_700_000_000_000_000_000;
const CLUSTER_GROUP: &str = "cluster";
const SINGLE_GROUP: &str = "single";
/// Generous: two auditor groups, several servers and the test itself share two cores.
const DONE_WITHIN: Duration = Duration::from_secs(600);
/// The tables a cluster replicates, by their local names.
const LOCAL_TABLES: [&str; 7] = [
    "events_local",
    "findings_local",
    "chain_heads_local",
    "events_by_time_local",
    "event_counts_local",
    "witnessed_heads_local",
    "merkle_chunks_local",
];

/// The servers, the chains and the keys of one test.
struct Fleet {
    broker: Broker,
    cluster: ClickHouseCluster,
    single: ClickHouse,
    /// Every event of every chain, interleaved as three gateways would ship them.
    messages: Vec<(String, Vec<u8>)>,
    keys: Vec<(PathBuf, Option<Vec<String>>)>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    async fn start(layout: Layout) -> Self {
        let broker = Broker::start().unwrap();
        broker.create_topic(TOPIC, PARTITIONS).await.unwrap();
        let cluster = ClickHouseCluster::start(layout).unwrap();
        let single = ClickHouse::start().unwrap();
        let dir = temp_dir();
        let mut keys = Vec::new();
        let mut chains: Vec<Vec<SignedEvent>> = Vec::new();
        for i in 1..=CHAINS {
            let chain_id = format!("gw-{i}");
            let (key, public) = key_in(dir.path(), &chain_id);
            chains.push(chain(&chain_id, &key, PER_CHAIN));
            keys.push((public, Some(vec![chain_id])));
        }
        let messages = (0..PER_CHAIN as usize)
            .flat_map(|i| chains.iter().map(move |c| &c[i]))
            .map(|e| (e.chain_id.clone(), e.encode()))
            .collect();
        Self {
            broker,
            cluster,
            single,
            messages,
            keys,
            _dir: dir,
        }
    }

    fn setup(&self, group: &str, clickhouse_url: String) -> AuditorSetup {
        AuditorSetup {
            brokers: self.broker.bootstrap(),
            topic: TOPIC.into(),
            group: group.into(),
            clickhouse_url,
            keys: self.keys.clone(),
            max_events: 1000,
        }
    }

    /// Auditor `i` of the cluster's group, connected to server `i` of the cluster.
    fn cluster_auditor(&self, i: usize) -> AuditorProcess {
        let servers = self.cluster.servers();
        let setup = self.setup(CLUSTER_GROUP, servers[i % servers.len()].url());
        AuditorProcess::start_with_env(&setup, &[("VERDICT_AUDITOR_CLICKHOUSE__CLUSTER", CLUSTER)])
            .unwrap()
    }

    /// The reference: one auditor writing the same topic to one server.
    fn single_auditor(&self) -> AuditorProcess {
        AuditorProcess::start(&self.setup(SINGLE_GROUP, self.single.url())).unwrap()
    }

    async fn produce(&self, range: std::ops::Range<usize>) {
        produce(
            &producer(&self.broker.bootstrap()),
            TOPIC,
            &self.messages[range],
        )
        .await;
    }

    async fn wait_committed(&self, group: &str) {
        wait_committed(
            &self.broker.bootstrap(),
            group,
            TOPIC,
            PARTITIONS,
            TOTAL as i64,
            DONE_WITHIN,
        )
        .await;
    }

    fn query_service(&self, url: &str, env: &[(&str, &str)]) -> QueryService {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|(path, _)| path.display().to_string())
            .collect();
        QueryService::start_with_env(url, None, &format!("trusted_keys = {keys:?}"), env).unwrap()
    }

    /// Waits until every replica has fetched what its shard was sent.
    async fn sync_replicas(&self) {
        for server in self.cluster.servers() {
            for table in LOCAL_TABLES {
                server
                    .client()
                    .query(&format!("SYSTEM SYNC REPLICA {table}"))
                    .execute()
                    .await
                    .unwrap();
            }
        }
    }

    /// Each replica of each shard holds its shard's rows once after `FINAL`, replicas of a shard
    /// agree row for row, and the shards together hold every event exactly once.
    async fn assert_every_row_once_per_replica(&self) {
        self.sync_replicas().await;
        let layout = self.cluster.layout();
        let mut chains_seen = BTreeSet::new();
        let mut rows_in_shards = 0;
        for shard in self.cluster.servers().chunks(layout.replicas) {
            let mut replicas = Vec::new();
            for server in shard {
                let client = server.client();
                let keys: Vec<(String, u64)> = client
                    .query("SELECT chain_id, seq FROM events_local FINAL ORDER BY chain_id, seq")
                    .fetch_all()
                    .await
                    .unwrap();
                let raw = count(&client, "SELECT count() FROM events_local").await;
                assert!(raw >= keys.len() as u64);
                replicas.push(keys);
            }
            assert!(
                replicas.windows(2).all(|w| w[0] == w[1]),
                "replicas of a shard disagree"
            );
            let keys = &replicas[0];
            assert!(
                !keys.is_empty(),
                "a shard without rows: nothing was sharded"
            );
            let distinct: BTreeSet<_> = keys.iter().collect();
            assert_eq!(distinct.len(), keys.len(), "a key twice after FINAL");
            let chains: BTreeSet<String> = keys.iter().map(|(c, _)| c.clone()).collect();
            assert!(
                chains_seen.is_disjoint(&chains),
                "a chain on two shards: {chains:?}"
            );
            chains_seen.extend(chains);
            rows_in_shards += keys.len() as u64;
        }
        assert_eq!(rows_in_shards, TOTAL);
        assert_eq!(chains_seen.len(), CHAINS);
    }

    /// Exact counts through the distributed tables: every event once, verified, no finding, and
    /// every chain's head at its last seq.
    async fn assert_exact_counts(&self) {
        let client = self.cluster.servers()[0].client();
        assert_exactly_verified(&client, TOTAL).await;
        assert_eq!(
            count(&client, "SELECT sum(seq) FROM chain_heads FINAL").await,
            TOTAL
        );
    }

    /// The cluster's query service answers WhoTried and Summarize as the single server's does,
    /// and verifies every chain.
    async fn assert_same_answers_as_one_server(&self) {
        let on_cluster = self.query_service(
            &self.cluster.url(),
            &[("VERDICT_QUERY_CLICKHOUSE__CLUSTER", CLUSTER)],
        );
        let on_single = self.query_service(&self.single.url(), &[]);
        let (mut cluster, mut single) = (on_cluster.client().await, on_single.client().await);
        for (filter, grouped, limit) in questions() {
            assert_eq!(
                who_tried(&mut cluster, filter.clone(), grouped, limit).await,
                who_tried(&mut single, filter, grouped, limit).await
            );
        }
        for (filter, group_by) in summaries() {
            let request = || {
                authed(
                    pb::SummarizeRequest {
                        filter: Some(filter.clone()),
                        group_by: group_by.clone(),
                    },
                    TOKEN,
                )
            };
            let rows = |response: pb::SummarizeResponse| {
                let mut rows: Vec<_> = response
                    .rows
                    .into_iter()
                    .map(|r| (r.keys, r.count))
                    .collect();
                rows.sort();
                rows
            };
            let from_cluster = rows(cluster.summarize(request()).await.unwrap().into_inner());
            let from_single = rows(single.summarize(request()).await.unwrap().into_inner());
            assert!(!from_cluster.is_empty());
            assert_eq!(from_cluster, from_single);
        }
        for i in 1..=CHAINS {
            let report = verify_whole_chain(&mut cluster, &format!("gw-{i}")).await;
            assert!(report.ok, "{report:?}");
            assert_eq!((report.events, report.last_seq), (PER_CHAIN, PER_CHAIN));
        }
    }
}

/// WhoTried questions: destructive calls on any session (grouped and listed), one agent's
/// writes, and everything in a time window.
fn questions() -> Vec<(pb::EventFilter, bool, u32)> {
    let destructive = pb::EventFilter {
        risks: vec![pb::RiskClass::Destructive as i32],
        targets: vec![pb::TargetMatch {
            name: "session_id".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let writes = pb::EventFilter {
        agents: vec!["agent-b".into()],
        tools: vec!["add_*".into()],
        ..Default::default()
    };
    let window = pb::EventFilter {
        time: Some(pb::TimeRange {
            from_unix_nanos: T0 + 5_000_000_000,
            to_unix_nanos: T0 + 6_000_000_000,
        }),
        ..Default::default()
    };
    vec![
        (destructive.clone(), true, 1000),
        (destructive, false, 200),
        (writes, false, 500),
        (window, false, 1000),
    ]
}

/// Summaries over whole hours and partial ones (the hourly counts and rows), and within a few
/// seconds (rows only).
fn summaries() -> Vec<(pb::EventFilter, Vec<i32>)> {
    let by = |d: &[pb::Dimension]| d.iter().map(|&d| d as i32).collect::<Vec<_>>();
    let within = |from_secs: i64, to_secs: i64| pb::EventFilter {
        time: Some(pb::TimeRange {
            from_unix_nanos: T0 + from_secs * 1_000_000_000,
            to_unix_nanos: T0 + to_secs * 1_000_000_000,
        }),
        ..Default::default()
    };
    vec![
        (
            within(-7_000, 7_000),
            by(&[pb::Dimension::Agent, pb::Dimension::Decision]),
        ),
        (
            within(3, 40),
            by(&[pb::Dimension::Tool, pb::Dimension::Risk]),
        ),
    ]
}

async fn audited_like_one_server(layout: Layout) {
    let fleet = Fleet::start(layout).await;
    let auditors = [fleet.cluster_auditor(0), fleet.cluster_auditor(1)];
    let _reference = fleet.single_auditor();
    fleet.produce(0..fleet.messages.len()).await;
    fleet.wait_committed(CLUSTER_GROUP).await;
    fleet.wait_committed(SINGLE_GROUP).await;
    fleet.assert_every_row_once_per_replica().await;
    fleet.assert_exact_counts().await;
    fleet.assert_same_answers_as_one_server().await;
    // The fleet dashboard's view: the newest head of every chain over the group's auditors.
    let expected: BTreeMap<String, f64> = (1..=CHAINS)
        .map(|i| (format!("gw-{i}"), PER_CHAIN as f64))
        .collect();
    assert_eq!(head_seqs_over(&auditors).await, expected);
}

/// `max by (chain_id) (verdict_auditor_chain_head_seq)` over `auditors`, as a dashboard asks it.
async fn head_seqs_over(auditors: &[AuditorProcess]) -> BTreeMap<String, f64> {
    let mut heads = BTreeMap::new();
    for auditor in auditors {
        for line in scrape(auditor).await.lines() {
            let Some(rest) = line.strip_prefix("verdict_auditor_chain_head_seq{chain_id=\"") else {
                continue;
            };
            let (chain_id, value) = rest.split_once("\"} ").unwrap();
            let value: f64 = value.parse().unwrap();
            let entry = heads.entry(chain_id.to_owned()).or_insert(value);
            *entry = entry.max(value);
        }
    }
    heads
}

async fn scrape(auditor: &AuditorProcess) -> String {
    reqwest::get(format!("http://{}/metrics", auditor.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shard_two_replicas_hold_every_row_once_and_answer_like_one_server() {
    audited_like_one_server(Layout::REPLICATED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_hold_every_row_once_and_answer_like_one_server() {
    audited_like_one_server(Layout::SHARDED).await;
}

/// A replica down for 30 s under load (the one the second auditor writes through) and back:
/// that auditor waits for it, nothing is lost, the restarted replica catches up, and queries see
/// no duplicate and no false finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_for_30_s_under_load_loses_and_duplicates_nothing() {
    let mut fleet = Fleet::start(Layout::REPLICATED).await;
    let auditors = [fleet.cluster_auditor(0), fleet.cluster_auditor(1)];
    let _reference = fleet.single_auditor();
    let third = fleet.messages.len() / 3;
    fleet.produce(0..third).await;
    fleet.cluster.server_mut(0, 1).stop();
    let stopped = Instant::now();
    fleet.produce(third..2 * third).await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed())).await;
    fleet.cluster.server_mut(0, 1).resume().unwrap();
    fleet.produce(2 * third..fleet.messages.len()).await;
    fleet.wait_committed(CLUSTER_GROUP).await;
    fleet.wait_committed(SINGLE_GROUP).await;
    fleet.assert_every_row_once_per_replica().await;
    fleet.assert_exact_counts().await;
    fleet.assert_same_answers_as_one_server().await;
    // The outage happened under load: the auditor writing through the stopped replica waited.
    assert!(
        auditors[1].log().contains("clickhouse unavailable"),
        "{}",
        auditors[1].log()
    );
}

/// One of the two auditors killed with SIGKILL while it stores batches; the other takes over its
/// partitions from the committed offsets: exact counts at the end, no finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_killed_mid_batch_leaves_exact_counts() {
    let fleet = Fleet::start(Layout::SHARDED).await;
    let mut doomed = fleet.cluster_auditor(0);
    let _survivor = fleet.cluster_auditor(1);
    let half = fleet.messages.len() / 2;
    fleet.produce(0..half).await;
    wait_storing(&doomed).await;
    doomed.kill();
    fleet.produce(half..fleet.messages.len()).await;
    fleet.wait_committed(CLUSTER_GROUP).await;
    fleet.assert_every_row_once_per_replica().await;
    fleet.assert_exact_counts().await;
}

/// Waits until `auditor` has stored rows and is still reading (its lag is not zero yet).
async fn wait_storing(auditor: &AuditorProcess) {
    let start = Instant::now();
    loop {
        let metrics = scrape(auditor).await;
        let stored = metric(&metrics, "verdict_auditor_events_stored_total");
        if stored > 0.0 {
            return;
        }
        assert!(
            start.elapsed() < DONE_WITHIN,
            "the auditor stored nothing:\n{}",
            auditor.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}
