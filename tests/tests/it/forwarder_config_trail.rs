//! Destination changes in the signed trail: a `verdict-forwarder` with its own key and chain
//! (journal shipped to Kafka) is restarted with one destination added, one removed and one whose
//! HMAC secret changed. The three changes reach ClickHouse through the real auditor, which trusts
//! the forwarder's key for its chain only: as `config_change` events (found by `Search`) and as
//! `config_changed` findings. The forwarder's journal verifies with the public key alone
//! (`verdict verify --journal`), and no secret is in any stored column, the journal or the state
//! directory. Before the forwarder had a chain, its config did not even accept `[audit]`.

use std::time::{Duration, Instant};
use verdict_proto::keys::write_keypair;
use verdict_proto::pb;
use verdict_proto::SecretKey;
use verdict_tests::auditor::{count, AuditorProcess, AuditorSetup};
use verdict_tests::bins::cargo_bin;
use verdict_tests::forwarder::start_forwarder;
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::query::{authed, findings, QueryService, TOKEN};
use verdict_tests::trail::journal_events;
use verdict_tests::webhook::receiver;
use verdict_tests::{Broker, ClickHouse};

const TOPIC: &str = "verdict.events";
const CHAIN: &str = "forwarder-soc";
const SECRETS: [&str; 3] = ["kept-secret-one", "kept-secret-two", "gone-secret-xyz"];

fn webhook(name: &str, url: &str, secret_env: &str) -> String {
    format!(
        "[[destinations]]\nname = {name:?}\nkind = \"webhook\"\naddress = {url:?}\n\
         payload = \"json\"\nsecret_env = {secret_env:?}\n"
    )
}

fn audit(brokers: &str) -> String {
    format!(
        "[audit]\nchain_id = \"{CHAIN}\"\nkey = \"keys/verdict.key\"\ncheckpoint_secs = 3600\n\
         [audit.kafka]\nbrokers = \"{brokers}\"\n"
    )
}

/// Waits until ClickHouse holds `n` stored `config_change` events of the forwarder's chain.
async fn stored_changes(clickhouse: &ClickHouse, n: u64) {
    let sql = format!(
        "SELECT count() FROM events FINAL WHERE chain_id = '{CHAIN}' AND kind = 'config_change' \
         AND verification = 'verified'"
    );
    let started = Instant::now();
    while count(&clickhouse.client(), &sql).await < n {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{n} config changes not stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every stored row of `table` as ClickHouse's own text (binary columns included as bytes).
async fn table_text(clickhouse: &ClickHouse, table: &str) -> String {
    reqwest::Client::new()
        .post(clickhouse.url())
        .body(format!("SELECT * FROM {table} FORMAT TabSeparated"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Every file under `dir`, read as bytes.
fn files_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_bytes(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_forwarder_with_changed_destinations_records_each_change_signed_and_without_secrets(
) {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed(&[18; 32]);
    let (_, public) = write_keypair(&dir.path().join("keys"), &key, false).unwrap();
    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    broker.create_topic(TOPIC, 1).await.unwrap();
    let setup =
        AuditorSetup::for_gateway(broker.bootstrap(), clickhouse.url(), public.clone(), CHAIN);
    let _auditor = AuditorProcess::start(&setup).unwrap();
    let service = QueryService::start(&clickhouse.url(), Some(&public), "").expect("query");
    let (kept_url, _kept) = receiver(0).await;
    let (gone_url, _gone) = receiver(0).await;
    let (new_url, _new) = receiver(0).await;

    // First start: `kept` and `gone`, both recorded as added.
    let first = format!(
        "{}{}{}",
        webhook("kept", &kept_url, "KEPT_SECRET"),
        webhook("gone", &gone_url, "GONE_SECRET"),
        audit(&broker.bootstrap())
    );
    let env = [("KEPT_SECRET", SECRETS[0]), ("GONE_SECRET", SECRETS[2])];
    let mut forwarder = start_forwarder(dir.path(), &service.url(), &first, &env);
    stored_changes(&clickhouse, 2).await;
    forwarder.terminate(Duration::from_secs(60));

    // Second start: `gone` removed, `new` added, `kept` with a new secret (same settings).
    let second = format!(
        "{}{}{}",
        webhook("kept", &kept_url, "KEPT_SECRET"),
        webhook("new", &new_url, "KEPT_SECRET"),
        audit(&broker.bootstrap())
    );
    let mut forwarder = start_forwarder(
        dir.path(),
        &service.url(),
        &second,
        &[("KEPT_SECRET", SECRETS[1])],
    );
    stored_changes(&clickhouse, 5).await;
    forwarder.terminate(Duration::from_secs(60));

    // Search finds the changes, newest first, the destination as a target named by its change.
    let mut client = service.client().await;
    let found = client
        .search(authed(
            pb::SearchRequest {
                filter: Some(pb::EventFilter {
                    chain_ids: vec![CHAIN.into()],
                    ..Default::default()
                }),
                page_size: 100,
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .expect("Search")
        .into_inner();
    let changes: Vec<(String, String, String)> = found
        .events
        .iter()
        .filter_map(|e| {
            let attempt = e.attempt.as_ref()?;
            let target = attempt.targets.first()?;
            Some((
                target.name.clone(),
                target.value.clone(),
                attempt.reason.clone(),
            ))
        })
        .collect();
    let summary: Vec<(&str, &str)> = changes
        .iter()
        .map(|(change, name, _)| (change.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("added", "new"),
            ("changed", "kept"),
            ("removed", "gone"),
            ("added", "kept"),
            ("added", "gone"),
        ],
        "{changes:#?}"
    );
    assert!(
        changes[1].2.contains("changed (secret)"),
        "only the secret changed: {}",
        changes[1].2
    );
    assert!(changes[2].2.contains(&gone_url), "{}", changes[2].2);

    // The auditor raised one `config_changed` finding per change, and no integrity finding.
    let listed = findings(&mut client).await;
    let kinds: Vec<&str> = listed.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["config_changed"; 5], "{listed:#?}");

    // The journal verifies offline with the public key alone, and ends with a shutdown
    // checkpoint; its changes are the stored ones.
    let journal = dir.path().join("journal");
    let verify = std::process::Command::new(cargo_bin("verdict"))
        .args(["verify", "--journal"])
        .arg(&journal)
        .arg("--public-key")
        .arg(&public)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let recorded = journal_events(&journal)
        .iter()
        .filter(|e| {
            matches!(
                e.decode_body().unwrap().kind,
                Some(pb::event_body::Kind::ConfigChange(_))
            )
        })
        .count();
    assert_eq!(recorded, 5);

    // No secret anywhere: stored columns (evidence and envelopes included), journal, state.
    let mut places = vec![
        (
            "events".to_owned(),
            table_text(&clickhouse, "events").await.into_bytes(),
        ),
        (
            "findings".to_owned(),
            table_text(&clickhouse, "findings").await.into_bytes(),
        ),
    ];
    places.extend(files_bytes(&journal));
    places.extend(files_bytes(&dir.path().join("state")));
    places.push((
        "forwarder.log".into(),
        std::fs::read(dir.path().join("forwarder.log")).unwrap(),
    ));
    assert!(places[0].1.len() > 1000, "the events table was read");
    for (place, bytes) in &places {
        for secret in SECRETS {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in {place}"
            );
        }
    }
}
