//! Where events leave the gateway: the journal, tailed and produced to Kafka.
//!
//! The shipper reads the journal (not the recorder's memory), and only up to the seq the journal
//! has fsynced, so what it sends is exactly what was made durable, and a restart resumes from the [`ShippedMark`]: the highest seq the broker
//! acknowledged. Messages are keyed by `chain_id` (one chain stays ordered in one partition) and
//! produced by an idempotent producer with `acks=all` and no delivery timeout, so during a broker
//! outage librdkafka keeps retrying without reordering or duplicating; the journal keeps growing
//! meanwhile and calls are unaffected. Only a restart between an acknowledgement and the mark
//! being stored sends an event twice, and consumers deduplicate by `(chain_id, seq)`.
//!
//! Before shipping, the topic is created through the admin API (`create_topic`, with
//! `topic_partitions` and `topic_replication`; an existing topic is left as it is). When that is
//! not allowed, the log says exactly which command creates it, and shipping starts anyway (an
//! auto-creating broker or an operator may still create it). librdkafka's own messages go through
//! [`QuietContext`]: its log lines at debug level, its errors deduplicated — one line per distinct
//! error per minute, with how many repeats were suppressed — so a broker outage does not print the
//! same error several times a second, twice each.

use crate::config::KafkaConfig;
use futures_util::stream::{FuturesOrdered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use verdict_journal::{JournalError, JournalReader, ShippedMark};

/// Messages handed to the producer and not yet acknowledged, at most.
const IN_FLIGHT: usize = 10_000;
/// How often the acknowledged mark is persisted while events flow.
const MARK_EVERY: Duration = Duration::from_millis(200);
/// The same librdkafka error is logged at most once per this period.
const REPEAT_QUIET: Duration = Duration::from_secs(60);
/// Distinct librdkafka errors remembered for deduplication; past it, the table starts over.
const MAX_REMEMBERED: usize = 256;
/// How long topic creation may take before shipping starts without it.
const CREATE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    #[error("kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("kafka producer dropped a message without an answer")]
    ProducerGone,
}

/// Progress, for `/metrics` and logs.
#[derive(Debug, Default)]
pub struct ShipperStatus {
    pub acknowledged: AtomicU64,
}

