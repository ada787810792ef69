//! The auditor's main loop: collect a batch, reload chain heads if partitions were assigned,
//! verify and resolve, store, and only then commit the batch's offsets.
//!
//! The stages overlap, and the commit still follows the store: librdkafka fetches ahead on its
//! own threads; batch N's rows are stored by a task of their own ([`InFlight`]) while the loop
//! collects and verifies batch N+1 (signatures checked on both cores); then the loop waits for
//! N's insert, commits N's offsets, and hands N+1 to a new insert task. At most one batch is in
//! flight, so offsets are committed in batch order, each only after its batch's rows and chain
//! heads are stored. Before a reload (partitions assigned), when the topic has nothing new, and
//! at shutdown the loop first finishes the batch in flight.
//!
//! Shutdown (SIGTERM, ctrl-c) stops polling, finishes the batch in hand, commits it and returns.
//! While ClickHouse is down the loop waits inside the store step, so nothing more is polled.
//! Between batches the [`Watchdog`] checks, while this auditor has nothing of its own to read,
//! that the partitions it does not hold are being read by someone; when they are not, the loop
//! finishes its batch in flight, leaves the group and rejoins it with a fresh consumer.
//!
//! Test hook: [`Auditor::crash_at`] (`VERDICT_AUDITOR_CRASH_AFTER_INSERT=N` in the binary)
//! aborts the process right after the N-th batch is stored and before its offsets are committed,
//! the window the redelivery rule in [`crate::resolve`] exists for; `N:rows` aborts after its
//! events, before its chain heads. A trailing `:pause` logs the same line and then waits there
//! until the process is killed, so a test can SIGKILL it provably inside the batch while other
//! auditors go on.

use crate::config::{AuditorConfig, BatchConfig, ConfigError, KafkaConfig};
use crate::consumer::AuditConsumer;
use crate::metrics::Metrics;
use crate::pipeline::{Batch, BatchWriter, Pipeline};
use crate::publish::HeadTopic;
use crate::store::{with_retry, Stopped, Store};
use crate::watchdog::{Holding, Verdict, Watchdog};
use crate::witness::Witness;
use rdkafka::error::KafkaError;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AuditorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("[clickhouse]: {0}")]
    ClickHouse(#[from] verdict_schema::ClusterError),
    #[error(transparent)]
    Stopped(#[from] Stopped),
    #[error("the task storing a batch failed: {0}")]
    Storing(#[from] tokio::task::JoinError),
}

/// A batch being stored on a task of its own; it yields the offsets to commit once it is.
type InFlight = JoinHandle<Result<BTreeMap<i32, i64>, Stopped>>;

/// How long an empty assignment over a backlog that does not move is tolerated before the
/// auditor rejoins: longer than a rebalance after a member's session expires (10 s).
const STALL_PATIENCE: Duration = Duration::from_secs(15);

/// How long a caught-up auditor tolerates partitions it does not hold whose backlog does not
/// move: longer than another member may hold its batch waiting for a restarting ClickHouse
/// replica, so the group is not rebalanced around every short outage.
const ORPHAN_PATIENCE: Duration = Duration::from_secs(30);

pub struct Auditor {
    consumer: AuditConsumer,
    kafka: KafkaConfig,
    metrics: Metrics,
    watchdog: Watchdog,
    pipeline: Pipeline,
    batch: BatchConfig,
    crash_at: Option<CrashPoint>,
}

/// Where the fault-test hook aborts the auditor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPoint {
    /// The 1-based batch.
    pub batch: u64,
    /// After its events but before its chain heads (else after both, before the commit).
    pub before_heads: bool,
    /// Wait there until killed instead of aborting.
    pub pause: bool,
}

impl std::str::FromStr for CrashPoint {
    type Err = String;

    /// `N`, `N:rows`, `N:pause` or `N:rows:pause`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (n, how) = text.split_once(':').unwrap_or((text, ""));
        let (before_heads, pause) = match how {
            "" => (false, false),
            "rows" => (true, false),
            "pause" => (false, true),
            "rows:pause" => (true, true),
            _ => return Err(format!("{text:?}: expected N[:rows][:pause]")),
        };
        let batch = n
            .parse()
            .map_err(|_| format!("{text:?}: expected a batch number"))?;
        Ok(Self {
            batch,
            before_heads,
            pause,
        })
    }
}

