//! The auditor's main loop: collect a batch, reload chain heads if partitions were assigned,
//! verify and resolve, store, and only then commit the batch's offsets.
//!
//! The stages overlap, and the commit still follows the store: librdkafka fetches ahead on its
//! own threads; batch N's rows are stored by a task of their own ([`crate::in_flight`]) while the loop
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
//! A batch in flight is also finished, and committed, by the consumer's revoke callback before
//! its partitions can move to another auditor ([`crate::in_flight`]).
//!
//! Test hook: [`Auditor::with_faults`] (`VERDICT_AUDITOR_FAULT` in the binary, see [`crate::fault`]).

use crate::config::{AuditorConfig, BatchConfig, ConfigError, KafkaConfig};
use crate::consumer::AuditConsumer;
use crate::fault::{Faults, Stage};
use crate::in_flight::{Offsets, StoreFailed};
use crate::metrics::Metrics;
use crate::pipeline::{Batch, BatchWriter, Pipeline};
use crate::publish::HeadTopic;
use crate::store::{with_retry, Stopped, Store};
use crate::watchdog::{Holding, Verdict, Watchdog};
use crate::witness::Witness;
use rdkafka::error::KafkaError;
use std::time::Duration;
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
    #[error(transparent)]
    Storing(#[from] StoreFailed),
}

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
    faults: Faults,
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
            faults: Faults::default(),
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

    /// Test hook: a batch misbehaves while it is stored ([`crate::fault`]).
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Runs until `shutdown`; the batch in hand is stored and committed before returning.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AuditorError> {
        let mut inserts = 0u64;
        while !shutdown.is_cancelled() {
            let mut messages = self
                .consumer
                .next_batch(self.batch.max_events, self.batch.max_wait(), &shutdown)
                .await;
            if messages.is_empty() {
                self.consumer.finish().await?;
            }
            if self.consumer.take_assigned() {
                self.consumer.finish().await?;
                self.pipeline.reload(&shutdown).await?;
            }
            if self.stalled() {
                self.consumer.finish().await?;
                self.consumer.rejoin(&self.kafka, self.metrics.clone())?;
                // Read by the consumer that left, from partitions that may now be another's:
                // uncommitted, so whoever holds them next reads them again.
                messages.clear();
            }
            let caught_up = self.consumer.caught_up();
            let batch = self
                .pipeline
                .process(&messages, &caught_up, &shutdown)
                .await?;
            self.consumer.finish().await?;
            if batch.is_empty() {
                continue;
            }
            inserts += 1;
            let fault = (self.faults.clone(), inserts);
            let writer = self.pipeline.writer();
            let task = tokio::spawn(store(writer, batch, fault, shutdown.clone()));
            self.consumer.start(task);
        }
        self.consumer.finish().await?;
        tracing::info!("auditor stopped");
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

/// Stores `batch` (rows, then chain heads) and returns its offsets to commit. `fault`: the
/// fault-test hook and this batch's number.
async fn store(
    writer: BatchWriter,
    batch: Batch,
    (faults, number): (Faults, u64),
    shutdown: CancellationToken,
) -> Result<Offsets, Stopped> {
    faults.reach(number, Stage::Start).await;
    writer.store_rows(&batch, &shutdown).await?;
    faults.reach(number, Stage::RowsStored).await;
    writer.store_heads(&batch, &shutdown).await?;
    faults.reach(number, Stage::HeadsStored).await;
    Ok(batch.commit)
}
