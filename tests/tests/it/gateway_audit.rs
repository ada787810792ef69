//! Decision events end to end: real gateway, real rmcp clients, real tansu. Every call's decision
//! is journaled before the call goes on, reaches the topic exactly once per (chain, seq), survives
//! a broker outage and a SIGKILL, fails closed when the journal cannot be written, and verifies
//! offline with only the public key.

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verdict_proto::pb::{DecisionKind, OutcomeKind};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::bins::cargo_bin;
use verdict_tests::mcp::{call_tool, connect, work_memory_bin, HttpProcess};
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::trail::{self, consume, journal_events};
use verdict_tests::{wait_until, Broker};

const TOPIC: &str = "verdict.events";

fn api_key(agent: usize) -> String {
    format!("audit-test-key-{agent}")
}

/// A gateway config: `agents` agents, one upstream, optional Kafka.
fn config(agents: usize, upstream: &str, kafka: Option<&str>) -> String {
    let mut text = String::new();
    for agent in 0..agents {
        text += &format!(
            "[[agents]]\nid = \"agent-{agent}\"\napi_key_sha256 = \"{}\"\n",
            key_digest(&api_key(agent))
        );
    }
    text += &format!("[upstreams.memory]\n{upstream}\n[audit]\nchain_id = \"test-chain\"\n");
    if let Some(bootstrap) = kafka {
        text += &format!("[audit.kafka]\nbrokers = \"{bootstrap}\"\ntopic = \"{TOPIC}\"\n");
    }
    text
}

fn stdio_upstream() -> String {
    format!("command = \"{}\"", work_memory_bin().display())
}

fn is_error(result: &rmcp::model::CallToolResult) -> bool {
    result.is_error.unwrap_or(false)
}

/// A `add_work_memory` of `key` that must succeed.
async fn write_ok(client: &rmcp::service::RunningService<rmcp::RoleClient, ()>, key: &str) {
    let result = call_tool(
        client,
        "add_work_memory",
        json!({"project": key, "content": "v"}),
    )
    .await
    .unwrap();
    assert!(!is_error(&result), "add_work_memory {key}");
}

