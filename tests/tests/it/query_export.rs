//! Export round trip: the `verdict` CLI exports over gRPC, `verdict verify --export` re-verifies
//! the file offline with only the public key, and one flipped byte anywhere in a record fails
//! naming that record's line. Also: a filtered export verifies as non-contiguous ranges, CSV and
//! OCSF exports carry the same records, and `VerifyChain` re-verifies the stored chain.

use std::path::Path;
use std::process::Command;
use verdict_proto::keys::write_keypair;
use verdict_proto::pb::{self, DecisionKind, OutcomeKind, RiskClass};
use verdict_proto::{ChainWriter, SecretKey, SignedEvent};
use verdict_tests::audit_rows::{self, checkpoint_body, outcome_body, Call};
use verdict_tests::bins::cargo_bin;
use verdict_tests::ocsf::assert_valid_ocsf;
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::query::{authed, verdict_cli as verdict, QueryService, TOKEN};
use verdict_tests::ClickHouse;

const T0: i64 = 1_750_000_000_000_000_000;

fn chain(id: &str, key: &SecretKey, calls: usize) -> Vec<SignedEvent> {
    let mut writer = ChainWriter::new(id, key.clone());
    let mut events = vec![writer.append(checkpoint_body(T0, 0, "startup"))];
    for i in 0..calls {
        let time = T0 + (i as i64 + 1) * 1_000_000;
        let agent = if i % 3 == 0 { "agent-a" } else { "agent-b" };
        let decision = writer.append(
            Call {
                time_unix_nanos: time,
                agent,
                session: "sess, \"quoted\"",
                tool: "session_manager",
                risk: RiskClass::Destructive,
                arguments_json: r#"{"action":"delete_session","session_id":"s1"}"#,
                targets: &[("session_id", "s1")],
                decision: if i % 2 == 0 {
                    DecisionKind::Deny
                } else {
                    DecisionKind::Allow
                },
                reason: "sessions are deleted by humans only",
            }
            .body(),
        );
        let seq = decision.seq;
        events.push(decision);
        if i % 2 == 1 {
            events.push(writer.append(outcome_body(time + 500, seq, OutcomeKind::Ok)));
        }
    }
    events
}

