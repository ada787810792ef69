//! One chain, one verdict: a key trusted only for chain `gw-a` signs a chain `gw-x`. The auditor
//! (reading the topic), the query service's VerifyChain (over rows written straight into
//! ClickHouse, as an attacker with write access to it could) and `verdict verify` (offline, over
//! an export of those rows) load the same trusted keys through the same loader, and all three
//! answer `key_not_allowed_for_chain`. Before they shared a loader, VerifyChain and the CLI
//! trusted any listed key for any chain and called this chain OK.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use verdict_proto::pb;
use verdict_tests::audit_rows;
use verdict_tests::auditor::{
    findings, produce, producer, temp_dir, wait_committed, AuditorProcess, AuditorSetup,
};
use verdict_tests::bins::cargo_bin;
use verdict_tests::chains::{chain, key_in};
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::query::{authed, QueryService, TOKEN};
use verdict_tests::{Broker, ClickHouse};

const TOPIC: &str = "verdict.events";
const KIND: &str = "key_not_allowed_for_chain";

/// `trusted_keys` as every service writes it: the key, scoped to `gw-a`.
fn keys_toml(public: &Path) -> String {
    format!(
        "trusted_keys = [{{ path = {:?}, chains = [\"gw-a\"] }}]\n",
        public.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_trusted_for_another_chain_gets_the_same_finding_everywhere() {
    let dir = temp_dir();
    let (key, public) = key_in(dir.path(), "gw-a");
    let forged = chain("gw-x", &key, 3);

    // The auditor, through the topic.
    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    broker.create_topic(TOPIC, 1).await.unwrap();
    let setup = AuditorSetup {
        brokers: broker.bootstrap(),
        topic: TOPIC.into(),
        group: "scoped".into(),
        clickhouse_url: clickhouse.url(),
        keys: vec![(public.clone(), Some(vec!["gw-a".into()]))],
        max_events: 50,
    };
    let _auditor = AuditorProcess::start(&setup).unwrap();
    let messages: Vec<(String, Vec<u8>)> = forged
        .iter()
        .map(|e| (e.chain_id.clone(), e.encode()))
        .collect();
    produce(&producer(&broker.bootstrap()), TOPIC, &messages).await;
    wait_committed(
        &broker.bootstrap(),
        "scoped",
        TOPIC,
        1,
        3,
        Duration::from_secs(60),
    )
    .await;
    let kinds: Vec<(String, u64)> = findings(&clickhouse.client())
        .await
        .into_iter()
        .map(|f| (f.kind, f.seq))
        .collect();
    assert_eq!(
        kinds,
        (1..=3).map(|s| (KIND.to_owned(), s)).collect::<Vec<_>>()
    );

    // VerifyChain, over the same events written straight into ClickHouse.
    let db = clickhouse.client();
    audit_rows::store_events(&db, &forged).await.unwrap();
    let service = QueryService::start(&clickhouse.url(), None, &keys_toml(&public)).unwrap();
    let report = service
        .client()
        .await
        .verify_chain(authed(
            pb::VerifyChainRequest {
                chain_id: "gw-x".into(),
                from_seq: 0,
                to_seq: 0,
            },
            TOKEN,
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", service.log_tail()))
        .into_inner();
    assert!(!report.ok, "{report:?}");
    assert_eq!(
        report.breaks.first().map(|b| b.kind.as_str()),
        Some(KIND),
        "{report:?}"
    );

    // verdict verify, offline, over an export of those rows, with the same keys config.
    let export = dir.path().join("gw-x.jsonl");
    let out = Command::new(cargo_bin("verdict"))
        .args(["export", "--chain", "gw-x", "--out"])
        .arg(&export)
        .env("VERDICT_QUERY_URL", service.url())
        .env("VERDICT_QUERY_TOKEN", TOKEN)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("keys.toml");
    std::fs::write(&config, keys_toml(&public)).unwrap();
    let out = Command::new(cargo_bin("verdict"))
        .args(["verify", "--export"])
        .arg(&export)
        .arg("--trusted-keys")
        .arg(&config)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains(KIND), "{report}");
}
