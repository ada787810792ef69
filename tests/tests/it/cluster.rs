//! Issue 21: the stored contract on a replicated, sharded ClickHouse cluster, with real servers.
//!
//! The layout tests run three real gateway processes (each its own chain and key, in front of the
//! sample server, shipping to one topic) and two auditors in one consumer group writing to a
//! cluster (`[clickhouse] cluster`), drive a mix of real `tools/call` decisions through the
//! gateways (allowed, denied, rate-limited), and then require: every row once on each replica
//! after `FINAL`, exact counts, `VerifyChain` OK for every chain, and WhoTried and Summarize
//! answering as a fresh single-server stack (gateways, one auditor, one server) given the same
//! calls — on one shard of two replicas and on two shards of one replica. The answers compared
//! are those that do not depend on timestamps and ids: counts per agent, tool and decision, and
//! who tried to delete which session with what decision.
//!
//! The 50,000 decisions per layout run by default: on this 2-core machine (the `dev`
//! profile is optimised) one layout's run takes about 40 s and the single-server reference, which
//! both layouts share, about 30 s (BENCHMARKS.md "Cluster").
//!
//! The fault tests use chains signed with the gateway's `ChainWriter` and produced keyed by chain
//! as the gateway's shipper does, so the exact counts are known before the fault: a replica
//! outage under load, and an auditor killed with SIGKILL under load.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use verdict_proto::pb::audit_query_client::AuditQueryClient;
use verdict_proto::pb::{self, DecisionKind};
use verdict_tests::auditor::{
    assert_exactly_verified, committed, count, produce, producer, temp_dir, wait_committed,
    AuditorProcess, AuditorSetup,
};
use verdict_tests::chains::{chain, key_in};
use verdict_tests::cluster::{ClickHouseCluster, Layout, CLUSTER};
use verdict_tests::gateways::{Gateways, TOPIC};
use verdict_tests::query::{authed, verify_whole_chain, who_tried, QueryService, TOKEN};
use verdict_tests::{Broker, ClickHouse};

const PARTITIONS: i32 = 4;
const GATEWAYS: usize = 3;
/// Decisions per layout, as the issue asks.
const DECISIONS: usize = 50_000;
/// Events per signed chain of the fault tests: 3 × 16,667 = 50,001 events in all.
const PER_CHAIN: u64 = 16_667;
const CLUSTER_GROUP: &str = "cluster";
const SINGLE_GROUP: &str = "single";
/// Generous: auditors, gateways, several servers and the test itself share two cores.
const DONE_WITHIN: Duration = Duration::from_secs(1200);
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

/// Each chain's last seq: what the stored side must hold, exactly.
type Heads = BTreeMap<String, u64>;
/// `(public key file, allowed chains)`, as the auditor and query service trust them.
type Keys = Vec<(PathBuf, Option<Vec<String>>)>;

fn setup(broker: &Broker, keys: &Keys, group: &str, clickhouse_url: String) -> AuditorSetup {
    AuditorSetup {
        brokers: broker.bootstrap(),
        topic: TOPIC.into(),
        group: group.into(),
        clickhouse_url,
        keys: keys.clone(),
        max_events: 1000,
    }
}

/// Auditor `i` of the cluster's group, connected to server `i` of the cluster.
fn cluster_auditor(
    broker: &Broker,
    keys: &Keys,
    cluster: &ClickHouseCluster,
    i: usize,
    env: &[(&str, &str)],
) -> AuditorProcess {
    let servers = cluster.servers();
    let setup = setup(
        broker,
        keys,
        CLUSTER_GROUP,
        servers[i % servers.len()].url(),
    );
    let mut env = env.to_vec();
    env.push(("VERDICT_AUDITOR_CLICKHOUSE__CLUSTER", CLUSTER));
    AuditorProcess::start_with_env(&setup, &env).unwrap()
}

