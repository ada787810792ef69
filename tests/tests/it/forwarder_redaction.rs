//! Nothing marked secret leaves through a push format. A real gateway records a call whose
//! arguments hold a secret-looking key (`api_key`, masked by the gateway before it signs) and a
//! field only the destinations mark secret (`note`, stored as sent); the forwarder pushes the
//! trail to Debian's rsyslog as CEF, JSON and OCSF and to webhooks as JSON and Splunk HEC. Neither
//! value appears in any delivered payload (nor inside a delivered envelope), the record the
//! forwarder had to mask says so and carries no envelope, and the call that needed no masking
//! still verifies from its delivered envelope with the gateway's public key alone.

use base64::Engine;
use serde_json::{json, Value};
use std::sync::Mutex;
use verdict_proto::{PublicKey, SignedEvent};
use verdict_query::export::{check_jsonl_record, ExportRecord};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::audit_rows;
use verdict_tests::forwarder::start_forwarder;
use verdict_tests::mcp::{call_tool, connect, work_memory_bin, HttpProcess};
use verdict_tests::query::QueryService;
use verdict_tests::rsyslog::Rsyslog;
use verdict_tests::trail::journal_events;
use verdict_tests::wait_until;
use verdict_tests::webhook::{receiver, Received};
use verdict_tests::ClickHouse;

const API_KEY: &str = "redaction-agent-key";
const SECRET: &str = "SECRET-API-KEY-4711";
const PRIVATE: &str = "PRIVATE-NOTE-0815";

fn gateway() -> HttpProcess {
    HttpProcess::gateway(&format!(
        "[[agents]]\nid = \"agent-r\"\napi_key_sha256 = \"{}\"\n\
         [upstreams.memory]\ncommand = \"{}\"\n[audit]\nchain_id = \"gw-redact\"\n",
        key_digest(API_KEY),
        work_memory_bin().display()
    ))
    .expect("verdict-gateway")
}

fn destinations(syslog: &str, hook: &str, hec: &str) -> String {
    let mut text = String::new();
    for payload in ["cef", "json", "ocsf"] {
        text += &format!(
            "[[destinations]]\nname = \"syslog-{payload}\"\nkind = \"syslog\"\n\
             address = {syslog:?}\npayload = {payload:?}\nredact_keys = [\"note\"]\n"
        );
    }
    for (name, url, framing) in [("hook", hook, "json"), ("hec", hec, "splunk_hec")] {
        text += &format!(
            "[[destinations]]\nname = {name:?}\nkind = \"webhook\"\naddress = {url:?}\n\
             payload = \"json\"\nframing = {framing:?}\nsecret_env = \"HOOK_SECRET\"\n\
             redact_keys = [\"note\"]\n"
        );
    }
    text
}

/// Every delivered body as text, plus the bytes of every base64 `body`/`envelope` inside it.
fn delivered_texts(lines: &[String], hooks: &[&Mutex<Received>]) -> Vec<String> {
    let mut texts: Vec<String> = lines.to_vec();
    for hook in hooks {
        for (_, body) in &hook.lock().unwrap().requests {
            texts.push(String::from_utf8(body.clone()).unwrap());
        }
    }
    let mut decoded = Vec::new();
    for text in &texts {
        for value in serde_json::Deserializer::from_str(text.trim_start_matches(|c| c != '{'))
            .into_iter::<Value>()
            .flatten()
        {
            collect_signed_bytes(&value, &mut decoded);
        }
    }
    texts.extend(decoded);
    texts
}

fn collect_signed_bytes(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if let (true, Some(text)) = (key == "body" || key == "envelope", value.as_str()) {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .unwrap();
                    out.push(String::from_utf8_lossy(&bytes).into_owned());
                }
                collect_signed_bytes(value, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_signed_bytes(v, out)),
        _ => {}
    }
}

/// The delivered JSON records (webhook JSON batches) of the two calls' decisions.
fn delivered_decisions(hook: &Mutex<Received>) -> Vec<ExportRecord> {
    let mut records = Vec::new();
    for (_, body) in &hook.lock().unwrap().requests {
        let batch: Value = serde_json::from_slice(body).unwrap();
        for item in batch["events"].as_array().unwrap() {
            let record: ExportRecord = serde_json::from_value(item["event"].clone()).unwrap();
            if record.kind == "decision" && record.tool == "add_work_memory" {
                records.push(record);
            }
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_leave_through_no_push_format_and_clean_events_still_verify() {
    let mut gateway = gateway();
    let client = connect(&gateway.url(), API_KEY).await;
    let secret_call = json!({"project": "p1", "content": "c", "api_key": SECRET});
    let marked_call = json!({"project": "p2", "content": "c", "note": PRIVATE});
    for arguments in [secret_call, marked_call] {
        call_tool(&client, "add_work_memory", arguments)
            .await
            .unwrap();
    }
    drop(client);
    gateway.terminate();
    let events: Vec<SignedEvent> = journal_events(&gateway.journal_dir());

    let clickhouse = ClickHouse::start().expect("clickhouse");
    let db = clickhouse.client();
    audit_rows::migrate(&db).await.unwrap();
    audit_rows::store_events(&db, &events).await.unwrap();
    let public = gateway.public_key();
    let service = QueryService::following(&clickhouse.url(), &public);
    let rsyslog = Rsyslog::start().expect("rsyslogd");
    let (hook_url, hook) = receiver(0).await;
    let (hec_url, hec) = receiver(0).await;
    let dir = tempfile::tempdir().unwrap();
    let _forwarder = start_forwarder(
        dir.path(),
        &service.url(),
        &destinations(&rsyslog.address(), &hook_url, &hec_url),
        &[("HOOK_SECRET", "hook-key")],
    );

    let count = |received: &Mutex<Received>, hec: bool| -> usize {
        let received = received.lock().unwrap();
        received
            .requests
            .iter()
            .map(|(_, body)| {
                let text = String::from_utf8_lossy(body);
                if hec {
                    text.lines().count()
                } else {
                    let batch: Value = serde_json::from_str(&text).unwrap();
                    batch["events"].as_array().unwrap().len()
                }
            })
            .sum()
    };
    wait_until("every event at both webhooks", || {
        count(&hook, false) >= events.len() && count(&hec, true) >= events.len()
    })
    .await;
    let lines = rsyslog.wait_lines(3 * events.len());
    assert_eq!(lines.len(), 3 * events.len(), "{lines:#?}");

    let texts = delivered_texts(&lines, &[&hook, &hec]);
    for text in &texts {
        assert!(!text.contains(SECRET), "the secret left: {text}");
        assert!(!text.contains(PRIVATE), "the marked field left: {text}");
    }
    assert!(
        texts.iter().any(|t| t.contains("[redacted]")),
        "the masked fields are named"
    );

    let decisions = delivered_decisions(&hook);
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    let key = PublicKey::read_pem_file(&public).unwrap();
    for record in &decisions {
        if record.arguments_json.contains("api_key") {
            // Masked by the gateway before it signed: the envelope travels and verifies.
            assert_eq!(record.redaction, "redacted");
            let line = serde_json::to_string(record).unwrap();
            let event = check_jsonl_record(&line).expect("the delivered record is its envelope");
            assert_eq!(event.computed_hash(), event.hash);
            assert!(key.verify_strict(&event.hash, &event.signature));
        } else {
            // Masked by the forwarder: the signed bytes still hold the note, so they stay home.
            assert_eq!(record.redaction, "masked");
            assert!(record.envelope.is_empty() && record.body.is_empty());
            assert!(record.arguments_json.contains("[redacted]"), "{record:?}");
        }
    }
}
