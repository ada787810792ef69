//! OCSF that validates: an export holding every decision kind, every outcome kind and
//! checkpoints, of every risk class, is checked line by line against the published OCSF 1.4.0
//! schema by third-party validators (`verdict_tests::ocsf`), and the decision sits in the fields
//! made for it, never in `status`. The same validators reject the pre-1.4 mapping, which put
//! the decision in `status`.

use verdict_proto::keys::write_keypair;
use verdict_proto::pb::DecisionKind;
use verdict_proto::{ChainWriter, Label, SecretKey, SignedEvent};
use verdict_tests::audit_rows::{self, checkpoint_body, every_decision_kind};
use verdict_tests::bins::cargo_bin;
use verdict_tests::ocsf::{assert_valid_ocsf, validate_ocsf};
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::query::{QueryService, TOKEN};
use verdict_tests::ClickHouse;

const T0: i64 = 1_750_000_000_000_000_000;

/// Checkpoint, every decision kind with an outcome after each, closing checkpoint.
fn every_kind(key: &SecretKey) -> Vec<SignedEvent> {
    let mut writer = ChainWriter::new("gw-ocsf", key.clone());
    let mut events = vec![writer.append(checkpoint_body(T0, 0, "startup"))];
    events.extend(every_decision_kind(
        &mut writer,
        0,
        DecisionKind::NAMES.len(),
    ));
    let head = events.len() as u64;
    events.push(writer.append(checkpoint_body(T0 + 60_000_000_000, head, "shutdown")));
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn every_ocsf_line_validates_against_the_published_schema() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed(&[8; 32]);
    let (_, public) = write_keypair(&dir.path().join("keys"), &key, false).unwrap();
    let clickhouse = ClickHouse::start().expect("clickhouse");
    let db = clickhouse.client();
    audit_rows::migrate(&db).await.unwrap();
    let events = every_kind(&key);
    audit_rows::store_events(&db, &events).await.unwrap();
    let service = QueryService::start(&clickhouse.url(), Some(&public), "").expect("verdict-query");

    let ocsf = dir.path().join("export.ocsf.jsonl");
    let out = std::process::Command::new(cargo_bin("verdict"))
        .args(["export", "--format", "ocsf", "--out"])
        .arg(&ocsf)
        .env("VERDICT_QUERY_URL", service.url())
        .env("VERDICT_QUERY_TOKEN", TOKEN)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_valid_ocsf(&ocsf);

    let text = std::fs::read_to_string(&ocsf).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events.len());
    for line in &lines {
        let record = &line["unmapped"]["verdict"];
        assert_eq!(line["metadata"]["version"], "1.4.0");
        assert_eq!(
            line["metadata"]["uid"],
            format!("{}:{}", record["chain_id"].as_str().unwrap(), record["seq"])
        );
        if record["kind"] == "decision" {
            assert_eq!(line["status_code"], record["decision"]);
            assert!(line["disposition_id"].is_u64(), "{line}");
        }
    }
    let disposition_of = |decision: &str| {
        lines
            .iter()
            .find(|l| l["unmapped"]["verdict"]["decision"] == decision)
            .map(|l| (l["disposition"].clone(), l["status"].clone()))
            .unwrap()
    };
    assert_eq!(disposition_of("deny"), ("Blocked".into(), "Failure".into()));
    assert_eq!(
        disposition_of("allow"),
        ("Allowed".into(), "Success".into())
    );
    assert_eq!(
        disposition_of("approval_requested"),
        ("Delayed".into(), "Unknown".into())
    );

    // The old mapping (decision in `status`, OCSF 1.3.0) fails the same validators.
    let old: String = lines
        .iter()
        .map(|line| {
            let mut line = line.clone();
            line["status"] = line["status_code"].clone();
            line["metadata"]["version"] = "1.3.0".into();
            line.to_string() + "\n"
        })
        .collect();
    let old_file = dir.path().join("old.ocsf.jsonl");
    std::fs::write(&old_file, old).unwrap();
    let (ok, report) = validate_ocsf(&old_file);
    assert!(!ok, "{report}");
    let mut status_only = lines[1].clone();
    status_only["status"] = "deny".into();
    std::fs::write(&old_file, status_only.to_string()).unwrap();
    let (ok, report) = validate_ocsf(&old_file);
    assert!(!ok && report.contains("status"), "{report}");
}
