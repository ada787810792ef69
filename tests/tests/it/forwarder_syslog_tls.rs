//! Syslog over TLS (RFC 5425) from `verdict-forwarder` to Debian's rsyslog with its GnuTLS
//! driver, with a CA and a server certificate made here: every stored event arrives once, as a
//! CEF line, over TLS. Two destinations aimed at the same receiver are refused: one trusts a CA
//! that did not sign the receiver's certificate, one expects another name. They deliver nothing
//! (the receiver's file holds each event once) and count their failures. Before TLS, the
//! forwarder did not accept a `tls` setting at all.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use verdict_proto::keys::write_keypair;
use verdict_proto::{ChainWriter, SecretKey};
use verdict_tests::audit_rows;
use verdict_tests::chains::body;
use verdict_tests::forwarder::{metric, start_forwarder};
use verdict_tests::pki::Ca;
use verdict_tests::process::free_port;
use verdict_tests::query::QueryService;
use verdict_tests::rsyslog::{cef_value, Rsyslog, RsyslogTls};
use verdict_tests::ClickHouse;

const EVENTS: u64 = 60;

fn destination(name: &str, address: &str, ca: &std::path::Path, server_name: &str) -> String {
    format!(
        "[[destinations]]\nname = {name:?}\nkind = \"syslog\"\naddress = {address:?}\n\
         payload = \"cef\"\ntls = {{ ca = {:?}, server_name = {server_name:?} }}\n",
        ca.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn syslog_over_tls_delivers_to_rsyslog_and_refuses_a_receiver_the_ca_did_not_sign() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = Ca::new(&pki, "ca");
    let (cert, key) = ca.issue(&pki, "rsyslog", &["localhost", "127.0.0.1"]);
    let other_ca = Ca::new(&pki, "other-ca");
    let rsyslog = Rsyslog::start_tls(&RsyslogTls {
        ca: &ca.cert,
        cert: &cert,
        key: &key,
    })
    .expect("rsyslogd with gtls (scripts/deps.sh installs rsyslog-gnutls)");

    let signing = SecretKey::from_seed(&[25; 32]);
    let (_, public) = write_keypair(&dir.path().join("keys"), &signing, false).unwrap();
    let clickhouse = ClickHouse::start().expect("clickhouse");
    let db = clickhouse.client();
    audit_rows::migrate(&db).await.unwrap();
    let mut writer = ChainWriter::new("gw-tls", signing);
    let events: Vec<_> = (1..=EVENTS).map(|i| writer.append(body(i))).collect();
    audit_rows::store_events(&db, &events).await.unwrap();
    let service = QueryService::following(&clickhouse.url(), &public);

    let address = rsyslog.address();
    let metrics_port = free_port();
    let settings = format!(
        "metrics_listen = \"127.0.0.1:{metrics_port}\"\n{}{}{}",
        destination("soc-tls", &address, &ca.cert, "localhost"),
        destination("other-ca", &address, &other_ca.cert, "localhost"),
        destination("other-name", &address, &ca.cert, "siem.example"),
    );
    let _forwarder = start_forwarder(dir.path(), &service.url(), &settings, &[]);

    let lines = rsyslog.wait_lines(EVENTS as usize);
    // The refused destinations have tried (and failed) at least twice each by now.
    let started = Instant::now();
    for refused in ["other-ca", "other-name"] {
        while metric(metrics_port, "failures_total", refused)
            .await
            .unwrap_or(0.0)
            < 2.0
        {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{refused} never failed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            metric(metrics_port, "delivered_total", refused).await,
            Some(0.0)
        );
    }
    let lines = if lines.len() == EVENTS as usize {
        rsyslog.lines()
    } else {
        lines
    };
    assert_eq!(lines.len(), EVENTS as usize, "{lines:#?}");
    let ids: BTreeSet<String> = lines
        .iter()
        .map(|line| {
            assert!(line.starts_with("CEF:0|Verdict|Verdict|"), "{line}");
            cef_value(line, "externalId")
        })
        .collect();
    let expected: BTreeSet<String> = (1..=EVENTS).map(|s| format!("gw-tls:{s}")).collect();
    assert_eq!(ids, expected, "each event once, over TLS");
    assert_eq!(
        metric(metrics_port, "delivered_total", "soc-tls").await,
        Some(EVENTS as f64)
    );
    let log = std::fs::read_to_string(dir.path().join("forwarder.log")).unwrap();
    let refusal = |destination: &str, problem: &str| {
        log.lines().any(|l| {
            l.contains(destination) && l.contains("invalid peer certificate") && l.contains(problem)
        })
    };
    assert!(
        refusal("other-ca", "BadSignature") && refusal("other-name", "not valid for name"),
        "the refusals name the certificate problem:\n{log}"
    );
}