async fn wait_all_committed(broker: &Broker, group: &str, heads: &Heads) {
    let total: u64 = heads.values().sum();
    let brokers = broker.bootstrap();
    wait_committed(
        &brokers,
        group,
        TOPIC,
        PARTITIONS,
        total as i64,
        DONE_WITHIN,
    )
    .await;
}

fn query_service(url: &str, keys: &Keys, env: &[(&str, &str)]) -> QueryService {
    let keys: Vec<String> = keys
        .iter()
        .map(|(path, _)| path.display().to_string())
        .collect();
    QueryService::start_with_env(url, None, &format!("trusted_keys = {keys:?}"), env).unwrap()
}

/// The cluster's query service.
fn cluster_query(cluster: &ClickHouseCluster, keys: &Keys) -> QueryService {
    query_service(
        &cluster.url(),
        keys,
        &[("VERDICT_QUERY_CLICKHOUSE__CLUSTER", CLUSTER)],
    )
}

/// Waits until every replica has fetched what its shard was sent.
async fn sync_replicas(cluster: &ClickHouseCluster) {
    for server in cluster.servers() {
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
/// agree row for row, and the shards together hold every event of `heads` exactly once.
async fn assert_every_row_once_per_replica(cluster: &ClickHouseCluster, heads: &Heads) {
    sync_replicas(cluster).await;
    let layout = cluster.layout();
    let mut chains_seen = BTreeSet::new();
    let mut rows_in_shards = 0;
    for shard in cluster.servers().chunks(layout.replicas) {
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
    assert_eq!(rows_in_shards, heads.values().sum::<u64>());
    assert_eq!(chains_seen, heads.keys().cloned().collect());
}

/// Exact counts through the distributed tables: every event once, verified, no finding, every
/// chain's head at its last seq, and `VerifyChain` OK for every chain.
async fn assert_exact_counts(cluster: &ClickHouseCluster, keys: &Keys, heads: &Heads) {
    let client = cluster.servers()[0].client();
    assert_exactly_verified(&client, heads.values().sum()).await;
    assert_eq!(tops(&client, "chain_heads").await, *heads);
    // No duplicate in the hourly counts either (Summarize reads them): a sum cannot un-count.
    let counted = count(&client, "SELECT sum(events) FROM event_counts").await;
    assert_eq!(counted, heads.values().sum::<u64>());
    let query = cluster_query(cluster, keys);
    let mut client = query.client().await;
    for (chain_id, &last) in heads {
        let report = verify_whole_chain(&mut client, chain_id).await;
        assert!(report.ok, "{report:?}");
        assert_eq!((report.events, report.last_seq), (last, last));
    }
}

/// Each chain's highest seq in `table` (after `FINAL`).
async fn tops(client: &clickhouse::Client, table: &str) -> Heads {
    let sql = format!("SELECT chain_id, max(seq) FROM {table} FINAL GROUP BY chain_id");
    let rows: Vec<(String, u64)> = client.query(&sql).fetch_all().await.unwrap();
    rows.into_iter().collect()
}

/// A WhoTried group: agent, target, and (decision, count) pairs.
type DeleteGroup = (String, Option<pb::Target>, Vec<(i32, u64)>);

/// What a security team asks, in the form that does not depend on timestamps and ids.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answers {
    /// Summarize by agent, tool and decision, over every decision.
    counts: Vec<(Vec<String>, u64)>,
    /// WhoTried's groups for session deletes: agent, target, decisions with their counts.
    delete_groups: Vec<DeleteGroup>,
    /// Every session delete attempt as (agent, session id argument, decision), with its count.
    deletes: BTreeMap<(String, String, i32), u64>,
}

async fn answers(client: &mut AuditQueryClient<Channel>) -> Answers {
    let decisions = [
        DecisionKind::Allow,
        DecisionKind::Deny,
        DecisionKind::RateLimited,
    ];
    let every_decision = pb::EventFilter {
        decisions: decisions.iter().map(|&d| d as i32).collect(),
        ..Default::default()
    };
    let group_by = [
        pb::Dimension::Agent,
        pb::Dimension::Tool,
        pb::Dimension::Decision,
    ];
    let request = pb::SummarizeRequest {
        filter: Some(every_decision),
        group_by: group_by.iter().map(|&d| d as i32).collect(),
    };
    let summary = client.summarize(authed(request, TOKEN)).await.unwrap();
    let mut counts: Vec<_> = summary
        .into_inner()
        .rows
        .into_iter()
        .map(|r| (r.keys, r.count))
        .collect();
    counts.sort();
    let session_deletes = pb::EventFilter {
        tools: vec!["session_manager".into()],
        arguments: vec![pb::ArgumentMatch {
            key: "action".into(),
            value: "delete_session".into(),
        }],
        ..Default::default()
    };
    let tried = who_tried(client, session_deletes, true, 10_000).await;
    assert!(!tried.truncated);
    let mut delete_groups: Vec<_> = tried
        .groups
        .into_iter()
        .map(|g| {
            let counts = g.counts.iter().map(|c| (c.decision, c.count)).collect();
            (g.agent_id, g.target, counts)
        })
        .collect();
    delete_groups.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    let mut deletes = BTreeMap::new();
    for attempt in tried.attempts {
        let session = attempt
            .targets
            .iter()
            .find(|t| t.name == "session_id")
            .map(|t| t.value.clone())
            .unwrap_or_default();
        *deletes
            .entry((attempt.agent_id, session, attempt.decision))
            .or_insert(0) += 1;
    }
    Answers {
        counts,
        delete_groups,
        deletes,
    }
}

/// The single-server answers to the calls of the plan, computed once per test run (both layouts
/// compare with the same reference).
async fn single_server_answers() -> Answers {
    static REFERENCE: tokio::sync::OnceCell<Answers> = tokio::sync::OnceCell::const_new();
    REFERENCE.get_or_init(answers_of_one_server).await.clone()
}

/// A fresh stack on one server: the same gateways and calls, one auditor, one ClickHouse.
async fn answers_of_one_server() -> Answers {
    let broker = Broker::start().unwrap();
    broker.create_topic(TOPIC, PARTITIONS).await.unwrap();
    let single = ClickHouse::start().unwrap();
    let gateways = Gateways::start(&broker, GATEWAYS).unwrap();
    let keys = gateways.keys();
    let setup = setup(&broker, &keys, SINGLE_GROUP, single.url());
    let _auditor = AuditorProcess::start(&setup).unwrap();
    gateways.drive(DECISIONS).await;
    let heads = gateways.shipped().await;
    wait_all_committed(&broker, SINGLE_GROUP, &heads).await;
    let query = query_service(&single.url(), &keys, &[]);
    answers(&mut query.client().await).await
}

/// Three gateways, two auditors, a cluster of `layout`, [`DECISIONS`] calls: every row once per
/// replica, exact counts, every chain verified, the fleet's head metrics, and the same answers as
/// one server.
async fn audited_like_one_server(layout: Layout) {
    let started = Instant::now();
    let cluster = ClickHouseCluster::start(layout).unwrap();
    let broker = Broker::start().unwrap();
    broker.create_topic(TOPIC, PARTITIONS).await.unwrap();
    let gateways = Gateways::start(&broker, GATEWAYS).unwrap();
    let keys = gateways.keys();
    // Plain logs: the assigned partitions are read from them. The load starts once both
    // auditors hold their half, so each stores a known half of the chains (a rebalance under
    // load has its own test: `auditor_group::a_member_joining_while_a_batch_is_being_stored…`).
    let plain = [("NO_COLOR", "1")];
    let auditors = [0, 1].map(|i| cluster_auditor(&broker, &keys, &cluster, i, &plain));
    let auditors = holding_half(auditors).await;
    let up = started.elapsed();
    gateways.drive(DECISIONS).await;
    let heads = gateways.shipped().await;
    let driven = started.elapsed();
    assert!(heads.values().sum::<u64>() > DECISIONS as u64);
    wait_all_committed(&broker, CLUSTER_GROUP, &heads).await;
    eprintln!(
        "{layout:?}: servers and services up in {up:?}; {DECISIONS} decisions ({} events) \
         through {GATEWAYS} gateways by {:?}; stored by 2 auditors by {:?}",
        heads.values().sum::<u64>(),
        driven,
        started.elapsed()
    );
    assert_every_row_once_per_replica(&cluster, &heads).await;
    assert_exact_counts(&cluster, &keys, &heads).await;
    // The fleet dashboard's view: the newest head of every chain over the group's auditors.
    let expected: BTreeMap<String, f64> =
        heads.iter().map(|(c, &s)| (c.clone(), s as f64)).collect();
    assert_eq!(head_seqs_over(&auditors).await, expected);
    let on_cluster = answers(&mut cluster_query(&cluster, &keys).client().await).await;
    drop((auditors, gateways, broker, cluster));
    let started = Instant::now();
    let on_one_server = single_server_answers().await;
    eprintln!("the single-server reference took {:?}", started.elapsed());
    assert_eq!(on_cluster, on_one_server);
    let decided: BTreeSet<&str> = on_cluster
        .counts
        .iter()
        .map(|(k, _)| k[2].as_str())
        .collect();
    assert_eq!(decided, BTreeSet::from(["allow", "deny", "rate_limited"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shard_two_replicas_hold_every_row_once_and_answer_like_one_server() {
    audited_like_one_server(Layout::REPLICATED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_hold_every_row_once_and_answer_like_one_server() {
    audited_like_one_server(Layout::SHARDED).await;
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

/// Signed chains `gw-1` … `gw-3` on a topic, for the fault tests: every event known up front.
struct SignedChains {
    broker: Broker,
    /// Every event of every chain, interleaved as three gateways would ship them.
    messages: Vec<(String, Vec<u8>)>,
    keys: Keys,
    heads: Heads,
    _dir: tempfile::TempDir,
}

impl SignedChains {
    async fn start() -> Self {
        let broker = Broker::start().unwrap();
        broker.create_topic(TOPIC, PARTITIONS).await.unwrap();
        let dir = temp_dir();
        let (mut keys, mut chains, mut heads) = (Vec::new(), Vec::new(), Heads::new());
        for i in 1..=GATEWAYS {
            let chain_id = format!("gw-{i}");
            let (key, public) = key_in(dir.path(), &chain_id);
            chains.push(chain(&chain_id, &key, PER_CHAIN));
            keys.push((public, Some(vec![chain_id.clone()])));
            heads.insert(chain_id, PER_CHAIN);
        }
        let messages = (0..PER_CHAIN as usize)
            .flat_map(|i| chains.iter().map(move |c: &Vec<_>| &c[i]))
            .map(|e: &verdict_proto::SignedEvent| (e.chain_id.clone(), e.encode()))
            .collect();
        Self {
            broker,
            messages,
            keys,
            heads,
            _dir: dir,
        }
    }

    /// Produces `range` of the messages; returns the partition of each chain produced.
    async fn produce(&self, range: std::ops::Range<usize>) -> BTreeMap<String, i32> {
        let producer = producer(&self.broker.bootstrap());
        let messages = &self.messages[range];
        let placed = produce(&producer, TOPIC, messages).await;
        let chains = messages.iter().map(|(chain_id, _)| chain_id.clone());
        chains.zip(placed.into_iter().map(|(p, _)| p)).collect()
    }

    /// Auditor `i` (plain logs: tests read the assigned partitions from them).
    fn auditor(&self, cluster: &ClickHouseCluster, i: usize) -> AuditorProcess {
        self.auditor_with_env(cluster, i, &[("NO_COLOR", "1")])
    }

    /// Both auditors of the group, each once it holds half the partitions: no rebalance is
    /// left to happen under the load (see `audited_like_one_server`).
    async fn auditors(&self, cluster: &ClickHouseCluster) -> [AuditorProcess; 2] {
        holding_half([self.auditor(cluster, 0), self.auditor(cluster, 1)]).await
    }

    fn auditor_with_env(
        &self,
        cluster: &ClickHouseCluster,
        i: usize,
        env: &[(&str, &str)],
    ) -> AuditorProcess {
        cluster_auditor(&self.broker, &self.keys, cluster, i, env)
    }

    async fn wait_committed(&self) {
        wait_all_committed(&self.broker, CLUSTER_GROUP, &self.heads).await;
    }

    /// Nothing lost, nothing twice on any replica, no finding, every chain verified.
    async fn assert_exact(&self, cluster: &ClickHouseCluster) {
        assert_every_row_once_per_replica(cluster, &self.heads).await;
        assert_exact_counts(cluster, &self.keys, &self.heads).await;
    }
}

/// A replica down for 30 s under load (the one the second auditor writes through) and back:
/// that auditor waits for it, nothing is lost, the restarted replica catches up, and queries see
/// no duplicate and no false finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_for_30_s_under_load_loses_and_duplicates_nothing() {
    let mut cluster = ClickHouseCluster::start(Layout::REPLICATED).unwrap();
    let chains = SignedChains::start().await;
    let auditors = chains.auditors(&cluster).await;
    through_a_30_s_outage(&mut cluster, &chains).await;
    // The outage happened under load: the auditor writing through the stopped replica waited.
    assert!(
        auditors[1].log().contains("clickhouse unavailable"),
        "{}",
        auditors[1].log()
    );
}

/// `insert_quorum = 2` on one shard of two replicas, the second down for 30 s under load: the
/// auditor (writing through the first, which stays up) stores and commits nothing while only one
/// replica could hold it — so losing that replica too would lose nothing acknowledged — and
/// resumes when the second is back: nothing lost, no duplicate, no finding. Without the quorum the
/// auditor goes on committing during the outage (rows then on one server only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_quorum_of_two_commits_nothing_while_a_replica_is_down() {
    let mut cluster = ClickHouseCluster::start(Layout::REPLICATED).unwrap();
    let chains = SignedChains::start().await;
    let quorum = [("VERDICT_AUDITOR_CLICKHOUSE__INSERT_QUORUM", "2")];
    let _auditor = chains.auditor_with_env(&cluster, 0, &quorum);
    let before_outage = chains.messages.len() / 3;
    let during_outage = through_a_30_s_outage(&mut cluster, &chains).await;
    assert_eq!(during_outage, before_outage as i64);
}

/// Produces the chains in thirds, replica 2 of the shard down for 30 s from the moment the first
/// third is committed, through the second, and back for the last; then checks every count. Returns
/// what the group had committed by the end of the outage.
async fn through_a_30_s_outage(cluster: &mut ClickHouseCluster, chains: &SignedChains) -> i64 {
    let third = chains.messages.len() / 3;
    chains.produce(0..third).await;
    let brokers = chains.broker.bootstrap();
    let partial = third as i64;
    wait_committed(
        &brokers,
        CLUSTER_GROUP,
        TOPIC,
        PARTITIONS,
        partial,
        DONE_WITHIN,
    )
    .await;
    cluster.server_mut(0, 1).stop();
    let stopped = Instant::now();
    chains.produce(third..2 * third).await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed())).await;
    let during =
        tokio::task::spawn_blocking(move || committed(&brokers, CLUSTER_GROUP, TOPIC, PARTITIONS))
            .await
            .unwrap();
    cluster.server_mut(0, 1).resume().unwrap();
    chains.produce(2 * third..chains.messages.len()).await;
    chains.wait_committed().await;
    chains.assert_exact(cluster).await;
    during
}

/// The crash hook's line: the auditor stored a batch's events, not yet its heads or offsets.
const MID_BATCH: &str = "VERDICT_AUDITOR_FAULT reached";

/// One of two auditors killed with SIGKILL inside a batch — its third batch's events stored, its
/// chain heads and offsets not (the crash hook waits there) — while the other stores its own
/// chains; the survivor goes on with the second half of the load and takes the partitions over
/// from the committed offsets: exact counts at the end, no duplicate visible to queries, no
/// finding. The doomed auditor joined first, so it is the group's leader: on tansu 0.6 its
/// expiry leaves its partitions to no one until the survivor's watchdog sees their backlog
/// standing still and rejoins the group (before the watchdog watched caught-up auditors too,
/// this test waited forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_killed_mid_batch_leaves_exact_counts() {
    let cluster = ClickHouseCluster::start(Layout::SHARDED).unwrap();
    let chains = SignedChains::start().await;
    // Plain logs: the test reads the assigned partitions from them.
    let plain = ("NO_COLOR", "1");
    let pause = [("VERDICT_AUDITOR_FAULT", "3:rows:pause"), plain];
    let mut doomed = chains.auditor_with_env(&cluster, 0, &pause);
    let survivor = chains.auditor_with_env(&cluster, 1, &[plain]);
    let owned = wait_half_assigned(&doomed).await;
    let others = wait_half_assigned(&survivor).await;
    let half = chains.messages.len() / 2;
    let placed = chains.produce(0..half).await;
    for partitions in [&owned, &others] {
        let busy = placed.values().any(|p| partitions.contains(p));
        assert!(
            busy,
            "an auditor holds no chain: {partitions:?} of {placed:?}"
        );
    }
    wait_until("the pause inside a batch", || async {
        doomed.log().contains(MID_BATCH)
    })
    .await;
    // Provably inside a batch: the doomed auditor's chains have events stored above their heads.
    let client = cluster.servers()[0].client();
    let (events, heads) = (
        tops(&client, "events").await,
        tops(&client, "chain_heads").await,
    );
    let inside: Vec<&String> = placed
        .iter()
        .filter(|(chain_id, p)| owned.contains(p) && events[*chain_id] > heads[*chain_id])
        .map(|(chain_id, _)| chain_id)
        .collect();
    assert!(!inside.is_empty(), "events {events:?}, heads {heads:?}");
    doomed.kill();
    // The other auditor goes on with the second half, and takes the doomed one's chains over.
    chains.produce(half..chains.messages.len()).await;
    chains.wait_committed().await;
    chains.assert_exact(&cluster).await;
}

/// The README's "Converting a single server to a cluster", step by step, with the single server
/// outside the cluster (its rows read with `remote()`): the chains' first half audited on one
/// server; that auditor stopped; the cluster's schema made by `verdict-auditor --migrate-only`
/// (nothing read); the rows copied through the distributed tables and counted against the old
/// server; then two auditors on the cluster store the second half from the group's committed
/// offsets. Exact counts, no finding, VerifyChain OK over the whole of every chain: the chains
/// go on across the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_converted_to_a_cluster_by_the_documented_procedure_loses_nothing() {
    let chains = SignedChains::start().await;
    let single = ClickHouse::start().unwrap();
    let on_single = setup(&chains.broker, &chains.keys, CLUSTER_GROUP, single.url());
    let mut before = AuditorProcess::start(&on_single).unwrap();
    let half = chains.messages.len() / 2;
    chains.produce(0..half).await;
    let brokers = chains.broker.bootstrap();
    wait_committed(
        &brokers,
        CLUSTER_GROUP,
        TOPIC,
        PARTITIONS,
        half as i64,
        DONE_WITHIN,
    )
    .await;
    // 1. Stop the auditors.
    assert!(before.terminate(Duration::from_secs(30)).is_some());
    let stored = tops(&single.client(), "events").await;
    assert_eq!(stored.values().sum::<u64>(), half as u64);
    // 2.-4. The cluster, and its schema, with nothing read.
    let cluster = ClickHouseCluster::start(Layout::SHARDED).unwrap();
    let servers = cluster.servers();
    let on_cluster = setup(
        &chains.broker,
        &chains.keys,
        CLUSTER_GROUP,
        servers[0].url(),
    );
    on_cluster.migrate_only(&[("VERDICT_AUDITOR_CLICKHOUSE__CLUSTER", CLUSTER)]);
    let client = servers[0]
        .client()
        .with_setting("insert_distributed_sync", "1");
    assert_eq!(count(&client, "SELECT count() FROM events").await, 0);
    assert_eq!(
        committed(&brokers, CLUSTER_GROUP, TOPIC, PARTITIONS),
        half as i64
    );
    // 5. Copy the rows through the distributed tables, and count them against the old server.
    for table in [
        "events",
        "findings",
        "chain_heads",
        "witnessed_heads",
        "merkle_chunks",
    ] {
        let old = format!("remote('{}', default.{table})", single.tcp_address());
        let copy = format!("INSERT INTO {table} SELECT * FROM {old} FINAL");
        client.query(&copy).execute().await.unwrap();
    }
    assert_eq!(tops(&client, "events").await, stored);
    assert_eq!(tops(&client, "chain_heads").await, stored);
    // 6. The auditors on the cluster.
    let _auditors = chains.auditors(&cluster).await;
    chains.produce(half..chains.messages.len()).await;
    chains.wait_committed().await;
    chains.assert_exact(&cluster).await;
}

/// One of the two auditors killed with SIGKILL while it stores batches, not provably inside one;
/// the other takes over its partitions from the committed offsets: exact counts, no finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_killed_under_load_leaves_exact_counts() {
    let cluster = ClickHouseCluster::start(Layout::SHARDED).unwrap();
    let chains = SignedChains::start().await;
    let [mut doomed, _survivor] = chains.auditors(&cluster).await;
    let half = chains.messages.len() / 2;
    chains.produce(0..half).await;
    wait_until("stored events", || async {
        let metrics = scrape(&doomed).await;
        metrics
            .lines()
            .any(|l| l.starts_with("verdict_auditor_events_stored_total ") && !l.ends_with(" 0"))
    })
    .await;
    doomed.kill();
    chains.produce(half..chains.messages.len()).await;
    chains.wait_committed().await;
    chains.assert_exact(&cluster).await;
}

/// `auditors`, once each holds half the topic's partitions.
async fn holding_half(auditors: [AuditorProcess; 2]) -> [AuditorProcess; 2] {
    for auditor in &auditors {
        wait_half_assigned(auditor).await;
    }
    auditors
}

/// Waits until `auditor` holds half the topic's partitions (both auditors are in the group);
/// returns them.
async fn wait_half_assigned(auditor: &AuditorProcess) -> BTreeSet<i32> {
    let last_assigned = || {
        let log = auditor.log();
        let line = log.lines().rfind(|l| l.contains("partitions assigned"))?;
        let ids = line.split_once("ids=[")?.1.split_once(']')?.0;
        ids.split(", ")
            .map(|id| id.parse().ok())
            .collect::<Option<BTreeSet<i32>>>()
    };
    let half = PARTITIONS as usize / 2;
    wait_until("half the partitions", || async {
        last_assigned().is_some_and(|ids| ids.len() == half)
    })
    .await;
    last_assigned().unwrap_or_default()
}

/// Polls `done` until it holds (panics after [`DONE_WITHIN`], naming `what` it waited for).
async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < DONE_WITHIN,
            "no {what} within {DONE_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