fn verify(export: &Path, public: &Path) -> (bool, String) {
    let output = Command::new(cargo_bin("verdict"))
        .arg("verify")
        .arg("--export")
        .arg(export)
        .arg("--public-key")
        .arg(public)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// The file with one byte of line `line` (1-based) at `column` XOR-ed with 1.
fn flip(original: &[u8], line: usize, column: usize, out: &Path) {
    let start: usize = original
        .split(|&b| b == b'\n')
        .take(line - 1)
        .map(|l| l.len() + 1)
        .sum();
    let mut bytes = original.to_vec();
    bytes[start + column] ^= 1;
    std::fs::write(out, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_verify_offline_and_tampering_names_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed(&[4; 32]);
    let (_, public) = write_keypair(&dir.path().join("keys"), &key, false).unwrap();
    let clickhouse = ClickHouse::start().expect("clickhouse");
    let db = clickhouse.client();
    audit_rows::migrate(&db).await.unwrap();
    let mut events = chain("gw-1", &key, 20);
    events.extend(chain("gw-2", &key, 9));
    audit_rows::store_events(&db, &events).await.unwrap();
    let service = QueryService::start(&clickhouse.url(), Some(&public), "").expect("verdict-query");

    let export = dir.path().join("export.jsonl");
    let out = verdict(
        &[
            "export",
            "--format",
            "jsonl",
            "--out",
            export.to_str().unwrap(),
        ],
        &service,
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        service.log_tail()
    );
    let original = std::fs::read(&export).unwrap();
    let lines: Vec<&str> = std::str::from_utf8(&original).unwrap().lines().collect();
    // Every event, then the end line.
    assert_eq!(lines.len(), events.len() + 1);
    let (ok, report) = verify(&export, &public);
    assert!(ok, "{report}");
    assert!(report.contains("chain gw-1: seqs 1..=31\n"), "{report}");
    assert!(report.contains("chain gw-2: seqs 1..=14\n"), "{report}");

    // The attack: the same file cut short — its last 10 lines, its end line alone, a cut at a
    // record boundary in the middle — and emptied. Each fails; none reports what is left as OK.
    let text = std::str::from_utf8(&original).unwrap();
    let keep = |n: usize| {
        lines[..n]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    for (what, content) in [
        ("last 10 lines removed", keep(lines.len() - 10)),
        ("end line removed", keep(lines.len() - 1)),
        ("cut after record 5", keep(5)),
        ("empty", String::new()),
        (
            "end line kept, records cut",
            format!("{}{}", keep(5), lines[lines.len() - 1]),
        ),
    ] {
        let cut = dir.path().join("cut.jsonl");
        std::fs::write(&cut, content).unwrap();
        let (ok, report) = verify(&cut, &public);
        assert!(!ok, "an export with its {what} verified:\n{report}");
        assert!(!report.contains("OK:"), "{what}: {report}");
    }
    assert!(text.ends_with("\n"));

    // One flipped byte: inside the base64 envelope, inside a readable field, in the signature.
    let line7: serde_json::Value = serde_json::from_str(lines[6]).unwrap();
    let envelope_at = lines[6].find("\"envelope\":\"").unwrap() + 40;
    let agent_at = lines[2].find("\"agent_id\":\"").unwrap() + 12;
    let signature_at = lines[30].find("\"signature\":\"").unwrap() + 20;
    for (line, column, what) in [
        (7, envelope_at, "envelope"),
        (3, agent_at, "agent_id"),
        (31, signature_at, "signature"),
    ] {
        let tampered = dir.path().join(format!("tampered-{what}.jsonl"));
        flip(&original, line, column, &tampered);
        let (ok, report) = verify(&tampered, &public);
        assert!(!ok, "a flipped byte in {what} passed:\n{report}");
        assert!(
            report.contains(&format!("FAILED line {line}")),
            "{what}: {report}"
        );
        assert_eq!(
            report.matches("FAILED").count(),
            1,
            "{what}: exactly one record fails:\n{report}"
        );
    }
    assert_eq!(line7["chain_id"], "gw-1");

    // A wrong key fails every record.
    let other = SecretKey::from_seed(&[5; 32]);
    let (_, other_public) = write_keypair(&dir.path().join("other"), &other, false).unwrap();
    let (ok, report) = verify(&export, &other_public);
    assert!(!ok && report.contains("unknown_key"), "{report}");

    // A filtered export: agent-a's decisions only, so seqs are not contiguous, and that is fine.
    let filtered = dir.path().join("filtered.jsonl");
    let out = verdict(
        &[
            "export",
            "--agent",
            "agent-a",
            "--out",
            filtered.to_str().unwrap(),
        ],
        &service,
    );
    assert!(out.status.success());
    let (ok, report) = verify(&filtered, &public);
    assert!(ok, "{report}");
    assert!(report.contains("not contiguous"), "{report}");

    // CSV and OCSF carry the same records.
    let csv = dir.path().join("export.csv");
    assert!(verdict(
        &["export", "--format", "csv", "--out", csv.to_str().unwrap()],
        &service
    )
    .status
    .success());
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert!(csv_text.starts_with("chain_id,seq,time_unix_nanos,"));
    assert!(csv_text.contains("\"sess, \"\"quoted\"\"\""));
    let ocsf = dir.path().join("export.ocsf.jsonl");
    assert!(verdict(
        &[
            "export",
            "--format",
            "ocsf",
            "--out",
            ocsf.to_str().unwrap()
        ],
        &service
    )
    .status
    .success());
    let ocsf_lines: Vec<serde_json::Value> = std::fs::read_to_string(&ocsf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ocsf_lines.len(), events.len());
    assert!(ocsf_lines.iter().all(|o| o["class_uid"] == 6003));
    assert_eq!(ocsf_lines[6]["unmapped"]["verdict"], line7);
    assert_valid_ocsf(&ocsf);

    // The service re-verifies the stored chain, whole and from the middle.
    let mut client = service.client().await;
    for (from, to, first, last) in [(0, 0, 1, 31), (10, 20, 10, 20)] {
        let report = client
            .verify_chain(authed(
                pb::VerifyChainRequest {
                    chain_id: "gw-1".into(),
                    from_seq: from,
                    to_seq: to,
                },
                TOKEN,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(report.ok, "{report:?}");
        assert_eq!(
            (report.first_seq, report.last_seq, report.events),
            (first, last, last - first + 1)
        );
        assert_eq!(report.head.unwrap().seq, 31);
    }
    let out = verdict(&["verify-chain", "--chain", "gw-2"], &service);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("(14 events): OK"));
}
