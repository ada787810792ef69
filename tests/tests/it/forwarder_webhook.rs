//! `verdict-forwarder` webhooks against a real HTTP receiver that fails the first deliveries and
//! drops the connection in the middle of a batch: after deduplication by event id every event
//! arrived exactly once and every body's HMAC-SHA256 signature verifies. A destination that never
//! answers dead-letters every event; a Splunk HEC destination gets HEC framing with its token.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use verdict_proto::keys::write_keypair;
use verdict_proto::{ChainWriter, SecretKey};
use verdict_tests::audit_rows;
use verdict_tests::chains::body;
use verdict_tests::forwarder::start_forwarder;
use verdict_tests::process::free_port;
use verdict_tests::query::QueryService;
use verdict_tests::ClickHouse;

const SECRET: &str = "webhook-secret-1";
const EVENTS: u64 = 120;

/// What a receiver saw: every request's headers (lower-case names) and body.
#[derive(Default)]
struct Received {
    requests: Vec<(BTreeMap<String, String>, Vec<u8>)>,
}

/// An HTTP/1.1 receiver: answers 500 to the first `fail_first` requests, reads half the body of
/// the next one and drops the connection, then answers 200.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Received::default()));
    let seen = Arc::clone(&received);
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            n += 1;
            handle(socket, n, fail_first, &seen).await;
        }
    });
    (url, received)
}

async fn handle(mut socket: TcpStream, n: usize, fail_first: usize, seen: &Mutex<Received>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let read = socket.read(&mut chunk).await.unwrap_or(0);
        if read == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..read]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let headers: BTreeMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers["content-length"].parse().unwrap();
    if n == fail_first + 1 {
        // Half a batch, then the connection is gone.
        return;
    }
    while buf.len() < header_end + length {
        let read = socket.read(&mut chunk).await.unwrap_or(0);
        if read == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..read]);
    }
    let status = if n <= fail_first {
        "500 Internal Server Error"
    } else {
        seen.lock()
            .unwrap()
            .requests
            .push((headers, buf[header_end..header_end + length].to_vec()));
        "200 OK"
    };
    let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = socket.write_all(response.as_bytes()).await;
}

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

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let _forwarder = start_forwarder(
        dir.path(),
        &service.url(),
        &destinations.concat(),
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
}
