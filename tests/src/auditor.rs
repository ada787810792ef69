//! The `verdict-auditor` binary as a real process, and what auditor tests do around it: produce
//! keyed messages, wait until the group has committed everything, count rows in ClickHouse.
//!
//! "Done" is defined exactly: the group's committed offsets add up to the number of messages in
//! the topic. The auditor commits only after storing, so at that point every row is in ClickHouse
//! and the counts can be asserted exactly.

use crate::bins::cargo_bin;
use crate::process::{OutputWithin, COMMAND_TIMEOUT};
use crate::{HarnessError, Result};
use clickhouse::Row;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Generous: an auditor on a cluster first runs its migrations `ON CLUSTER`, which wait for every
/// replica through ZooKeeper; with two clusters starting at once on two cores that took over 60 s
/// in CI (the auditor was waiting for ClickHouse, as it should).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// What a test auditor connects to and trusts.
#[derive(Debug, Clone)]
pub struct AuditorSetup {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub clickhouse_url: String,
    /// `(public key file, allowed chains)`.
    pub keys: Vec<(PathBuf, Option<Vec<String>>)>,
    pub max_events: usize,
}

impl AuditorSetup {
    /// The setup of the end-to-end tests: topic `verdict.events`, group `verdict-auditor`, the
    /// gateway's `public_key` trusted for its `chain` only.
    pub fn for_gateway(
        brokers: String,
        clickhouse_url: String,
        public_key: PathBuf,
        chain: &str,
    ) -> Self {
        Self {
            brokers,
            topic: "verdict.events".into(),
            group: "verdict-auditor".into(),
            clickhouse_url,
            keys: vec![(public_key, Some(vec![chain.into()]))],
            max_events: 1000,
        }
    }

    /// The setup of the auditor tests: topic `verdict.events` in `group`, one key trusted for
    /// every chain, batches of at most `max_events`.
    pub fn trusting(
        brokers: String,
        clickhouse_url: String,
        group: &str,
        public_key: PathBuf,
        max_events: usize,
    ) -> Self {
        Self {
            brokers,
            topic: "verdict.events".into(),
            group: group.into(),
            clickhouse_url,
            keys: vec![(public_key, None)],
            max_events,
        }
    }

    /// Runs `verdict-auditor --migrate-only` with this setup (and `env`): the schema is created,
    /// nothing is read. Panics when it fails.
    pub fn migrate_only(&self, env: &[(&str, &str)]) {
        let dir = temp_dir();
        let config = dir.path().join("auditor.toml");
        std::fs::write(&config, self.toml()).unwrap();
        let out = Command::new(cargo_bin("verdict-auditor"))
            .arg("--config")
            .arg(&config)
            .arg("--migrate-only")
            .envs(env.iter().copied())
            .output_within(COMMAND_TIMEOUT)
            .unwrap();
        assert!(
            out.status.success(),
            "verdict-auditor --migrate-only: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn toml(&self) -> String {
        let mut text = format!(
            "checkpoint_grace_secs = 30\nmetrics_listen = \"127.0.0.1:0\"\n\
             [kafka]\nbrokers = {:?}\ntopic = {:?}\ngroup = {:?}\n\
             [clickhouse]\nurl = {:?}\n[batch]\nmax_events = {}\nmax_wait_ms = 100\n",
            self.brokers, self.topic, self.group, self.clickhouse_url, self.max_events
        );
        for (path, chains) in &self.keys {
            text.push_str(&format!("[[trusted_keys]]\npath = {:?}\n", path));
            if let Some(chains) = chains {
                text.push_str(&format!("chains = {chains:?}\n"));
            }
        }
        text
    }
}

/// A running `verdict-auditor`, killed on drop.
#[derive(Debug)]
pub struct AuditorProcess {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// The `/metrics` and `/healthz` address.
    pub metrics: String,
}

impl AuditorProcess {
    pub fn start(setup: &AuditorSetup) -> Result<Self> {
        Self::start_with_env(setup, &[])
    }

    pub fn start_with_env(setup: &AuditorSetup, env: &[(&str, &str)]) -> Result<Self> {
        Self::start_with_config(setup, "", env)
    }

