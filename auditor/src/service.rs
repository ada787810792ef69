//! The auditor's main loop: collect a batch, reload chain heads if partitions were assigned,
//! verify and resolve, store, and only then commit the batch's offsets.
//!
//! Shutdown (SIGTERM, ctrl-c) stops polling, finishes the batch in hand, commits it and returns.
//! While ClickHouse is down the loop waits inside the store step, so nothing more is polled.
//!
//! Test hook: [`Auditor::crash_after_insert`] (`VERDICT_AUDITOR_CRASH_AFTER_INSERT=N` in the
//! binary) aborts the process right after the N-th batch is stored and before its offsets are
//! committed, the window the redelivery rule in [`crate::resolve`] exists for.

use crate::config::{AuditorConfig, BatchConfig, ConfigError};
use crate::consumer::AuditConsumer;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::store::{with_retry, Stopped, Store};
use rdkafka::error::KafkaError;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AuditorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

pub struct Auditor {
    consumer: AuditConsumer,
    pipeline: Pipeline,
    batch: BatchConfig,
    crash_after_insert: Option<u64>,
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
        let store = Store::new(&config.clickhouse);
        with_retry(&metrics, shutdown, "migrating the schema", || {
            store.migrate()
        })
        .await?;
        let consumer = AuditConsumer::new(&config.kafka, metrics.clone())?;
        let grace = Duration::from_secs(config.checkpoint_grace_secs);
        let mut pipeline = Pipeline::new(keys, store, metrics, grace);
        pipeline.reload(shutdown).await?;
        // The heads were just loaded; an assignment before the first batch needs no second load.
        consumer.take_assigned();
        Ok(Self {
            consumer,
            pipeline,
            batch: config.batch.clone(),
            crash_after_insert: None,
        })
    }

    /// Test hook: abort after storing the `n`-th batch, before committing it.
    pub fn crash_after_insert(mut self, n: Option<u64>) -> Self {
        self.crash_after_insert = n;
        self
    }

    /// Runs until `shutdown`; the batch in hand is stored and committed before returning.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AuditorError> {
        let mut inserts = 0u64;
        while !shutdown.is_cancelled() {
            let messages = self
                .consumer
                .next_batch(self.batch.max_events, self.batch.max_wait(), &shutdown)
                .await;
            if self.consumer.take_assigned() {
                self.pipeline.reload(&shutdown).await?;
            }
            let batch = self.pipeline.process(&messages, &shutdown).await?;
            if batch.events.is_empty() && batch.findings.is_empty() && batch.commit.is_empty() {
                continue;
            }
            self.pipeline.store(&batch, &shutdown).await?;
            inserts += 1;
            if self.crash_after_insert == Some(inserts) {
                tracing::error!(
                    inserts,
                    "VERDICT_AUDITOR_CRASH_AFTER_INSERT reached: aborting before commit"
                );
                std::process::abort();
            }
            if let Err(error) = self.consumer.commit(&batch.commit) {
                // Typically a revoked partition: its new owner rereads the uncommitted tail,
                // which the redelivery rule absorbs.
                tracing::warn!(%error, "offset commit failed; the uncommitted tail will be redelivered");
            }
        }
        tracing::info!("auditor stopped");
        Ok(())
    }
}
