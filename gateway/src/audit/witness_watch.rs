//! Reading the witness's heads back: the gateway's own alarm for a stolen key.
//!
//! The auditor's witness signs heads of every chain it verified and publishes them on a topic of
//! their own (`<topic>.witness`). Whoever holds this gateway's signing key can write events for
//! its chain; if such events reach the witness before (or instead of) the gateway's own, the
//! witness signs a head that this gateway never wrote. Only the gateway can tell: it holds the
//! one journal that is its real history. So it reads every head of its chain, checks the
//! witness's signature, and compares the head with its own journal at that seq:
//! - the same event hash: agreement (the `witness_agreed_seq` gauge moves up);
//! - another hash, or a seq beyond what this gateway ever wrote: **disagreement**, logged as an
//!   error and counted in `witness_disagreements_total` — the gateway key signs a history this
//!   gateway did not make, so it leaked; rotate it and revoke the old one;
//! - a head whose signature does not verify against the configured witness keys: counted in
//!   `witness_heads_rejected_total` and otherwise ignored (anyone with write access to the topic
//!   could send it).
//!
//! Heads of seqs already pruned from the journal cannot be compared and are skipped. The
//! watcher only reads; a broker outage delays it and nothing else.

use super::shipper::QuietContext;
use crate::config::{KafkaConfig, WitnessWatchConfig};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use verdict_journal::{JournalError, JournalReader};
use verdict_proto::{pb, witness, KeyError, PublicKey, SignedEvent};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("witness key: {0}")]
    Key(#[from] KeyError),
    #[error("[audit.witness] needs at least one witness public key in `keys`")]
    NoKeys,
    #[error("[audit.witness] revoked: {0}")]
    Revoked(#[from] verdict_proto::TrustError),
    #[error("kafka consumer for the witness topic: {0}")]
    Kafka(#[from] KafkaError),
}

/// What `/metrics` shows of the watcher.
#[derive(Debug, Default)]
pub struct WitnessStatus {
    /// The highest witnessed seq that equals this gateway's journal.
    pub agreed_seq: AtomicU64,
    pub disagreements: AtomicU64,
    pub rejected: AtomicU64,
}

/// How a witnessed head compares with this gateway's journal.
#[derive(Debug, PartialEq, Eq)]
enum Comparison {
    Agrees,
    /// The journal no longer holds the seq (pruned).
    Unchecked,
    Differs(String),
}

pub struct WitnessWatch {
    consumer: StreamConsumer<QuietContext>,
    witnesses: Vec<PublicKey>,
    /// key_id → Unix nanoseconds from which the witness key is revoked.
    revoked: HashMap<String, i64>,
    chain_id: String,
    journal_dir: PathBuf,
    pub status: Arc<WitnessStatus>,
}

impl WitnessWatch {
    pub fn new(
        config: &WitnessWatchConfig,
        kafka: &KafkaConfig,
        chain_id: &str,
        journal_dir: PathBuf,
    ) -> Result<Self, WatchError> {
        if config.keys.is_empty() {
            return Err(WatchError::NoKeys);
        }
        let witnesses = config
            .keys
            .iter()
            .map(|path| PublicKey::read_pem_file(path))
            .collect::<Result<Vec<_>, _>>()?;
        let revoked = config
            .revoked
            .iter()
            .map(|(id, time)| Ok((id.clone(), verdict_proto::trusted::parse_rfc3339(time)?)))
            .collect::<Result<_, WatchError>>()?;
        let topic = config
            .topic
            .clone()
            .unwrap_or_else(|| format!("{}.witness", kafka.topic));
        let mut client = ClientConfig::new();
        for (key, value) in &kafka.properties {
            client.set(key, value);
        }
        // Every start reads every head from the beginning (no offsets are committed): the
        // hand-over heads that name later witness keys are only learned by reading them.
        let consumer: StreamConsumer<QuietContext> = client
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", format!("verdict-gateway-witness-{chain_id}"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create_with_context(QuietContext::default())?;
        consumer.subscribe(&[&topic])?;
        tracing::info!(%topic, witnesses = witnesses.len(), "reading the witness's heads back");
        Ok(Self {
            consumer,
            witnesses,
            revoked,
            chain_id: chain_id.to_owned(),
            journal_dir,
            status: Arc::default(),
        })
    }

    /// Checks every head of this chain as it arrives, until the process ends.
    pub async fn run(mut self, written: watch::Receiver<u64>) {
        loop {
            let payload = match self.consumer.recv().await {
                Ok(message) => message.payload().unwrap_or_default().to_vec(),
                Err(error) => {
                    tracing::debug!(%error, "witness topic");
                    continue;
                }
            };
            let Some(head) = self.accept(&payload) else {
                continue;
            };
            let (dir, seq) = (self.journal_dir.clone(), head.seq);
            let newest = *written.borrow();
            let comparison =
                tokio::task::spawn_blocking(move || compare(&dir, &head, newest)).await;
            match comparison {
                Ok(Ok(comparison)) => self.report(comparison, seq),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "reading the journal to compare a witnessed head")
                }
                Err(error) => tracing::warn!(%error, "comparing a witnessed head"),
            }
        }
    }

    /// The head in `payload` if it is of this chain and signed by a configured witness key (or
    /// one a hand-over head signed by such a key named).
    fn accept(&mut self, payload: &[u8]) -> Option<pb::WitnessedHead> {
        let signed: Result<pb::SignedHead, _> = prost::Message::decode(payload);
        let verified = signed.map_err(|e| e.to_string()).and_then(|s| {
            witness::follow_handovers(&mut self.witnesses, std::slice::from_ref(&s), &self.revoked);
            let head = witness::verify(&s, &self.witnesses).map_err(|e| e.to_string())?;
            witness::revocation(&head.witness_key_id, head.time_unix_nanos, &self.revoked)
                .map_err(|e| e.to_string())?;
            Ok(head)
        });
        match verified {
            Ok(head) => (head.chain_id == self.chain_id).then_some(head),
            Err(error) => {
                self.status.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "a head on the witness topic does not verify; ignored");
                None
            }
        }
    }

    fn report(&self, comparison: Comparison, seq: u64) {
        match comparison {
            Comparison::Agrees => {
                self.status.agreed_seq.fetch_max(seq, Ordering::Relaxed);
            }
            Comparison::Unchecked => {
                tracing::debug!(
                    seq,
                    "a witnessed head below the pruned journal; not compared"
                )
            }
            Comparison::Differs(what) => {
                self.status.disagreements.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    chain = %self.chain_id,
                    seq,
                    "the witness signed a head this gateway never wrote: {what}. Another holder of \
                     this gateway's signing key is writing to its chain: rotate the key and revoke \
                     the old one"
                );
            }
        }
    }
}

/// Compares `head` with the journal in `dir`, whose newest durable seq is `newest`.
fn compare(dir: &Path, head: &pb::WitnessedHead, newest: u64) -> Result<Comparison, JournalError> {
    if head.seq > newest {
        return Ok(Comparison::Differs(format!(
            "the witness saw seq {} but this gateway's journal ends at seq {newest}",
            head.seq
        )));
    }
    let mut reader = JournalReader::open(dir)?;
    reader.seek_after(head.seq.saturating_sub(1))?;
    let record = match reader.next_record()? {
        Some(record) if record.seq == head.seq => record,
        _ => return Ok(Comparison::Unchecked),
    };
    let own = SignedEvent::decode(&record.payload).map(|e| e.hash);
    Ok(match own {
        Ok(hash) if hash.as_slice() == head.event_hash.as_slice() => Comparison::Agrees,
        Ok(hash) => Comparison::Differs(format!(
            "at seq {} the witness saw event {} but this gateway wrote {}",
            head.seq,
            hex::encode(&head.event_hash),
            hex::encode(hash)
        )),
        Err(error) => Comparison::Differs(format!(
            "this gateway's journal record at seq {} does not decode ({error})",
            head.seq
        )),
    })
}
