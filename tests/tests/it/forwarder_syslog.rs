//! `verdict-forwarder` to Debian's real rsyslog: every stored event arrives as one parseable CEF
//! line traceable to its chain:seq, and a forwarder stopped and started again resumes from its
//! cursor file: events stored while it was down arrive, none twice.

use std::collections::BTreeSet;
use std::time::Duration;
use verdict_proto::keys::write_keypair;
use verdict_proto::pb::DecisionKind;
use verdict_proto::{ChainWriter, Label, SecretKey};
use verdict_tests::audit_rows::{self, checkpoint_body, every_decision_kind};
use verdict_tests::forwarder;
use verdict_tests::process::ServerProcess;
use verdict_tests::query::QueryService;
use verdict_tests::rsyslog::{cef_value, Rsyslog};
use verdict_tests::ClickHouse;

fn start_forwarder(dir: &std::path::Path, query_url: &str, syslog: &str) -> ServerProcess {
    let destination = format!(
        "[[destinations]]\nname = \"soc\"\nkind = \"syslog\"\naddress = {syslog:?}\npayload = \"cef\"\n"
    );
    forwarder::start_forwarder(dir, query_url, &destination, &[])
}

/// A CEF line's seven header fields and its extension (split on unescaped `|`).
fn parse_cef(line: &str) -> (Vec<String>, String) {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if fields.len() < 8 => {
                let next = chars.next().unwrap();
                fields.last_mut().unwrap().push(next);
            }
            '|' if fields.len() < 8 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    assert_eq!(fields.len(), 8, "not a CEF line: {line}");
    let extension = fields.pop().unwrap();
    (fields, extension)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_reaches_rsyslog_once_as_a_cef_line_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed(&[9; 32]);
    let (_, public) = write_keypair(&dir.path().join("keys"), &key, false).unwrap();
    let clickhouse = ClickHouse::start().expect("clickhouse");
    let db = clickhouse.client();
    audit_rows::migrate(&db).await.unwrap();
    let mut writer = ChainWriter::new("gw-cef", key.clone());
    let mut all = vec![writer.append(checkpoint_body(1_750_000_000_000_000_000, 0, "startup"))];
    all.extend(every_decision_kind(&mut writer, 0, 40));
    audit_rows::store_events(&db, &all).await.unwrap();
    let service = QueryService::following(&clickhouse.url(), &public);
    let rsyslog = Rsyslog::start().expect("rsyslogd");

    let mut forwarder = start_forwarder(dir.path(), &service.url(), &rsyslog.address());
    assert_eq!(rsyslog.wait_lines(all.len()).len(), all.len());
    forwarder.terminate(Duration::from_secs(10));

    // Stored while the forwarder is down: delivered after it starts again, from its cursor.
    let later = every_decision_kind(&mut writer, 40, 25);
    audit_rows::store_events(&db, &later).await.unwrap();
    all.extend(later);
    let _forwarder = start_forwarder(dir.path(), &service.url(), &rsyslog.address());
    let lines = rsyslog.wait_lines(all.len());
    std::thread::sleep(Duration::from_millis(500));
    let lines = if lines.len() == all.len() {
        rsyslog.lines()
    } else {
        lines
    };
    assert_eq!(lines.len(), all.len(), "{lines:#?}");

    let mut ids = BTreeSet::new();
    let mut decisions = 0;
    for line in &lines {
        assert!(line.starts_with("CEF:0|Verdict|Verdict|"), "{line}");
        let (header, extension) = parse_cef(line);
        let id = cef_value(&extension, "externalId");
        let (chain, seq) = id.split_once(':').unwrap();
        assert_eq!(chain, "gw-cef");
        let seq: u64 = seq.parse().unwrap();
        let event = &all[seq as usize - 1];
        assert_eq!(event.seq, seq);
        if DecisionKind::from_label(&header[4]).is_some() {
            decisions += 1;
            assert_eq!(cef_value(&extension, "act"), header[4]);
            assert!(header[5].starts_with("agent|a "), "{}", header[5]);
        }
        assert!(ids.insert(id), "{line} arrived twice");
    }
    assert_eq!(decisions, 65);
    assert_eq!(ids.len(), all.len());
}