/// librdkafka's logs and errors, deduplicated and rate-limited (see the module docs).
#[derive(Default)]
pub struct QuietContext {
    /// Per distinct error text: when it was last logged and the repeats since.
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl QuietContext {
    /// `Some(repeats suppressed since the last line)` when `message` is due to be logged.
    fn due(&self, message: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_REMEMBERED && !seen.contains_key(message) {
            seen.clear();
        }
        match seen.get_mut(message) {
            Some((last, repeats)) if now.duration_since(*last) < REPEAT_QUIET => {
                *repeats += 1;
                None
            }
            Some((last, repeats)) => {
                *last = now;
                Some(std::mem::take(repeats))
            }
            None => {
                seen.insert(message.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

/// The witness watcher's consumer speaks through the same quiet context.
impl rdkafka::consumer::ConsumerContext for QuietContext {}

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // Every failure that matters also arrives through `error`, once; these are its echoes.
        tracing::debug!(?level, fac, "librdkafka: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let message = format!("{error}: {reason}");
        if let Some(suppressed) = self.due(&message, Instant::now()) {
            tracing::warn!(suppressed, "kafka: {message}");
        }
    }
}

pub struct Shipper {
    producer: FutureProducer<QuietContext>,
    /// For the short-lived admin client that creates the topic.
    client: ClientConfig,
    new_topic: Option<(i32, i32)>,
    brokers: String,
    topic: String,
    chain_id: String,
    journal_dir: PathBuf,
    mark: ShippedMark,
    retention: Option<Duration>,
    pub status: Arc<ShipperStatus>,
}

impl Shipper {
    pub fn new(
        config: &KafkaConfig,
        chain_id: &str,
        journal_dir: PathBuf,
        retention: Option<Duration>,
    ) -> Result<Self, ShipperError> {
        let mut client = ClientConfig::new();
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        client
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Never give up on a message: an outage only delays it.
            .set("message.timeout.ms", "0")
            .set("linger.ms", "5")
            // Room for everything in flight, so handing a message over never fails for space.
            .set("queue.buffering.max.messages", "100000");
        Ok(Self {
            producer: client.create_with_context(QuietContext::default())?,
            client: client.clone(),
            new_topic: config
                .create_topic
                .then_some((config.topic_partitions, config.topic_replication)),
            brokers: config.brokers.clone(),
            topic: config.topic.clone(),
            chain_id: chain_id.to_owned(),
            mark: ShippedMark::new(&journal_dir, "kafka"),
            journal_dir,
            retention,
            status: Arc::default(),
        })
    }

    /// Ships until `stop`, then waits (bounded) for what is in flight and stores the mark.
    pub async fn run(self, mut written: watch::Receiver<u64>, stop: CancellationToken) {
        tokio::select! {
            _ = self.create_topic() => {}
            _ = stop.cancelled() => return,
        }
        loop {
            match self.ship(&mut written, &stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, "shipper failed; resuming from the acknowledged mark in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    async fn ship(
        &self,
        written: &mut watch::Receiver<u64>,
        stop: &CancellationToken,
    ) -> Result<(), ShipperError> {
        let mut acknowledged = self.mark.load()?;
        let durable = *written.borrow();
        if acknowledged > durable {
            // The broker has seqs the journal lost (power loss inside the fsync window, or a
            // restored backup): they will be issued again with other bodies, which the auditor
            // reports as forks. Ship the journal's own from where it is.
            tracing::error!(acknowledged, durable, "the broker acknowledged seqs beyond the journal's end; shipping from the journal's end");
            acknowledged = durable;
        }
        self.status
            .acknowledged
            .store(acknowledged, Ordering::Relaxed);
        let mut reader = JournalReader::open(&self.journal_dir)?;
        reader.seek_after(acknowledged)?;
        tracing::info!(chain_id = %self.chain_id, after_seq = acknowledged, topic = %self.topic, "shipping the journal to Kafka");
        let mut in_flight = FuturesOrdered::new();
        let mut stored = acknowledged;
        let mut last_store = Instant::now();
        let mut journal_end = false;
        let mut stopping = false;
        loop {
            while in_flight.len() < IN_FLIGHT && !journal_end {
                // Only what is on disk: bytes past it may yet be cut off by a failed write.
                match reader.next_record_upto(*written.borrow())? {
                    Some(record) => {
                        if record.damaged {
                            // Shipped as it is: the auditor reports what changed.
                            tracing::error!(segment = %record.segment, offset = record.offset, seq = record.seq,
                                "journal record damaged (checksum mismatch); shipping it for the auditor to report");
                        }
                        in_flight.push_back(self.produce(record.seq, &record.payload)?);
                    }
                    None => journal_end = true,
                }
            }
            // Asked to stop: what was durable by then (the shutdown checkpoint included) has just
            // been handed to the producer; the rest ships at the next start.
            if stopping {
                break;
            }
            tokio::select! {
                Some(delivered) = in_flight.next(), if !in_flight.is_empty() => {
                    acknowledged = delivered?;
                    self.status.acknowledged.store(acknowledged, Ordering::Relaxed);
                }
                changed = written.changed(), if journal_end => {
                    journal_end = false;
                    if changed.is_err() && in_flight.is_empty() {
                        break;
                    }
                }
                _ = tokio::time::sleep(MARK_EVERY), if journal_end && in_flight.is_empty() => {
                    journal_end = false;
                }
                _ = stop.cancelled() => (stopping, journal_end) = (true, false),
            }
            if acknowledged != stored
                && (last_store.elapsed() >= MARK_EVERY || in_flight.is_empty())
            {
                self.store_mark(acknowledged)?;
                (stored, last_store) = (acknowledged, Instant::now());
            }
        }
        // Shutting down: give what is in flight a moment to be acknowledged.
        let drain = async {
            while let Some(delivered) = in_flight.next().await {
                match delivered {
                    Ok(seq) => acknowledged = seq,
                    Err(_) => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        self.store_mark(acknowledged)?;
        Ok(())
    }

    /// Creates the topic if configured to and it does not exist; says what to run when it cannot.
    async fn create_topic(&self) {
        let Some((partitions, replication)) = self.new_topic else {
            return;
        };
        let topic = NewTopic::new(
            &self.topic,
            partitions,
            TopicReplication::Fixed(replication),
        );
        let admin: AdminClient<QuietContext> = match self
            .client
            .create_with_context(QuietContext::default())
        {
            Ok(admin) => admin,
            Err(error) => {
                tracing::error!(%error, "cannot create a Kafka admin client to create the topic");
                return;
            }
        };
        let options = AdminOptions::new().operation_timeout(Some(CREATE_TIMEOUT));
        let created =
            tokio::time::timeout(CREATE_TIMEOUT, admin.create_topics([&topic], &options)).await;
        let outcome = match created {
            Ok(Ok(results)) => results.into_iter().next(),
            Ok(Err(error)) => Some(Err((self.topic.clone(), error_code(&error)))),
            Err(_) => Some(Err((
                self.topic.clone(),
                RDKafkaErrorCode::OperationTimedOut,
            ))),
        };
        match outcome {
            Some(Ok(_)) => {
                tracing::info!(topic = %self.topic, partitions, replication, "created the Kafka topic")
            }
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => {}
            Some(Err((_, code))) => tracing::error!(
                topic = %self.topic,
                error = %code,
                "could not create the Kafka topic; create it with: kafka-topics.sh --bootstrap-server {} --create --if-not-exists --topic {} --partitions {partitions} --replication-factor {replication}",
                self.brokers,
                self.topic,
            ),
        }
    }

    /// Hands one record to the producer now (so messages enter its queue in seq order) and
    /// returns the wait for its acknowledgement.
    fn produce(
        &self,
        seq: u64,
        payload: &[u8],
    ) -> Result<impl std::future::Future<Output = Result<u64, ShipperError>> + use<>, ShipperError>
    {
        let record = FutureRecord::to(&self.topic)
            .key(&self.chain_id)
            .payload(payload);
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(error, _)| ShipperError::Kafka(error))?;
        Ok(async move {
            match delivery.await {
                Ok(Ok(_)) => Ok(seq),
                Ok(Err((error, _))) => Err(ShipperError::Kafka(error)),
                Err(_) => Err(ShipperError::ProducerGone),
            }
        })
    }

    fn store_mark(&self, acknowledged: u64) -> Result<(), ShipperError> {
        self.mark.store(acknowledged)?;
        if let Some(retention) = self.retention {
            for removed in verdict_journal::prune(&self.journal_dir, acknowledged, retention)? {
                tracing::info!(segment = %removed.display(), "removed a journal segment the broker fully acknowledged");
            }
        }
        Ok(())
    }
}

fn error_code(error: &KafkaError) -> RDKafkaErrorCode {
    error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_errors_are_logged_once_per_period_with_the_count() {
        let context = QuietContext::default();
        let t0 = Instant::now();
        assert_eq!(context.due("broker down", t0), Some(0));
        for i in 1..=50 {
            assert_eq!(
                context.due("broker down", t0 + Duration::from_millis(i * 100)),
                None
            );
        }
        assert_eq!(
            context.due("other error", t0),
            Some(0),
            "distinct errors are not hidden"
        );
        assert_eq!(context.due("broker down", t0 + REPEAT_QUIET), Some(50));
    }
}
