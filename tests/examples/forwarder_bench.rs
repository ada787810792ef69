//! Delivered events/s per destination kind of `verdict-forwarder`, against real receivers:
//! `cargo run --release -p verdict-tests --example forwarder_bench [EVENTS] [RUNS]` (default
//! 20000, 3).
//!
//! EVENTS signed events are stored in a test ClickHouse; per destination kind (syslog over TCP
//! and over TLS to Debian's rsyslog, a webhook and Splunk HEC framing to a local HTTP receiver)
//! and per run, a fresh forwarder with that one destination and no cursor starts, and the time
//! from its start until its `delivered_total` reaches EVENTS is measured: the rate at which it
//! drains a backlog through `Follow`, the payload (CEF for syslog, JSON for webhooks) and the
//! receiver. Printed: each run and the median per kind.

use std::time::{Duration, Instant};
use verdict_proto::keys::write_keypair;
use verdict_proto::{ChainWriter, SecretKey};
use verdict_tests::audit_rows;
use verdict_tests::chains::body;
use verdict_tests::forwarder::{metric, start_forwarder};
use verdict_tests::pki::Ca;
use verdict_tests::process::free_port;
use verdict_tests::query::QueryService;
use verdict_tests::rsyslog::{Rsyslog, RsyslogTls};
use verdict_tests::webhook::receiver;
use verdict_tests::ClickHouse;

const STORE_CHUNK: u64 = 5000;

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let events = args.first().copied().unwrap_or(20_000);
    let runs = args.get(1).copied().unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed(&[42; 32]);
    let (_, public) = write_keypair(&dir.path().join("keys"), &key, false).unwrap();
    let clickhouse = ClickHouse::start().unwrap();
    let db = clickhouse.client();
    audit_rows::migrate(&db).await.unwrap();
    let mut writer = ChainWriter::new("bench-fwd", key);
    for start in (1..=events).step_by(STORE_CHUNK as usize) {
        let end = (start + STORE_CHUNK - 1).min(events);
        let chunk: Vec<_> = (start..=end).map(|i| writer.append(body(i))).collect();
        audit_rows::store_events(&db, &chunk).await.unwrap();
    }
    let service = QueryService::start(&clickhouse.url(), Some(&public), "").unwrap();

    let ca = Ca::new(dir.path(), "ca");
    let (cert, cert_key) = ca.issue(dir.path(), "rsyslog", &["localhost"]);
    let plain = Rsyslog::start().unwrap();
    let tls = Rsyslog::start_tls(&RsyslogTls {
        ca: &ca.cert,
        cert: &cert,
        key: &cert_key,
    })
    .unwrap();
    let (hook_url, _hook) = receiver(0).await;
    let (hec_url, _hec) = receiver(0).await;
    let ca_path = ca.cert.display().to_string();
    let kinds = [
        (
            "syslog TCP (CEF)",
            format!("kind = \"syslog\"\naddress = {:?}\n", plain.address()),
        ),
        (
            "syslog TLS (CEF)",
            format!(
                "kind = \"syslog\"\naddress = {:?}\ntls = {{ ca = {ca_path:?}, server_name = \"localhost\" }}\n",
                tls.address()
            ),
        ),
        (
            "webhook (JSON, HMAC)",
            format!("kind = \"webhook\"\naddress = {hook_url:?}\npayload = \"json\"\nsecret_env = \"BENCH_SECRET\"\n"),
        ),
        (
            "Splunk HEC",
            format!("kind = \"webhook\"\naddress = {hec_url:?}\npayload = \"json\"\nframing = \"splunk_hec\"\nsecret_env = \"BENCH_SECRET\"\n"),
        ),
    ];
    println!("{events} stored events per run, {runs} runs per kind");
    for (kind, destination) in kinds {
        let mut rates = Vec::new();
        for _ in 0..runs {
            rates.push(run(&service, &destination, events).await);
        }
        let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        rates.sort_by(f64::total_cmp);
        println!(
            "{kind}: runs {} events/s, median {:.0} events/s",
            shown.join(", "),
            rates[rates.len() / 2]
        );
    }
}

/// One forwarder with `destination` and no cursor, from its start until it delivered `events`;
/// returns events per second.
async fn run(service: &QueryService, destination: &str, events: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let settings = format!(
        "metrics_listen = \"127.0.0.1:{port}\"\n[[destinations]]\nname = \"bench\"\n{destination}"
    );
    let started = Instant::now();
    let mut forwarder = start_forwarder(
        dir.path(),
        &service.url(),
        &settings,
        &[("BENCH_SECRET", "bench-hmac-key")],
    );
    while metric(port, "delivered_total", "bench")
        .await
        .unwrap_or(0.0)
        < events as f64
    {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not delivered within 10 minutes:\n{}",
            forwarder.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    forwarder.terminate(Duration::from_secs(30));
    rate
}
