//! Reading the audit topic in batches, and committing offsets only for what has been stored.
//!
//! Auto-commit is off: the auditor commits an explicit list of offsets (last stored + 1 per
//! partition) after the batch's rows are in ClickHouse, so a crash between insert and commit
//! means redelivery (absorbed by [`crate::resolve`]), never loss. A partition assignment raises a
//! flag the pipeline checks before verifying, so chain state is reloaded from ClickHouse for
//! partitions that another auditor may have advanced.
//!
//! Before partitions are revoked, the callback finishes and commits the batch in flight
//! ([`InFlight`], which explains why), and the messages read from them but not yet verified are
//! dropped: whoever holds those partitions next reads them again from the committed offset.
//!
//! The statistics callback also keeps each partition's lag ([`Lags`]): what the watchdog and the
//! silent-chain check need to know whether this auditor has read the topic to its end.

use crate::config::KafkaConfig;
use crate::in_flight::{InFlight, Offsets, StoreFailed, Task};
use crate::metrics::Metrics;
use crate::watchdog::{Backlog, CaughtUp, Lags};
use rdkafka::consumer::StreamConsumer;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use verdict_schema::SourcePosition;

/// One message as received.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub source: SourcePosition,
}

/// Metadata and offset look-ups of the watchdog; it runs only while this auditor has nothing of
/// its own to read.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct AuditContext {
    assigned: AtomicBool,
    /// Partitions revoked since the main loop last looked.
    revoked: Mutex<BTreeSet<i32>>,
    in_flight: Arc<InFlight>,
    topic: String,
    metrics: Metrics,
    lags: Lags,
}

impl AuditContext {
    fn take_revoked(&self) -> BTreeSet<i32> {
        std::mem::take(&mut self.revoked.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ClientContext for AuditContext {
    fn stats(&self, statistics: Statistics) {
        let lags: BTreeMap<i32, i64> = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|(&id, _)| id >= 0)
            .map(|(&id, p)| (id, lag(p)))
            .collect();
        let lag: i64 = lags.values().filter(|&&lag| lag >= 0).sum();
        self.metrics.consumer_lag.set(lag);
        self.metrics.fleet.partition_lags(&lags);
        self.lags.set(lags);
    }
}

/// Messages behind the end of `partition`, `-1` if unknown. librdkafka counts from the group's
/// committed offset, which a partition that never held a message does not have: such a
/// partition (low watermark = high watermark) is read to its end, not of unknown lag.
fn lag(partition: &rdkafka::statistics::Partition) -> i64 {
    let empty = partition.hi_offset >= 0 && partition.lo_offset == partition.hi_offset;
    if partition.consumer_lag < 0 && empty {
        0
    } else {
        partition.consumer_lag.max(-1)
    }
}

impl ConsumerContext for AuditContext {
    /// Before partitions move: the batch in flight is stored and committed, and the partitions
    /// are remembered so the messages already read from them are dropped.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        if let Some(offsets) = self.in_flight.finish_blocking() {
            match tokio::task::block_in_place(|| commit(consumer, &self.topic, &offsets)) {
                Ok(()) => tracing::info!(
                    ?offsets,
                    "batch in flight stored and committed before revoke"
                ),
                Err(error) => {
                    tracing::warn!(%error, "offset commit before revoke failed; the uncommitted tail will be redelivered")
                }
            }
        }
        let ids: Vec<i32> = partitions
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ids);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let ids: Vec<i32> = partitions
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(?ids, "partitions assigned");
                self.assigned.store(true, Ordering::SeqCst);
            }
            Rebalance::Revoke(partitions) => {
                let ids: Vec<i32> = partitions
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(?ids, "partitions revoked");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }
}

pub struct AuditConsumer {
    inner: StreamConsumer<AuditContext>,
}

impl AuditConsumer {
    /// A consumer subscribed to the topic: it joins the group.
    pub fn new(config: &KafkaConfig, metrics: Metrics) -> Result<Self, KafkaError> {
        let consumer = Self::unsubscribed(config, metrics, Arc::default())?;
        consumer.inner.subscribe(&[consumer.topic()])?;
        Ok(consumer)
    }

    /// Replaces this consumer with a fresh one, which joins the group only after this one has
    /// left it. The order matters: a member that joins while the stuck one is still in the group
    /// inherits the group's leader, which on tansu 0.6 may be a member that is long dead; one
    /// that joins an empty group is its leader and assigns every partition.
    pub fn rejoin(&mut self, config: &KafkaConfig, metrics: Metrics) -> Result<(), KafkaError> {
        let in_flight = self.inner.context().in_flight.clone();
        let fresh = Self::unsubscribed(config, metrics, in_flight)?;
        let stuck = std::mem::replace(self, fresh);
        // Dropping a consumer closes it: it leaves the group and waits until it has.
        tokio::task::block_in_place(|| drop(stuck));
        self.inner.subscribe(&[self.topic()])
    }

