//! Every tamper kind, forged with real keys into one topic (one chain per kind), yields exactly
//! the finding the shared verifier and the redelivery rule prescribe, with the offending bytes as
//! evidence, and every untouched event stays `verified` — except the one right after a missing or
//! untrusted event, whose link cannot be checked (`after_break`), and a late one (`out_of_order`).
//! An untrusted event is a finding only: `events` holds no row for it.

use std::collections::BTreeMap;
use std::time::Duration;
use verdict_proto::{ChainWriter, SecretKey, SignedEvent};
use verdict_tests::auditor::{
    findings, produce, producer, statuses, temp_dir, wait_committed, AuditorProcess, AuditorSetup,
};
use verdict_tests::chains::{body, chain, key_in};
use verdict_tests::{Broker, ClickHouse};

const TOPIC: &str = "verdict.events";
const N: u64 = 20;

/// Event `seq` of `original`'s chain re-signed by `key` with `body`, linked like the original.
fn forge(original: &[SignedEvent], seq: u64, key: &SecretKey, body: Vec<u8>) -> SignedEvent {
    let before = &original[seq as usize - 2];
    ChainWriter::resume(&before.chain_id, key.clone(), before.seq, before.hash).append(body)
}

fn message(event: &SignedEvent) -> (String, Vec<u8>) {
    (event.chain_id.clone(), event.encode())
}

/// `(chain_id, seq) → status` for every seq of `chains` stored as `verified`, then `overrides`.
fn expected_statuses(
    chains: &[(&str, u64)],
    missing: &[(&str, u64)],
    overrides: &[(&str, u64, &str)],
) -> BTreeMap<(String, u64), String> {
    let mut expected = BTreeMap::new();
    for &(chain, n) in chains {
        for seq in 1..=n {
            expected.insert((chain.to_owned(), seq), "verified".to_owned());
        }
    }
    for &(chain, seq) in missing {
        expected.remove(&(chain.to_owned(), seq));
    }
    for &(chain, seq, status) in overrides {
        expected.insert((chain.to_owned(), seq), status.to_owned());
    }
    expected
}

struct Env {
    broker: Broker,
    clickhouse: ClickHouse,
    setup: AuditorSetup,
    key: SecretKey,
    /// Trusted for chain `gw-elsewhere` only.
    elsewhere: SecretKey,
    _dir: tempfile::TempDir,
}