/// Seqs that appear more than once, and the range they should cover.
fn assert_exactly_once(seqs: impl IntoIterator<Item = u64>, last: u64) {
    let mut counts = BTreeMap::new();
    for seq in seqs {
        *counts.entry(seq).or_insert(0u32) += 1;
    }
    let duplicates: Vec<_> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(duplicates.is_empty(), "duplicated seqs: {duplicates:?}");
    let missing: Vec<_> = (1..=last).filter(|s| !counts.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "missing seqs: {} (first {:?})",
        missing.len(),
        missing.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_calls_from_eight_agents_reach_the_topic_exactly_once() {
    let broker = Broker::start().unwrap();
    broker.create_topic(TOPIC, 3).await.unwrap();
    let gateway =
        HttpProcess::gateway(&config(8, &stdio_upstream(), Some(&broker.bootstrap()))).unwrap();
    let url = gateway.url();
    let agents: Vec<_> = (0..8)
        .map(|agent| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = connect(&url, &api_key(agent)).await;
                for i in 0..1250 {
                    let args = json!({"project": format!("a{agent}-{i}"), "content": "v"});
                    let result = call_tool(&client, "add_work_memory", args).await.unwrap();
                    assert!(!is_error(&result));
                }
                let _ = client.cancel().await;
            })
        })
        .collect();
    for agent in agents {
        agent.await.unwrap();
    }
    // A call's outcome is queued behind its reply: wait for the last ones.
    wait_until("every call's outcome is journaled", || {
        journal_events(&gateway.journal_dir())
            .iter()
            .filter_map(trail::outcome)
            .count()
            >= 10_000
    })
    .await;
    let last = journal_events(&gateway.journal_dir()).last().unwrap().seq;
    let messages = consume(&broker.bootstrap(), TOPIC, Duration::from_secs(120), |m| {
        m.len() as u64 >= last
    })
    .await;
    assert!(
        messages.iter().all(|m| m.key == b"test-chain"),
        "key = chain_id"
    );
    let partitions: BTreeSet<_> = messages.iter().map(|m| m.partition).collect();
    assert_eq!(partitions.len(), 1, "one chain, one partition");
    let mut events: Vec<_> = messages.into_iter().map(|m| m.event).collect();
    events.sort_by_key(|e| e.seq);
    assert_exactly_once(events.iter().map(|e| e.seq), last);
    assert!(
        trail::findings(&events, &gateway.public_key()).is_empty(),
        "every signature valid, chain linked"
    );
    let decisions: Vec<_> = events.iter().filter_map(trail::decision).collect();
    let writes = decisions
        .iter()
        .filter(|d| d.tool == "add_work_memory" && d.decision == DecisionKind::Allow as i32)
        .count();
    assert_eq!(writes, 10_000);
    let agents: BTreeSet<_> = decisions
        .iter()
        .map(|d| d.actor.as_ref().unwrap().agent_id.clone())
        .collect();
    assert_eq!(agents.len(), 8);
    let ok_outcomes = events
        .iter()
        .filter_map(trail::outcome)
        .filter(|o| o.kind == OutcomeKind::Ok as i32)
        .count();
    assert_eq!(ok_outcomes, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_delays_shipping_but_loses_and_duplicates_nothing() {
    let mut broker = Broker::start().unwrap();
    broker.create_topic(TOPIC, 1).await.unwrap();
    let gateway =
        HttpProcess::gateway(&config(2, &stdio_upstream(), Some(&broker.bootstrap()))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..2)
        .map(|agent| {
            let (url, stop, calls) = (gateway.url(), Arc::clone(&stop), Arc::clone(&calls));
            tokio::spawn(async move {
                let client = connect(&url, &api_key(agent)).await;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let args = json!({"project": format!("outage-{agent}-{i}"), "content": "v"});
                    let result = call_tool(&client, "add_work_memory", args).await.unwrap();
                    assert!(
                        !is_error(&result),
                        "calls keep succeeding during the outage"
                    );
                    calls.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let _ = client.cancel().await;
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.stop();
    let during = calls.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        calls.load(Ordering::Relaxed) > during + 100,
        "calls went on while the broker was down"
    );
    broker.resume().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let journal = journal_events(&gateway.journal_dir());
    let last = journal.last().unwrap().seq;
    let messages = consume(&broker.bootstrap(), TOPIC, Duration::from_secs(120), |m| {
        m.iter().map(|m| m.event.seq).max() >= Some(last)
    })
    .await;
    // Whatever else arrives late must not be a duplicate either.
    assert_exactly_once(
        messages.iter().map(|m| m.event.seq).filter(|s| *s <= last),
        last,
    );
    let writes = journal
        .iter()
        .filter_map(trail::decision)
        .filter(|d| d.tool == "add_work_memory")
        .count() as u64;
    assert_eq!(
        writes,
        calls.load(Ordering::Relaxed),
        "one decision per call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_load_continues_the_chain_and_forwards_nothing_unrecorded() {
    let upstream = HttpProcess::work_memory(&[]).unwrap();
    let mut gateway =
        HttpProcess::gateway(&config(4, &format!("url = \"{}\"", upstream.url()), None)).unwrap();
    let load: Vec<_> = (0..4)
        .map(|agent| {
            let url = gateway.url();
            tokio::spawn(async move {
                let client = connect(&url, &api_key(agent)).await;
                for i in 0.. {
                    let key = format!("kill-{agent}-{i}");
                    let args = json!({"project": key, "content": key});
                    if call_tool(&client, "add_work_memory", args).await.is_err() {
                        return i;
                    }
                }
                unreachable!()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gateway.kill();
    let mut acknowledged = 0;
    for task in load {
        acknowledged += task.await.unwrap();
    }
    assert!(acknowledged > 100, "load was running when the gateway died");

    gateway.restart_gateway().unwrap();
    let client = connect(&gateway.url(), &api_key(0)).await;
    for i in 0..10 {
        let result = call_tool(
            &client,
            "add_work_memory",
            json!({"project": format!("after-{i}"), "content": "v"}),
        )
        .await
        .unwrap();
        assert!(!is_error(&result));
    }
    let _ = client.cancel().await;
    gateway.terminate();

    let events = journal_events(&gateway.journal_dir());
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "seq contiguous across the crash"
    );
    assert!(
        trail::findings(&events, &gateway.public_key()).is_empty(),
        "no gap, no fork"
    );
    let recorded: BTreeSet<String> = events
        .iter()
        .filter_map(trail::decision)
        .filter(|d| d.decision == DecisionKind::Allow as i32)
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(&d.arguments_json).unwrap()["project"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // Ask the upstream itself what reached it.
    let direct = connect(&upstream.url(), "").await;
    let listed = call_tool(&direct, "search_work_memory", json!({"query": "kill-"}))
        .await
        .unwrap();
    let listed = serde_json::to_value(&listed).unwrap()["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let forwarded: Vec<&str> = listed.lines().collect();
    assert!(forwarded.len() as u64 >= acknowledged);
    let unrecorded: Vec<_> = forwarded
        .iter()
        .filter(|k| !recorded.contains(**k))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "forwarded without a journaled decision: {unrecorded:?}"
    );

    let verify = Command::new(cargo_bin("verdict"))
        .arg("verify")
        .arg("--journal")
        .arg(gateway.journal_dir())
        .arg("--public-key")
        .arg(gateway.public_key())
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// Undoes `chattr +i` whatever happens to the test.
struct Immutable<'a>(&'a Path);

impl<'a> Immutable<'a> {
    fn set(dir: &'a Path) -> Self {
        assert!(Command::new("chattr")
            .arg("-R")
            .arg("+i")
            .arg(dir)
            .status()
            .unwrap()
            .success());
        Self(dir)
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .arg("-R")
            .arg("-i")
            .arg(self.0)
            .status();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output_within(COMMAND_TIMEOUT)
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_journal_fails_closed_and_records_the_refusals_later() {
    if !running_as_root() {
        eprintln!("SKIPPED: making a directory unwritable for root needs chattr, which needs root");
        return;
    }
    let gateway = HttpProcess::gateway(&config(1, &stdio_upstream(), None)).unwrap();
    let health = format!("http://127.0.0.1:{}/healthz", gateway.port);
    let client = connect(&gateway.url(), &api_key(0)).await;
    write_ok(&client, "before").await;
    {
        let journal = gateway.journal_dir();
        let _guard = Immutable::set(&journal);
        let refused = call_tool(
            &client,
            "add_work_memory",
            json!({"project": "refused", "content": "v"}),
        )
        .await;
        let error = refused.expect_err("fails closed");
        let text = error.to_string();
        assert!(
            text.contains("-32030") || text.contains("audit journal"),
            "{text}"
        );
        let server_path = gateway.dir.path().to_string_lossy().into_owned();
        assert!(
            !text.contains(&server_path),
            "agents learn no paths: {text}"
        );
        let response = reqwest::get(&health).await.unwrap();
        assert_eq!(response.status(), 503);
        let body = response.text().await.unwrap();
        assert!(body.contains("audit journal"), "{body}");
        assert!(
            !body.contains(&server_path),
            "/healthz shows no paths: {body}"
        );
    }
    let start = Instant::now();
    while reqwest::get(&health).await.unwrap().status() != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "healthy again once writable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    write_ok(&client, "after").await;
    let _ = client.cancel().await;

    let events = journal_events(&gateway.journal_dir());
    assert!(trail::findings(&events, &gateway.public_key()).is_empty());
    let decisions: Vec<_> = events
        .iter()
        .filter_map(trail::decision)
        .filter(|d| d.tool == "add_work_memory")
        .collect();
    let keys: Vec<_> = decisions
        .iter()
        .map(|d| {
            let key = serde_json::from_str::<serde_json::Value>(&d.arguments_json).unwrap()
                ["project"]
                .as_str()
                .unwrap()
                .to_owned();
            (key, d.decision)
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("before".to_owned(), DecisionKind::Allow as i32),
            ("refused".to_owned(), DecisionKind::Error as i32),
            ("after".to_owned(), DecisionKind::Allow as i32),
        ]
    );
    assert!(
        decisions[1].reason.contains("audit journal"),
        "{}",
        decisions[1].reason
    );
}

/// Runs `verdict verify --journal DIR` and returns (success, stdout).
fn verify(journal: &Path, public_key: &Path) -> (bool, String) {
    let output = Command::new(cargo_bin("verdict"))
        .arg("verify")
        .arg("--journal")
        .arg(journal)
        .arg("--public-key")
        .arg(public_key)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_position_of_a_flipped_byte_a_deleted_record_and_a_swapped_pair() {
    let mut gateway = HttpProcess::gateway(&config(1, &stdio_upstream(), None)).unwrap();
    let client = connect(&gateway.url(), &api_key(0)).await;
    for i in 0..10 {
        call_tool(
            &client,
            "add_work_memory",
            json!({"project": format!("k{i}"), "content": "세션 삭제"}),
        )
        .await
        .unwrap();
    }
    let _ = client.cancel().await;
    gateway.terminate();
    let key = gateway.public_key();
    let (ok, report) = verify(&gateway.journal_dir(), &key);
    assert!(
        ok && report.contains("OK: every record verifies"),
        "{report}"
    );
    assert!(
        report.contains("ends with a shutdown checkpoint"),
        "{report}"
    );

    let mut reader = verdict_journal::JournalReader::open(&gateway.journal_dir()).unwrap();
    let mut records = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        records.push(record);
    }
    let segment = gateway.journal_dir().join(&records[0].segment);
    let original = std::fs::read(&segment).unwrap();
    let span = |seq: u64| {
        let r = &records[seq as usize - 1];
        (r.offset as usize, r.offset as usize + 16 + r.payload.len())
    };
    let at = |offset: usize| format!("FAILED {} byte {offset} ", records[0].segment);
    let tampered = |bytes: Vec<u8>| {
        let copy = tempfile::tempdir().unwrap();
        std::fs::write(copy.path().join(&records[0].segment), bytes).unwrap();
        let result = verify(copy.path(), &key);
        assert!(!result.0, "a break fails verification:\n{}", result.1);
        result.1
    };

    // The attack on completeness: the journal cut at a record boundary (after seq 5), and
    // emptied (its only segment deleted). Both fail; neither is reported OK.
    let (_, end5) = span(5);
    for (what, bytes) in [
        ("cut after seq 5", Some(original[..end5].to_vec())),
        ("emptied", None),
    ] {
        let copy = tempfile::tempdir().unwrap();
        if let Some(bytes) = bytes {
            std::fs::write(copy.path().join(&records[0].segment), bytes).unwrap();
        }
        let (ok, report) = verify(copy.path(), &key);
        assert!(!ok && !report.contains("OK:"), "{what} verified:\n{report}");
    }
    // A running gateway's journal: accepted without a shutdown checkpoint only up to a head known
    // from outside; the cut one fails against that head.
    let last = verdict_proto::SignedEvent::decode(&records[records.len() - 1].payload).unwrap();
    let head = format!("{}:{}", last.seq, hex::encode(last.hash));
    let cut = tempfile::tempdir().unwrap();
    std::fs::write(cut.path().join(&records[0].segment), &original[..end5]).unwrap();
    let running = |dir: &Path| {
        let output = Command::new(cargo_bin("verdict"))
            .args(["verify", "--running", "--head", &head, "--journal"])
            .arg(dir)
            .arg("--public-key")
            .arg(&key)
            .output_within(COMMAND_TIMEOUT)
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (ok, report) = running(&gateway.journal_dir());
    assert!(ok, "{report}");
    let (ok, report) = running(cut.path());
    assert!(
        !ok && report.contains("ends before the given head"),
        "{report}"
    );

    // A flipped byte (the last byte of seq 7's signature).
    let (start7, end7) = span(7);
    let mut bytes = original.clone();
    bytes[end7 - 1] ^= 0x01;
    let report = tampered(bytes);
    let position = at(start7);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with(position.trim_end()) && l.contains("damaged_record")),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with(&position) && l.contains("bad_signature seq 7")),
        "{report}"
    );

    // A deleted record: seq 7's bytes removed; the break shows where seq 8 now starts.
    let mut bytes = original[..start7].to_vec();
    bytes.extend_from_slice(&original[end7..]);
    let report = tampered(bytes);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with(&at(start7)) && l.contains("gap seq 7")),
        "{report}"
    );

    // A swapped pair: seq 8 written before seq 7.
    let (start8, end8) = span(8);
    let mut bytes = original[..start7].to_vec();
    bytes.extend_from_slice(&original[start8..end8]);
    bytes.extend_from_slice(&original[start7..end7]);
    bytes.extend_from_slice(&original[end8..]);
    let report = tampered(bytes);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with(&at(start7)) && l.contains("gap seq 7")),
        "{report}"
    );
    let moved7 = start7 + (end8 - start8);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with(&at(moved7)) && l.contains("reorder seq 7")),
        "{report}"
    );
}
