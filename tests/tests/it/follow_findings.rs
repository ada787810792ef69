//! Findings in the `Follow` feed, against the real pipeline: a forged event (signed by a key the
//! auditor does not trust) and an undecodable message go onto the topic between genuine events;
//! an auditor stores them and crashes before committing, so the next one raises the same
//! findings again from the redelivered messages. A follower that reconnects after every message
//! with its last cursor gets each event and each finding exactly once; `verdict follow --items
//! all --format ocsf` prints them as OCSF (Detection Finding 2004 for the findings) that the
//! published validators accept; the forwarder delivers them to Debian's rsyslog as CEF.

use std::collections::BTreeSet;
use std::time::Duration;
use verdict_proto::pb;
use verdict_proto::{ChainWriter, SecretKey};
use verdict_tests::auditor::{
    count, produce, producer, temp_dir, wait_committed, AuditorProcess, AuditorSetup,
};
use verdict_tests::bins::cargo_bin;
use verdict_tests::chains::{body, chain, key_in};
use verdict_tests::forwarder::start_forwarder;
use verdict_tests::ocsf::assert_valid_ocsf;
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::query::{authed, QueryService, TOKEN};
use verdict_tests::rsyslog::{cef_value, Rsyslog};
use verdict_tests::{Broker, ClickHouse};

const TOPIC: &str = "verdict.events";
const CHAIN: &str = "gw-find";
const EVENTS: u64 = 15;
/// The genuine events and the two findings.
const ITEMS: usize = EVENTS as usize + 2;

/// Genuine seqs 1–10, a seq 11 signed by an untrusted key, bytes that are no envelope, 11–15.
fn messages(key: &SecretKey) -> Vec<(String, Vec<u8>)> {
    let genuine = chain(CHAIN, key, EVENTS);
    let before = &genuine[9];
    let forged = ChainWriter::resume(CHAIN, SecretKey::from_seed(&[66; 32]), 10, before.hash)
        .append(body(9_999));
    let mut all: Vec<_> = genuine[..10]
        .iter()
        .map(|e| (CHAIN.to_owned(), e.encode()))
        .collect();
    all.push((CHAIN.to_owned(), forged.encode()));
    all.push((CHAIN.to_owned(), b"not an envelope".to_vec()));
    all.extend(genuine[10..].iter().map(|e| (CHAIN.to_owned(), e.encode())));
    all
}

/// One Follow message's identity: `chain:seq` for an event, the finding kind for a finding.
fn identity(message: &pb::FollowMessage) -> String {
    if message.finding {
        let record: serde_json::Value = serde_json::from_slice(&message.data).unwrap();
        record["finding"].as_str().unwrap().to_owned()
    } else {
        format!("{}:{}", message.chain_id, message.seq)
    }
}

/// Follows events and findings, reconnecting after every message with its cursor, until `n`
/// items arrived; returns them and the last cursor.
async fn follow_one_at_a_time(url: String, n: usize) -> (Vec<String>, String) {
    let mut items = Vec::new();
    let mut cursor = String::new();
    while items.len() < n {
        let request = pb::FollowRequest {
            format: pb::ExportFormat::Jsonl as i32,
            items: pb::FollowItems::All as i32,
            cursor: cursor.clone(),
            ..Default::default()
        };
        let mut client = pb::audit_query_client::AuditQueryClient::connect(url.clone())
            .await
            .unwrap();
        let mut stream = client
            .follow(authed(request, TOKEN))
            .await
            .unwrap()
            .into_inner();
        loop {
            let Ok(Some(message)) = stream.message().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            };
            cursor = message.cursor.clone();
            if !message.data.is_empty() {
                items.push(identity(&message));
                break;
            }
        }
    }
    (items, cursor)
}

