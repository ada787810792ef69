//! `verdict-forwarder` webhooks against a real HTTP receiver that fails the first deliveries and
//! drops the connection in the middle of a batch: after deduplication by event id every event
//! arrived exactly once and every body's HMAC-SHA256 signature verifies. A destination that never
//! answers dead-letters every event; a Splunk HEC destination gets HEC framing with its token.
//! The forwarder's `/metrics` then count, per destination, what was delivered, failed, retried
//! and dead-lettered, and show no lag left.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Mutex;
use verdict_proto::keys::write_keypair;
use verdict_proto::{ChainWriter, SecretKey};
use verdict_tests::audit_rows;
use verdict_tests::chains::body;
use verdict_tests::forwarder::start_forwarder;
use verdict_tests::process::free_port;
use verdict_tests::query::QueryService;
use verdict_tests::wait_until;
use verdict_tests::webhook::{receiver, Received};
use verdict_tests::ClickHouse;

const SECRET: &str = "webhook-secret-1";
const EVENTS: u64 = 120;

fn verifies(headers: &BTreeMap<String, String>, body: &[u8]) -> bool {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    headers.get("x-verdict-signature").map(String::as_str)
        == Some(&format!(
            "sha256={}",
            hex::encode(mac.finalize().into_bytes())
        ))
}

fn destination(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[destinations]]\nname = {name:?}\nkind = \"webhook\"\naddress = {url:?}\n\
         payload = \"json\"\nsecret_env = \"SOC_SECRET\"\nbatch_size = 25\n\
         retry_initial_millis = 20\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_deliver_every_event_once_after_dedup_and_dead_letter_what_cannot_be_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed(&[10; 32]);
    let (_, public) = write_keypair(&dir.path().join("keys"), &key, false).unwrap();
    let clickhouse = ClickHouse::start().expect("clickhouse");
    let db = clickhouse.client();
    audit_rows::migrate(&db).await.unwrap();
    let mut writer = ChainWriter::new("gw-hook", key.clone());
    let events: Vec<_> = (1..=EVENTS).map(|i| writer.append(body(i))).collect();
    audit_rows::store_events(&db, &events).await.unwrap();
    let service = QueryService::start(&clickhouse.url(), Some(&public), "").expect("query");

    let (flaky_url, flaky) = receiver(3).await;
    let (hec_url, hec) = receiver(0).await;
    let nowhere = format!("http://127.0.0.1:{}/hook", free_port());
    let destinations = [
        destination("flaky", &flaky_url, "max_attempts = 10"),
        destination("nowhere", &nowhere, "max_attempts = 2"),
        destination("splunk", &hec_url, "framing = \"splunk_hec\""),
    ];
    let metrics_port = free_port();
    let settings = format!(
        "metrics_listen = \"127.0.0.1:{metrics_port}\"\n{}",
        destinations.concat()
    );
    let _forwarder = start_forwarder(
        dir.path(),
        &service.url(),
        &settings,
        &[("SOC_SECRET", SECRET)],
    );

    let expected: Vec<String> = (1..=EVENTS).map(|s| format!("gw-hook:{s}")).collect();
    let ids = |received: &Mutex<Received>, hec: bool| {
        let received = received.lock().unwrap();
        let mut ids = Vec::new();
        for (headers, body) in &received.requests {
            assert!(verifies(headers, body), "bad signature");
            let text = String::from_utf8(body.clone()).unwrap();
            if hec {
                assert_eq!(headers["authorization"], format!("Splunk {SECRET}"));
                for object in serde_json::Deserializer::from_str(&text).into_iter() {
                    let object: serde_json::Value = object.unwrap();
                    assert_eq!(object["sourcetype"], "verdict:event");
                    ids.push(object["fields"]["id"].as_str().unwrap().to_owned());
                }
            } else {
                let batch: serde_json::Value = serde_json::from_str(&text).unwrap();
                for event in batch["events"].as_array().unwrap() {
                    let id = event["id"].as_str().unwrap().to_owned();
                    let record = &event["event"];
                    assert_eq!(
                        id,
                        format!("{}:{}", record["chain_id"].as_str().unwrap(), record["seq"])
                    );
                    ids.push(id);
                }
            }
        }
        ids
    };
    let deduplicated = |ids: Vec<String>| {
        let mut ids = ids;
        ids.sort_by_key(|id| id.split(':').nth(1).unwrap().parse::<u64>().unwrap());
        ids.dedup();
        ids
    };
    wait_until("the flaky receiver got every event", || {
        deduplicated(ids(&flaky, false)).len() == expected.len()
    })
    .await;
    assert_eq!(deduplicated(ids(&flaky, false)), expected);
    wait_until("the HEC receiver got every event", || {
        deduplicated(ids(&hec, true)).len() == expected.len()
    })
    .await;
    assert_eq!(deduplicated(ids(&hec, true)), expected);

    let dead_letter = dir.path().join("state/nowhere.dead-letter.jsonl");
    let dead_ids = || -> Vec<String> {
        std::fs::read_to_string(&dead_letter)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["id"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    wait_until("every event dead-lettered", || {
        dead_ids().len() >= expected.len()
    })
    .await;
    assert_eq!(
        dead_ids(),
        expected,
        "each event dead-lettered once, in order"
    );

    // The forwarder's own metrics, per destination, scraped after the run.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str, destination: &str| -> f64 {
        let prefix = format!("verdict_forwarder_{name}{{destination=\"{destination}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} missing in\n{metrics}"))
            .parse()
            .unwrap()
    };
    let events = EVENTS as f64;
    assert!(value("delivered_total", "flaky") >= events, "{metrics}");
    assert!(value("failures_total", "flaky") >= 4.0, "{metrics}");
    assert!(value("retries_total", "flaky") >= 4.0, "{metrics}");
    assert_eq!(value("dead_lettered_total", "flaky"), 0.0, "{metrics}");
    assert_eq!(value("lag_events", "flaky"), 0.0, "{metrics}");
    assert_eq!(value("lag_seconds", "flaky"), 0.0, "{metrics}");
    assert_eq!(value("delivered_total", "nowhere"), 0.0, "{metrics}");
    assert_eq!(value("dead_lettered_total", "nowhere"), events, "{metrics}");
    assert!(value("failures_total", "nowhere") >= 2.0 * 5.0, "{metrics}");
    assert!(value("delivered_total", "splunk") >= events, "{metrics}");
}