impl Auditor {
    /// Loads the trusted keys, migrates the schema (waiting for ClickHouse), joins the consumer
    /// group and restores the chain heads.
    pub async fn start(
        config: &AuditorConfig,
        metrics: Metrics,
        shutdown: &CancellationToken,
    ) -> Result<Self, AuditorError> {
        let keys = config.trusted_keys()?;
        tracing::info!(keys = keys.len(), "trusted keys loaded");
        let store = migrated(config, &metrics, shutdown).await?;
        let consumer = AuditConsumer::new(&config.kafka, metrics.clone())?;
        let grace = Duration::from_secs(config.checkpoint_grace_secs);
        let witness = config.witness_keys(&keys)?;
        let mut pipeline = Pipeline::new(keys, store, metrics.clone(), grace);
        if let (Some((key, previous)), Some(witness)) = (witness, &config.witness) {
            tracing::info!(
                key_id = key.public().key_id(),
                "witnessing verified chain heads"
            );
            let topic = HeadTopic::new(&config.kafka.brokers, witness.topic(&config.kafka.topic))?;
            topic
                .create(&config.kafka.brokers, witness.replication)
                .await?;
            let every = Duration::from_secs(witness.every_secs.max(1));
            let witness = Witness::new(key, every).handing_over_from(previous);
            pipeline = pipeline.with_witness(witness, topic);
        }
        pipeline.reload(shutdown).await?;
        // The heads were just loaded; an assignment before the first batch needs no second load.
        consumer.take_assigned();
        Ok(Self {
            consumer,
            kafka: config.kafka.clone(),
            metrics,
            watchdog: Watchdog::new(STALL_PATIENCE, ORPHAN_PATIENCE),
            pipeline,
            batch: config.batch.clone(),
            crash_at: None,
        })
    }

    /// Migrates the schema (waiting for ClickHouse) and returns, without joining the group:
    /// `verdict-auditor --migrate-only`, which creates a cluster's schema before rows are copied
    /// into it (README "Converting a single server to a cluster").
    pub async fn migrate_only(
        config: &AuditorConfig,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> Result<(), AuditorError> {
        migrated(config, metrics, shutdown).await.map(drop)
    }

    /// Test hook: abort while storing a batch, before committing it.
    pub fn crash_at(mut self, point: Option<CrashPoint>) -> Self {
        self.crash_at = point;
        self
    }

    /// Runs until `shutdown`; the batch in hand is stored and committed before returning.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AuditorError> {
        let mut inserts = 0u64;
        let mut in_flight = None;
        while !shutdown.is_cancelled() {
            let messages = self
                .consumer
                .next_batch(self.batch.max_events, self.batch.max_wait(), &shutdown)
                .await;
            if messages.is_empty() {
                self.finish(in_flight.take()).await?;
            }
            if self.consumer.take_assigned() {
                self.finish(in_flight.take()).await?;
                self.pipeline.reload(&shutdown).await?;
            }
            if self.stalled() {
                self.finish(in_flight.take()).await?;
                self.consumer.rejoin(&self.kafka, self.metrics.clone())?;
            }
            let caught_up = self.consumer.caught_up();
            let batch = self
                .pipeline
                .process(&messages, &caught_up, &shutdown)
                .await?;
            self.finish(in_flight.take()).await?;
            if batch.is_empty() {
                continue;
            }
            inserts += 1;
            let crash = self.crash_at.map(|point| (point, inserts));
            let writer = self.pipeline.writer();
            in_flight = Some(tokio::spawn(store(writer, batch, crash, shutdown.clone())));
        }
        self.finish(in_flight.take()).await?;
        tracing::info!("auditor stopped");
        Ok(())
    }