    /// With `extra` TOML appended to the config (e.g. a `[witness]` section).
    pub fn start_with_config(
        setup: &AuditorSetup,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("verdict-auditor-")
            .tempdir()
            .map_err(|source| io("creating a temp dir", source))?;
        let config = dir.path().join("auditor.toml");
        std::fs::write(&config, setup.toml() + extra).map_err(|s| io("writing the config", s))?;
        let ready = dir.path().join("ready");
        let log = File::create(dir.path().join("auditor.log")).map_err(|s| io("log", s))?;
        let err = log.try_clone().map_err(|s| io("log", s))?;
        let child = Command::new(cargo_bin("verdict-auditor"))
            .arg("--config")
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|s| io("starting verdict-auditor", s))?;
        let mut process = Self {
            dir,
            child: Some(child),
            metrics: String::new(),
        };
        let started = Instant::now();
        while !ready.exists() {
            if let Some(status) = process.try_wait() {
                return Err(process.not_ready(format!("exited with {status}")));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(process.not_ready("timed out".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(20));
        process.metrics = std::fs::read_to_string(&ready).map_err(|s| io("ready file", s))?;
        Ok(process)
    }

    fn not_ready(&self, why: String) -> HarnessError {
        HarnessError::NotReady {
            what: format!("verdict-auditor ({why})"),
            secs: START_TIMEOUT.as_secs(),
            log: self.log(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("auditor.log")).unwrap_or_default()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit on its own (e.g. the crash hook).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, then waits for the graceful exit (current batch stored and committed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.child.as_ref()?.id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        self.wait_exit(timeout)
    }

    /// SIGKILL.
    /// The process id (`None` once it was reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for AuditorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn io(what: &str, source: std::io::Error) -> HarnessError {
    HarnessError::Io {
        what: what.into(),
        source,
    }
}

/// An idempotent, `acks=all` producer.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "10")
        .create()
        .expect("creating a producer")
}

/// Sends `(key, payload)` messages in order and waits until all are acknowledged; returns each
/// message's `(partition, offset)`.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    messages: &[(String, Vec<u8>)],
) -> Vec<(i32, i64)> {
    let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(messages.len());
    for (key, payload) in messages {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((error, _)) => panic!("producing: {error}"),
            }
        }
    }
    let mut positions = Vec::with_capacity(pending.len());
    for delivery in pending {
        let delivered = delivery.await.expect("delivery channel");
        let delivered = delivered.map_err(|(e, _)| e).expect("message delivered");
        positions.push((delivered.partition, delivered.offset));
    }
    positions
}

/// Sum of the offsets `group` committed on `topic`'s partitions `0..partitions`.
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("creating a consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    match consumer.committed_offsets(list, Duration::from_secs(10)) {
        Ok(list) => list
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum(),
        Err(_) => 0,
    }
}

/// Waits until the group has committed `total` messages (panics after `timeout`).
pub async fn wait_committed(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    total: i64,
    timeout: Duration,
) {
    let started = Instant::now();
    loop {
        let (b, g, t) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
        let done = tokio::task::spawn_blocking(move || committed(&b, &g, &t, partitions))
            .await
            .expect("committed offsets");
        if done == total {
            return;
        }
        assert!(
            done < total && started.elapsed() < timeout,
            "group {group} committed {done} of {total} messages after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `SELECT count() …` as a number.
pub async fn count(client: &clickhouse::Client, sql: &str) -> u64 {
    client.query(sql).fetch_one::<u64>().await.expect(sql)
}

/// Exactly `total` events stored, each once and `verified`, and no finding.
pub async fn assert_exactly_verified(client: &clickhouse::Client, total: u64) {
    assert_eq!(
        count(client, "SELECT count() FROM events FINAL").await,
        total
    );
    let sql = "SELECT verification, count() FROM events FINAL GROUP BY verification";
    let by_status: Vec<(String, u64)> = client.query(sql).fetch_all().await.expect(sql);
    assert_eq!(
        by_status,
        vec![("verified".to_owned(), total)],
        "events by verification status; findings: {:?}",
        findings(client).await
    );
    assert_eq!(findings(client).await, vec![]);
}

/// One stored event's identity and verification status.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct StoredStatus {
    pub chain_id: String,
    pub seq: u64,
    pub verification: String,
}

pub async fn statuses(client: &clickhouse::Client) -> Vec<StoredStatus> {
    client
        .query("SELECT chain_id, seq, verification FROM events FINAL ORDER BY chain_id, seq")
        .fetch_all::<StoredStatus>()
        .await
        .expect("reading statuses")
}

/// Every stored finding, deduplicated, ordered by chain, kind and seq.
pub async fn findings(client: &clickhouse::Client) -> Vec<verdict_schema::FindingRow> {
    client
        .query(
            "SELECT kind, chain_id, seq, last_seq, detail, detected_at, detected_unix_nanos, \
             evidence, evidence_sha256, kafka_partition, kafka_offset \
             FROM findings FINAL ORDER BY chain_id, kind, seq",
        )
        .fetch_all()
        .await
        .expect("reading findings")
}

/// The config dir for a test: keys and such, kept for the test's duration.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("verdict-auditor-test-")
        .tempdir()
        .expect("temp dir")
}