async fn env(group: &str) -> Env {
    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    broker.create_topic(TOPIC, 3).await.unwrap();
    let dir = temp_dir();
    let (key, public) = key_in(dir.path(), "gw");
    let (elsewhere_key, elsewhere) = key_in(dir.path(), "elsewhere");
    let setup = AuditorSetup {
        brokers: broker.bootstrap(),
        topic: TOPIC.into(),
        group: group.into(),
        clickhouse_url: clickhouse.url(),
        keys: vec![
            (public, None),
            (elsewhere, Some(vec!["gw-elsewhere".into()])),
        ],
        max_events: 50,
    };
    Env {
        broker,
        clickhouse,
        setup,
        key,
        elsewhere: elsewhere_key,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tamper_kind_yields_exactly_its_finding() {
    let env = env("tamper").await;
    let key = &env.key;
    let unknown_key = SecretKey::generate();
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    let push_all =
        |messages: &mut Vec<_>, events: &[SignedEvent]| messages.extend(events.iter().map(message));

    // bad_signature: a body byte flipped in transit (the tool name's first letter).
    let flip = chain("flip", key, N);
    let mut flipped = flip[9].clone();
    let at = flipped
        .body
        .windows(6)
        .position(|w| w == b"memory")
        .unwrap();
    flipped.body[at] ^= 0x20;
    let flipped_bytes = flipped.encode();
    push_all(&mut messages, &flip[..9]);
    push_all(&mut messages, std::slice::from_ref(&flipped));
    push_all(&mut messages, &flip[10..]);
    // gap: seq 10 dropped.
    let drop = chain("drop", key, N);
    push_all(&mut messages, &drop[..9]);
    push_all(&mut messages, &drop[10..]);
    // swap: 11 before 10.
    let swap = chain("swap", key, N);
    push_all(&mut messages, &swap[..9]);
    push_all(&mut messages, &[swap[10].clone(), swap[9].clone()]);
    push_all(&mut messages, &swap[11..]);
    // replay: seq 5 sent again after 15.
    let replay = chain("replay", key, N);
    push_all(&mut messages, &replay[..15]);
    push_all(&mut messages, &replay[4..5]);
    push_all(&mut messages, &replay[15..]);
    // fork: another seq 8, same key, different body, linked to 7, after 15.
    let fork = chain("fork", key, N);
    let forked = forge(&fork, 8, key, body(1_000));
    push_all(&mut messages, &fork[..15]);
    push_all(&mut messages, std::slice::from_ref(&forked));
    push_all(&mut messages, &fork[15..]);
    // unknown_key: a second seq 10 signed by a key nobody trusts.
    let unknown = chain("unknown", key, N);
    push_all(&mut messages, &unknown[..10]);
    push_all(
        &mut messages,
        &[forge(&unknown, 10, &unknown_key, body(1_001))],
    );
    push_all(&mut messages, &unknown[10..]);
    // key_not_allowed_for_chain: a second seq 10 signed by a key trusted for another chain only.
    let notallowed = chain("notallowed", key, N);
    push_all(&mut messages, &notallowed[..10]);
    push_all(
        &mut messages,
        &[forge(&notallowed, 10, &env.elsewhere, body(1_002))],
    );
    push_all(&mut messages, &notallowed[10..]);
    // malformed: garbage bytes keyed like a chain, in the middle of it.
    let garbage_chain = chain("garbage", key, N);
    let garbage = vec![0xff, 0x00, 0x13, 0x37, 0xde, 0xad, 0xbe, 0xef];
    push_all(&mut messages, &garbage_chain[..10]);
    let garbage_index = messages.len();
    messages.push(("garbage".into(), garbage.clone()));
    push_all(&mut messages, &garbage_chain[10..]);
    let replay_index = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.1 == replay[4].encode())
        .map(|(i, _)| i)
        .nth(1)
        .unwrap();

    let _auditor = AuditorProcess::start(&env.setup).unwrap();
    let positions = produce(&producer(&env.broker.bootstrap()), TOPIC, &messages).await;
    let total = messages.len() as i64;
    wait_committed(
        &env.broker.bootstrap(),
        "tamper",
        TOPIC,
        3,
        total,
        Duration::from_secs(60),
    )
    .await;

    let client = env.clickhouse.client();
    let found = findings(&client).await;
    let summary: Vec<(&str, &str, u64, u64)> = found
        .iter()
        .map(|f| (f.chain_id.as_str(), f.kind.as_str(), f.seq, f.last_seq))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("drop", "gap", 10, 10),
            ("flip", "bad_signature", 10, 10),
            ("fork", "fork", 8, 8),
            ("garbage", "malformed", 0, 0),
            ("notallowed", "key_not_allowed_for_chain", 10, 10),
            ("replay", "replay", 5, 5),
            ("swap", "gap", 10, 10),
            ("swap", "reorder", 10, 10),
            ("unknown", "unknown_key", 10, 10),
        ]
    );
    let evidence = |chain: &str, kind: &str| {
        found
            .iter()
            .find(|f| f.chain_id == chain && f.kind == kind)
            .unwrap()
    };
    let malformed = evidence("garbage", "malformed");
    assert_eq!(malformed.evidence, garbage);
    assert_eq!(
        (malformed.kafka_partition, malformed.kafka_offset),
        positions[garbage_index]
    );
    let replayed = evidence("replay", "replay");
    assert_eq!(replayed.evidence, replay[4].encode());
    assert_eq!(
        (replayed.kafka_partition, replayed.kafka_offset),
        positions[replay_index]
    );
    assert_eq!(evidence("flip", "bad_signature").evidence, flipped_bytes);
    assert_eq!(evidence("fork", "fork").evidence, forked.encode());
    assert_eq!(evidence("drop", "gap").evidence, drop[10].encode());

    let all: Vec<(&str, u64)> = [
        "drop",
        "flip",
        "fork",
        "garbage",
        "notallowed",
        "replay",
        "swap",
        "unknown",
    ]
    .into_iter()
    .map(|c| (c, N))
    .collect();
    let expected = expected_statuses(
        &all,
        &[("drop", 10), ("flip", 10)],
        &[
            ("drop", 11, "after_break"),
            ("flip", 11, "after_break"),
            ("swap", 10, "out_of_order"),
            ("swap", 11, "after_break"),
        ],
    );
    let stored: BTreeMap<(String, u64), String> = statuses(&client)
        .await
        .into_iter()
        .map(|s| ((s.chain_id, s.seq), s.verification))
        .collect();
    assert_eq!(stored, expected);
}

/// After a restart the verifier remembers only the heads, so repeats of old seqs are resolved
/// against the stored rows: the same event from a new offset is a replay, another event at a
/// stored seq is a fork, and the uncommitted tail redelivered from the same offsets is silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_old_seqs_are_judged_against_stored_rows() {
    let env = env("restart").await;
    let events = chain("gw-1", &env.key, 30);
    let producer = producer(&env.broker.bootstrap());
    let first: Vec<_> = events.iter().map(message).collect();
    let mut auditor = AuditorProcess::start(&env.setup).unwrap();
    produce(&producer, TOPIC, &first).await;
    wait_committed(
        &env.broker.bootstrap(),
        "restart",
        TOPIC,
        3,
        30,
        Duration::from_secs(60),
    )
    .await;
    assert!(auditor
        .terminate(Duration::from_secs(30))
        .is_some_and(|s| s.success()));

    let forked = forge(&events, 8, &env.key, body(2_000));
    let later = vec![message(&events[4]), message(&forked)];
    produce(&producer, TOPIC, &later).await;
    let _auditor = AuditorProcess::start(&env.setup).unwrap();
    wait_committed(
        &env.broker.bootstrap(),
        "restart",
        TOPIC,
        3,
        32,
        Duration::from_secs(60),
    )
    .await;
    let client = env.clickhouse.client();
    let summary: Vec<(String, String, u64)> = findings(&client)
        .await
        .into_iter()
        .map(|f| (f.chain_id, f.kind, f.seq))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("gw-1".into(), "fork".into(), 8),
            ("gw-1".into(), "replay".into(), 5)
        ]
    );
    let stored = statuses(&client).await;
    assert_eq!(stored.len(), 30);
    assert!(stored.iter().all(|s| s.verification == "verified"));
}