    /// Waits until the batch in flight is stored, then commits its offsets.
    async fn finish(&self, in_flight: Option<InFlight>) -> Result<(), AuditorError> {
        let Some(task) = in_flight else {
            return Ok(());
        };
        let commit = task.await??;
        if let Err(error) = self.consumer.commit(&commit) {
            // Typically a revoked partition: its new owner rereads the uncommitted tail,
            // which the redelivery rule absorbs.
            tracing::warn!(%error, "offset commit failed; the uncommitted tail will be redelivered");
        }
        Ok(())
    }

    /// Whether the watchdog finds this consumer stuck: nothing of its own to read, while the
    /// partitions it does not hold have a backlog that no one commits.
    fn stalled(&mut self) -> bool {
        let holding = self.consumer.caught_up().holding();
        if holding == Holding::Reading {
            self.metrics.stalled.set(0);
        }
        if !self.watchdog.due(holding) {
            return false;
        }
        let backlog = match self.consumer.backlog() {
            Ok(backlog) => backlog,
            Err(error) => {
                tracing::warn!(%error, "cannot read the group's backlog");
                return false;
            }
        };
        if self.watchdog.judge(backlog) == Verdict::Fine {
            self.metrics.stalled.set(0);
            return false;
        }
        tracing::warn!(
            assigned = ?self.consumer.assigned(),
            committed = backlog.committed,
            end = backlog.end,
            "partitions this auditor does not hold have a backlog no one commits: rejoining the group"
        );
        self.metrics.stalled.set(1);
        true
    }
}

/// The store of `[clickhouse]`, its schema migrated (on its cluster, when set).
async fn migrated(
    config: &AuditorConfig,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<Store, AuditorError> {
    let store = Store::new(&config.clickhouse)?;
    with_retry(metrics, shutdown, "migrating the schema", || {
        store.migrate()
    })
    .await?;
    Ok(store)
}

/// Stores `batch` (rows, then chain heads) and returns its offsets to commit. `crash`: the
/// fault-test hook and this batch's number.
async fn store(
    writer: BatchWriter,
    batch: Batch,
    crash: Option<(CrashPoint, u64)>,
    shutdown: CancellationToken,
) -> Result<BTreeMap<i32, i64>, Stopped> {
    writer.store_rows(&batch, &shutdown).await?;
    crash_if(crash, true).await;
    writer.store_heads(&batch, &shutdown).await?;
    crash_if(crash, false).await;
    Ok(batch.commit)
}

/// The fault-test hook: aborts (or waits to be killed) while storing the chosen batch, before
/// its commit.
async fn crash_if(crash: Option<(CrashPoint, u64)>, before_heads: bool) {
    let Some((point, batch)) = crash else {
        return;
    };
    if point.batch == batch && point.before_heads == before_heads {
        tracing::error!(
            inserts = batch,
            before_heads,
            pause = point.pause,
            "VERDICT_AUDITOR_CRASH_AFTER_INSERT reached: stopping before commit"
        );
        if point.pause {
            std::future::pending::<()>().await;
        }
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::CrashPoint;

    #[test]
    fn crash_points_parse_with_and_without_a_pause() {
        let point = |batch, before_heads, pause| CrashPoint {
            batch,
            before_heads,
            pause,
        };
        assert_eq!("3".parse(), Ok(point(3, false, false)));
        assert_eq!("3:rows".parse(), Ok(point(3, true, false)));
        assert_eq!("3:pause".parse(), Ok(point(3, false, true)));
        assert_eq!("3:rows:pause".parse(), Ok(point(3, true, true)));
        for bad in ["", "x", "3:pause:rows", "3:heads", "3:rows:"] {
            assert!(bad.parse::<CrashPoint>().is_err(), "{bad:?}");
        }
    }
}