/// Data messages a stream opened at `cursor` delivers within `wait`.
async fn more_after(service: &QueryService, cursor: &str, wait: Duration) -> Vec<String> {
    let request = pb::FollowRequest {
        format: pb::ExportFormat::Jsonl as i32,
        items: pb::FollowItems::All as i32,
        cursor: cursor.into(),
        ..Default::default()
    };
    let mut client = service.client().await;
    let mut stream = client
        .follow(authed(request, TOKEN))
        .await
        .unwrap()
        .into_inner();
    let mut more = Vec::new();
    while let Ok(Ok(Some(message))) = tokio::time::timeout(wait, stream.message()).await {
        if !message.data.is_empty() {
            more.push(identity(&message));
        }
    }
    more
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_reach_followers_and_syslog_once_across_an_auditor_crash() {
    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    broker.create_topic(TOPIC, 1).await.unwrap();
    let dir = temp_dir();
    let (key, public) = key_in(dir.path(), "gw");
    let setup = AuditorSetup::trusting(
        broker.bootstrap(),
        clickhouse.url(),
        "follow-findings",
        public.clone(),
        1000,
    );
    produce(&producer(&broker.bootstrap()), TOPIC, &messages(&key)).await;

    // Stored, then aborted before the commit: the next auditor raises both findings again. The
    // crashing auditor's one batch waits for every message (a batch's default 100 ms deadline
    // runs from before the group is joined, so on a busy machine it may close on a part of the
    // topic, and a finding outside it would be stored once, not twice).
    let whole_batch = ITEMS.to_string();
    let mut crashing = AuditorProcess::start_with_env(
        &setup,
        &[
            ("VERDICT_AUDITOR_FAULT", "1"),
            ("VERDICT_AUDITOR_BATCH__MAX_EVENTS", &whole_batch),
            ("VERDICT_AUDITOR_BATCH__MAX_WAIT_MS", "600000"),
        ],
    )
    .unwrap();
    crashing
        .wait_exit(Duration::from_secs(120))
        .expect("the crash hook aborts the auditor");
    let db = clickhouse.client();
    assert_eq!(count(&db, "SELECT count() FROM findings").await, 2);
    assert_eq!(count(&db, "SELECT count() FROM events").await, EVENTS);
    db.query("SYSTEM STOP MERGES findings")
        .execute()
        .await
        .unwrap();
    let service = QueryService::following(&clickhouse.url(), &public);
    let rsyslog = Rsyslog::start().expect("rsyslogd");
    let syslog = format!(
        "[[destinations]]\nname = \"soc\"\nkind = \"syslog\"\naddress = {:?}\npayload = \"cef\"\n",
        rsyslog.address()
    );
    let _forwarder = start_forwarder(dir.path(), &service.url(), &syslog, &[]);

    // The follower starts on what the crashed auditor stored and reconnects after every item
    // while the next auditor redelivers and raises the findings a second time.
    let follower = tokio::spawn(follow_one_at_a_time(service.url(), ITEMS));
    let _auditor = AuditorProcess::start(&setup).unwrap();
    wait_committed(
        &broker.bootstrap(),
        "follow-findings",
        TOPIC,
        1,
        ITEMS as i64,
        Duration::from_secs(120),
    )
    .await;
    let stored = count(&db, "SELECT count() FROM findings").await;
    assert!(stored >= 4, "each finding stored twice, got {stored} rows");

    let (items, cursor) = tokio::time::timeout(Duration::from_secs(120), follower)
        .await
        .expect("the follower got every item")
        .unwrap();
    let mut expected: Vec<String> = (1..=EVENTS).map(|s| format!("{CHAIN}:{s}")).collect();
    expected.extend(["malformed".to_owned(), "unknown_key".to_owned()]);
    let mut got = items.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "in arrival order: {items:?}");
    let more = more_after(&service, &cursor, Duration::from_secs(3)).await;
    assert!(
        more.is_empty(),
        "delivered again after the cursor: {more:?}"
    );

    // `verdict follow`: findings as OCSF Detection Findings that validate.
    let out = std::process::Command::new(cargo_bin("verdict"))
        .args(["follow", "--items", "all", "--format", "ocsf"])
        .args(["--max-events", &ITEMS.to_string()])
        .env("VERDICT_QUERY_URL", service.url())
        .env("VERDICT_QUERY_TOKEN", TOKEN)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ocsf = String::from_utf8(out.stdout).unwrap();
    let file = dir.path().join("follow.ocsf.jsonl");
    std::fs::write(&file, &ocsf).unwrap();
    assert_valid_ocsf(&file);
    let classes: Vec<u64> = ocsf
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["class_uid"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(classes.iter().filter(|&&c| c == 2004).count(), 2, "{ocsf}");
    assert_eq!(classes.len(), ITEMS);

    // The forwarder: one CEF line per event and per finding, each once.
    assert_eq!(rsyslog.wait_lines(ITEMS).len(), ITEMS);
    std::thread::sleep(Duration::from_secs(1));
    let lines = rsyslog.lines();
    let ids: BTreeSet<String> = lines.iter().map(|l| cef_value(l, "externalId")).collect();
    assert_eq!(ids.len(), ITEMS, "{lines:#?}");
    assert_eq!(lines.len(), ITEMS, "a line arrived twice: {lines:#?}");
    let findings = lines
        .iter()
        .filter(|l| l.contains("|finding:unknown_key|") || l.contains("|finding:malformed|"))
        .count();
    assert_eq!(findings, 2, "{lines:#?}");
}