    fn unsubscribed(
        config: &KafkaConfig,
        metrics: Metrics,
        in_flight: Arc<InFlight>,
    ) -> Result<Self, KafkaError> {
        let context = AuditContext {
            assigned: AtomicBool::new(false),
            revoked: Mutex::default(),
            in_flight,
            topic: config.topic.clone(),
            metrics,
            lags: Lags::default(),
        };
        let inner: StreamConsumer<AuditContext> = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000")
            // A killed auditor's partitions move to the others after 10 s, not librdkafka's 45 s.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000")
            .create_with_context(context)?;
        Ok(Self { inner })
    }

    fn topic(&self) -> &str {
        &self.inner.context().topic
    }

    /// The partitions this consumer holds now.
    pub fn assigned(&self) -> BTreeSet<i32> {
        self.inner
            .assignment()
            .map(|list| list.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    }

    /// The partitions this consumer holds and has read to the end (see [`CaughtUp`]).
    pub fn caught_up(&self) -> CaughtUp {
        self.inner.context().lags.caught_up(&self.assigned())
    }

    /// The group's committed offsets and the topic's end, summed over the partitions this
    /// consumer does not hold (a partition the group never committed counts from its start).
    /// Blocking look-ups.
    pub fn backlog(&self) -> Result<Backlog, KafkaError> {
        tokio::task::block_in_place(|| {
            let metadata = self
                .inner
                .fetch_metadata(Some(self.topic()), LOOKUP_TIMEOUT)?;
            let mut list = TopicPartitionList::new();
            let mut backlog = Backlog {
                committed: 0,
                end: 0,
            };
            let mut starts = BTreeMap::new();
            let held = self.assigned();
            let others = metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions())
                .filter(|p| !held.contains(&p.id()));
            for partition in others {
                let (low, high) =
                    self.inner
                        .fetch_watermarks(self.topic(), partition.id(), LOOKUP_TIMEOUT)?;
                backlog.end += high;
                starts.insert(partition.id(), low);
                list.add_partition(self.topic(), partition.id());
            }
            if list.count() == 0 {
                return Ok(backlog);
            }
            for element in self
                .inner
                .committed_offsets(list, LOOKUP_TIMEOUT)?
                .elements()
            {
                backlog.committed += match element.offset() {
                    Offset::Offset(offset) => offset,
                    _ => starts.get(&element.partition()).copied().unwrap_or(0),
                };
            }
            Ok(backlog)
        })
    }

    /// Whether partitions were assigned since the last call.
    pub fn take_assigned(&self) -> bool {
        self.inner.context().assigned.swap(false, Ordering::SeqCst)
    }

    /// Up to `max` messages, returning early after `wait` (possibly with none) or on `shutdown`.
    /// Messages read before a revoke from the partitions it took are dropped (see the module).
    pub async fn next_batch(
        &self,
        max: usize,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Vec<RawMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut batch = Vec::new();
        while batch.len() < max {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                received = self.inner.recv() => match received {
                    Ok(message) => self.drop_revoked(&mut batch).push(RawMessage {
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        source: SourcePosition {
                            partition: message.partition(),
                            offset: message.offset(),
                        },
                    }),
                    Err(error) => tracing::warn!(%error, "kafka consumer error"),
                },
            }
        }
        self.drop_revoked(&mut batch);
        batch
    }

    /// Drops from `batch` what was read from partitions revoked since: every message in it was
    /// received before the revoke, as this runs after each receive.
    fn drop_revoked<'a>(&self, batch: &'a mut Vec<RawMessage>) -> &'a mut Vec<RawMessage> {
        let revoked = self.inner.context().take_revoked();
        if !revoked.is_empty() {
            let read = batch.len();
            batch.retain(|message| !revoked.contains(&message.source.partition));
            if batch.len() < read {
                tracing::info!(
                    dropped = read - batch.len(),
                    "messages of revoked partitions dropped before verification"
                );
            }
        }
        batch
    }

    /// Hands over the task storing the next batch, which a revoke finishes first.
    pub fn start(&self, task: Task) {
        self.inner.context().in_flight.start(task);
    }

    /// Waits until the batch in flight, if any, is stored, then commits its offsets.
    pub async fn finish(&self) -> Result<(), StoreFailed> {
        let Some(offsets) = self.inner.context().in_flight.finish().await? else {
            return Ok(());
        };
        if let Err(error) =
            tokio::task::block_in_place(|| commit(&self.inner, self.topic(), &offsets))
        {
            // Typically a revoked partition: its new owner rereads the uncommitted tail,
            // which the redelivery rule absorbs.
            tracing::warn!(%error, "offset commit failed; the uncommitted tail will be redelivered");
        }
        Ok(())
    }
}

/// Commits `next` (partition → next offset to read) synchronously.
fn commit<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    next: &Offsets,
) -> Result<(), KafkaError> {
    if next.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for (&partition, &offset) in next {
        list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    consumer.commit(&list, CommitMode::Sync)
}
