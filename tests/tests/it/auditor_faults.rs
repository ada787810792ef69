//! Fault tests with exact counts: the auditor crashing between insert and offset commit, and
//! ClickHouse down for 20 s mid-stream. Nothing may be lost, nothing may show twice, and a
//! redelivered tail must not be mistaken for a replay.

use std::time::Duration;
use verdict_proto::SecretKey;
use verdict_tests::auditor::{
    assert_exactly_verified, committed, count, findings, produce, producer, temp_dir,
    wait_committed, AuditorProcess, AuditorSetup,
};
use verdict_tests::chains::{chain, key_in};
use verdict_tests::{Broker, ClickHouse};

const TOPIC: &str = "verdict.events";

/// Three interleaved chains of `n` events each, as `(key, payload)` messages.
fn messages(key: &SecretKey, n: u64) -> Vec<(String, Vec<u8>)> {
    let chains: Vec<_> = ["gw-1", "gw-2", "gw-3"]
        .into_iter()
        .map(|id| chain(id, key, n))
        .collect();
    (0..n as usize)
        .flat_map(|i| chains.iter().map(move |c| &c[i]))
        .map(|e| (e.chain_id.clone(), e.encode()))
        .collect()
}

async fn setup(
    group: &str,
    broker: &Broker,
    clickhouse: &ClickHouse,
) -> (AuditorSetup, SecretKey, tempfile::TempDir) {
    broker.create_topic(TOPIC, 3).await.unwrap();
    let dir = temp_dir();
    let (key, public) = key_in(dir.path(), "gw");
    let setup = AuditorSetup::trusting(broker.bootstrap(), clickhouse.url(), group, public, 500);
    (setup, key, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_insert_and_commit_loses_nothing_and_raises_no_false_replay() {
    crash_then_restart("crash", "3").await;
}

/// The chain heads of the third batch are never written: on restart the auditor's heads are one
/// batch behind the stored events, and the redelivered batch must still not be written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_event_and_head_inserts_writes_no_event_twice() {
    crash_then_restart("crash-rows", "3:rows").await;
}

async fn crash_then_restart(group: &str, crash_point: &str) {
    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    let (setup, key, _dir) = setup(group, &broker, &clickhouse).await;
    let all = messages(&key, 2000);
    let mut crashing =
        AuditorProcess::start_with_env(&setup, &[("VERDICT_AUDITOR_FAULT", crash_point)]).unwrap();
    produce(&producer(&broker.bootstrap()), TOPIC, &all).await;
    let status = crashing
        .wait_exit(Duration::from_secs(60))
        .expect("the crash hook aborts the auditor");
    assert!(!status.success(), "{}", crashing.log());
    assert!(crashing.log().contains("VERDICT_AUDITOR_FAULT reached"));

    // The third batch is stored but its offsets are not committed: a tail will be redelivered.
    let stored = count(&clickhouse.client(), "SELECT count() FROM events FINAL").await;
    let done = committed(&broker.bootstrap(), group, TOPIC, 3) as u64;
    assert!(stored > done, "stored {stored}, committed {done}");

    let _auditor = AuditorProcess::start(&setup).unwrap();
    wait_committed(
        &broker.bootstrap(),
        group,
        TOPIC,
        3,
        6000,
        Duration::from_secs(120),
    )
    .await;
    assert_exactly_verified(&clickhouse.client(), 6000).await;
    // Written once: the hourly counts add up every row inserted, a merge cannot hide a repeat.
    assert_eq!(
        count(&clickhouse.client(), "SELECT sum(events) FROM event_counts").await,
        6000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_for_20_seconds_pauses_consumption_and_loses_nothing() {
    let (broker, mut clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    let (setup, key, _dir) = setup("outage", &broker, &clickhouse).await;
    let all = messages(&key, 3000);
    let producer = producer(&broker.bootstrap());
    let auditor = AuditorProcess::start(&setup).unwrap();
    produce(&producer, TOPIC, &all[..3000]).await;
    wait_committed(
        &broker.bootstrap(),
        "outage",
        TOPIC,
        3,
        3000,
        Duration::from_secs(60),
    )
    .await;

    clickhouse.stop();
    produce(&producer, TOPIC, &all[3000..]).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    // Nothing was committed while nothing could be stored.
    assert_eq!(committed(&broker.bootstrap(), "outage", TOPIC, 3), 3000);
    let health = reqwest::get(format!("http://{}/healthz", auditor.metrics))
        .await
        .unwrap();
    assert_eq!(health.status(), 503);

    clickhouse.resume().unwrap();
    wait_committed(
        &broker.bootstrap(),
        "outage",
        TOPIC,
        3,
        9000,
        Duration::from_secs(120),
    )
    .await;
    assert_exactly_verified(&clickhouse.client(), 9000).await;
    let health = reqwest::get(format!("http://{}/healthz", auditor.metrics))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// Event `i` (1-based) of a live test chain: decisions, and every 20th a checkpoint promising the
/// next within 2 s, so an auditor that stops reading for longer would see the chain as silent.
fn live_body(i: u64) -> Vec<u8> {
    use prost::Message;
    use verdict_proto::pb::{self, event_body::Kind};
    let kind = if i.is_multiple_of(20) {
        Kind::Checkpoint(pb::Checkpoint {
            head_seq: i - 1,
            head_hash: vec![0; 32],
            reason: "periodic".into(),
            interval_secs: 2,
            ..Default::default()
        })
    } else {
        Kind::Decision(pb::Decision {
            tool: "memory_read".into(),
            decision: pb::DecisionKind::Allow as i32,
            ..Default::default()
        })
    };
    pb::EventBody {
        time_unix_nanos: 1_700_000_000_000_000_000 + i as i64,
        kind: Some(kind),
    }
    .encode_to_vec()
}

/// The attack on the witness: the auditor is `kill -9`ed and restarted three times while three
/// gateways keep writing (100 events/s each, a checkpoint every 0.2 s). A restarted member must
/// not sit on an empty assignment while the topic fills up, and an auditor that is not reading
/// must not call the chains it does not hear silent: every row is stored within a bound, exactly
/// once, and there is no finding at all — no `silent_chain` either, with a grace of 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_under_load_catches_up_with_no_false_silence() {
    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    let (setup, key, _dir) = setup("kill9", &broker, &clickhouse).await;
    let grace = [("VERDICT_AUDITOR_CHECKPOINT_GRACE_SECS", "3")];
    let mut writers: Vec<_> = ["gw-1", "gw-2", "gw-3"]
        .into_iter()
        .map(|id| verdict_proto::ChainWriter::new(id, key.clone()))
        .collect();
    let producer = producer(&broker.bootstrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (producer, stop) = (producer.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0u64;
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let mut tick = Vec::new();
                for _ in 0..10 {
                    i += 1;
                    for writer in &mut writers {
                        let event = writer.append(live_body(i));
                        tick.push((event.chain_id.clone(), event.encode()));
                    }
                }
                produce(&producer, TOPIC, &tick).await;
                sent += tick.len() as u64;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent
        })
    };
    let mut auditor = AuditorProcess::start_with_env(&setup, &grace).unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(8)).await;
        auditor.kill();
        auditor = AuditorProcess::start_with_env(&setup, &grace).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.cancel();
    let total = load.await.unwrap();
    // The bound: session expiry of the killed member (10 s) plus a rebalance and the backlog.
    wait_committed(
        &broker.bootstrap(),
        "kill9",
        TOPIC,
        3,
        total as i64,
        Duration::from_secs(90),
    )
    .await;
    let client = clickhouse.client();
    assert_eq!(
        count(&client, "SELECT count() FROM events FINAL").await,
        total
    );
    assert_eq!(
        count(&client, "SELECT count() FROM events").await,
        total,
        "written once"
    );
    let found = findings(&client).await;
    assert!(found.is_empty(), "{found:?}\n{}", auditor.log());
}
