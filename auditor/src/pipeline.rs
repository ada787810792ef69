//! One batch, from received messages to rows: decode, verify (batch signature verification per
//! batch, chain checks per chain in arrival order), resolve repeats against stored rows, and build
//! the event, finding and chain-head rows plus the offsets to commit once they are stored.
//!
//! Nothing is dropped: an undecodable message becomes a `malformed` finding carrying its raw bytes
//! and Kafka position (its `chain_id` is the message key when that is UTF-8, unverified), and
//! every break the verifier reports becomes a finding with the offending message as evidence.
//! Stored envelopes are the bytes as received. Rows are written findings first, then events,
//! then heads, so a persisted head never points past stored events.
//!
//! The loop stores batch N (a [`BatchWriter`] on another task) while this pipeline verifies batch
//! N+1, so the rows of N may not be in ClickHouse yet when N+1 looks up stored rows: the
//! pipeline keeps the rows it produced last ([`Pipeline::process`]) and answers look-ups from
//! them as ClickHouse would once they are stored.

use crate::consumer::RawMessage;
use crate::heads::Heads;
use crate::metrics::Metrics;
use crate::publish::HeadTopic;
use crate::resolve::{needs_lookup, resolve, Action, Around, Known};
use crate::store::{with_retry, Stopped, Store};
use crate::watchdog::CaughtUp;
use crate::witness::{Witness, Witnessed};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use verdict_proto::verify::EventStatus;
use verdict_proto::{BreakKind, ChainVerifier, Finding, SignedEvent, TrustedKeys};
use verdict_schema::{ChainHeadRow, EventRow, FindingRow, SourcePosition};

/// The rows of one batch and the offsets to commit after storing them.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<EventRow>,
    pub findings: Vec<FindingRow>,
    pub heads: Vec<ChainHeadRow>,
    /// Partition → next offset to read.
    pub commit: BTreeMap<i32, i64>,
    /// Heads the witness signed and chunk roots it completed.
    pub witnessed: Witnessed,
}

pub struct Pipeline {
    keys: TrustedKeys,
    verifier: ChainVerifier,
    heads: Heads,
    /// Per chain, the highest seq stored *above* the restored head: events up to it may
    /// be stored already (a crash between the event and head inserts), so they are looked up
    /// like repeats and a redelivery is skipped instead of written twice.
    stored_above_head: HashMap<String, u64>,
    /// The rows of the last processed batch, which may still be on their way to ClickHouse.
    unstored: HashMap<Key, Known>,
    store: Store,
    metrics: Metrics,
    grace: Duration,
    witness: Option<Witness>,
    /// Where witnessed heads are published, once stored.
    head_topic: Option<HeadTopic>,
}

impl Batch {
    /// Nothing to store or commit (an idle poll with no head due for signing).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.findings.is_empty()
            && self.commit.is_empty()
            && self.witnessed.heads.is_empty()
            && self.witnessed.chunks.is_empty()
    }
}

type Key = (String, u64);

impl Pipeline {
    pub fn new(keys: TrustedKeys, store: Store, metrics: Metrics, grace: Duration) -> Self {
        Self {
            verifier: ChainVerifier::new(keys.clone()),
            keys,
            heads: Heads::default(),
            stored_above_head: HashMap::new(),
            unstored: HashMap::new(),
            store,
            metrics,
            grace,
            witness: None,
            head_topic: None,
        }
    }

    /// Signs verified heads with `witness` and publishes them on `topic`.
    pub fn with_witness(mut self, witness: Witness, topic: HeadTopic) -> Self {
        self.witness = Some(witness);
        self.head_topic = Some(topic);
        self
    }

    /// Forgets all chain state and restores it from the persisted heads (on start and on every
    /// partition assignment, when another auditor may have advanced a chain).
    pub async fn reload(&mut self, shutdown: &CancellationToken) -> Result<(), Stopped> {
        let (store, metrics) = (&self.store, &self.metrics);
        let (verifier, heads, highest) =
            with_retry(metrics, shutdown, "restoring chain heads", || async {
                let mut verifier = ChainVerifier::new(self.keys.clone());
                let mut heads = Heads::default();
                heads.restore(store, &mut verifier).await?;
                let highest = store.highest_stored_seqs().await?;
                Ok((verifier, heads, highest))
            })
            .await?;
        self.stored_above_head = highest
            .into_iter()
            .filter(|(chain_id, seq)| verifier.head(chain_id).is_none_or(|h| h.seq < *seq))
            .collect();
        tracing::info!(
            chains = verifier.chain_ids().count(),
            stored_above_head = self.stored_above_head.len(),
            "chain heads restored"
        );
        if let Some(witness) = &mut self.witness {
            witness.reset(verifier.chain_ids().map(str::to_owned));
        }
        (self.verifier, self.heads) = (verifier, heads);
        // The loop finished storing before reloading: ClickHouse has those rows now.
        self.unstored.clear();
        Ok(())
    }

    /// `caught_up`: where this auditor has read the topic to its end, the only partitions whose
    /// chains it may call silent.
    pub async fn process(
        &mut self,
        messages: &[RawMessage],
        caught_up: &CaughtUp,
        shutdown: &CancellationToken,
    ) -> Result<Batch, Stopped> {
        let now_nanos = verdict_proto::now_unix_nanos();
        let now_secs = u32::try_from(now_nanos / 1_000_000_000).unwrap_or(u32::MAX);
        let finding_row = |finding: Finding, message: &RawMessage| FindingRow {
            kind: finding.kind.as_str().into(),
            chain_id: finding.chain_id,
            seq: finding.seq,
            last_seq: finding.last_seq,
            detail: finding.detail,
            detected_at: now_secs,
            detected_unix_nanos: now_nanos,
            evidence: message.payload.clone(),
            evidence_sha256: crate::sha256_hex(&message.payload),
            kafka_partition: message.source.partition,
            kafka_offset: message.source.offset,
        };
        let mut batch = Batch::default();
        self.rebuild_witness(&mut batch.witnessed).await;
        let mut events = Vec::with_capacity(messages.len());
        let mut received = Vec::with_capacity(messages.len());
        for message in messages {
            let next = batch.commit.entry(message.source.partition).or_default();
            *next = (*next).max(message.source.offset + 1);
            match SignedEvent::decode(&message.payload) {
                Ok(event) => {
                    events.push(event);
                    received.push(message);
                }
                Err(error) => {
                    let chain_id = message
                        .key
                        .as_deref()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .unwrap_or_default();
                    batch.findings.push(finding_row(
                        malformed(chain_id, 0, error.to_string()),
                        message,
                    ));
                }
            }
        }
        let verdicts = self.verifier.verify_batch(&events);
        let mut known = self.lookup(&events, &verdicts, shutdown).await?;
        let mut produced = HashMap::new();
        let mut touched = BTreeSet::new();
        for ((event, verdict), message) in events.iter().zip(verdicts).zip(received) {
            let _span = tracing::debug_span!("event", chain_id = %event.chain_id, seq = event.seq)
                .entered();
            self.heads.heard(&event.chain_id, message.source.partition);
            let around = Around {
                at: known.get(&(event.chain_id.clone(), event.seq)),
                before: known.get(&(event.chain_id.clone(), event.seq - 1)),
                after: known.get(&(event.chain_id.clone(), event.seq + 1)),
            };
            // Whether the verifier placed it as its chain's next event (in this batch's order).
            let placed_as = verdict.status;
            let placed = matches!(placed_as, EventStatus::Verified | EventStatus::AfterBreak);
            let finding = match resolve(event, verdict, message.source, around) {
                Action::Skip => {
                    self.metrics
                        .verified
                        .get_or_create(&[("status", "redelivered")])
                        .inc();
                    // A row stored before a crash, above the restored head: the chain head and
                    // the witness still move past it, or they wait for the chain's next event.
                    if placed {
                        if let Ok(row) =
                            EventRow::from_event(event, placed_as, message.source, now_secs)
                        {
                            self.advance(
                                event,
                                &row,
                                placed_as,
                                &mut batch.witnessed,
                                &mut touched,
                            );
                        }
                    }
                    None
                }
                Action::FindingOnly(finding) => Some(finding),
                Action::Store { status, finding } => {
                    self.metrics
                        .verified
                        .get_or_create(&[("status", status.as_str())])
                        .inc();
                    match EventRow::from_event(event, status, message.source, now_secs) {
                        Ok(mut row) => {
                            row.envelope = message.payload.clone();
                            let key = (event.chain_id.clone(), event.seq);
                            let stored = known_row(&row, message.source);
                            known.insert(key.clone(), stored.clone());
                            produced.insert(key, stored);
                            if placed {
                                self.advance(
                                    event,
                                    &row,
                                    status,
                                    &mut batch.witnessed,
                                    &mut touched,
                                );
                            }
                            batch
                                .findings
                                .extend(crate::tool_findings::of(&row, (now_secs, now_nanos)));
                            batch.events.push(row);
                            finding
                        }
                        Err(error) => {
                            Some(malformed(&event.chain_id, event.seq, error.to_string()))
                        }
                    }
                }
            };
            let witnessed = std::mem::take(&mut batch.witnessed.findings);
            for finding in finding.into_iter().chain(witnessed) {
                let finding = self.cite_witness(finding);
                tracing::warn!(kind = finding.kind.as_str(), detail = %finding.detail, "finding");
                batch.findings.push(finding_row(finding, message));
            }
        }
        batch.findings.extend(
            self.heads
                .silent(self.grace, caught_up, now_secs, now_nanos),
        );
        if let Some(witness) = &mut self.witness {
            witness.sign_due(&mut batch.witnessed);
        }
        for finding in &batch.findings {
            self.metrics
                .findings
                .get_or_create(&[("kind", kind_label(&finding.kind))])
                .inc();
        }
        batch.heads = self.heads.rows(touched.iter().map(String::as_str));
        self.unstored = produced;
        Ok(batch)
    }

    /// Moves the witness's tree to `event`, placed next in its chain, and the chain head row
    /// when it is the chain's head after the whole batch (the row is written once per batch).
    fn advance(
        &mut self,
        event: &SignedEvent,
        row: &EventRow,
        status: EventStatus,
        witnessed: &mut Witnessed,
        touched: &mut BTreeSet<String>,
    ) {
        if let Some(witness) = &mut self.witness {
            witness.advance(event, status, row.kind == "checkpoint", witnessed);
        }
        let head = self.verifier.head(&event.chain_id);
        if head.is_some_and(|h| h.seq == event.seq && h.hash == event.hash) {
            self.heads.advance(event, row);
            touched.insert(event.chain_id.clone());
        }
    }

    /// Rebuilds the witness's trees of chains it lost track of, from stored rows (skipped for
    /// this batch if ClickHouse is down: the chain is simply not witnessed yet).
    async fn rebuild_witness(&mut self, out: &mut Witnessed) {
        let Some(witness) = &mut self.witness else {
            return;
        };
        let verifier = &self.verifier;
        let head = |chain_id: &str| verifier.head(chain_id).map(|h| h.seq);
        if let Err(error) = witness.rebuild(&self.store, head, out).await {
            tracing::warn!(%error, "witness: rebuilding chain trees failed; retrying with the next batch");
        }
    }

    /// A fork below a head the witness signed says so: the witnessed head is the evidence.
    fn cite_witness(&self, mut finding: Finding) -> Finding {
        if let Some(cited) = self.witness.as_ref().and_then(|w| w.contradicted(&finding)) {
            finding.detail.push_str(&cited);
        }
        finding
    }

    /// Stored rows around every event that is not simply its chain's next one.
    async fn lookup(
        &self,
        events: &[SignedEvent],
        verdicts: &[verdict_proto::Verdict],
        shutdown: &CancellationToken,
    ) -> Result<HashMap<Key, Known>, Stopped> {
        let mut ranges: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (event, verdict) in events.iter().zip(verdicts) {
            let maybe_stored = self
                .stored_above_head
                .get(&event.chain_id)
                .is_some_and(|&highest| event.seq <= highest);
            if maybe_stored || needs_lookup(verdict) {
                let range = ranges
                    .entry(&event.chain_id)
                    .or_insert((event.seq, event.seq));
                *range = (range.0.min(event.seq), range.1.max(event.seq));
            }
        }
        let mut known = HashMap::new();
        for (&chain_id, &(first, last)) in &ranges {
            let rows = with_retry(&self.metrics, shutdown, "reading stored events", || {
                self.store
                    .events_in(chain_id, first.saturating_sub(1), last + 1)
            })
            .await?;
            for row in rows {
                let source = SourcePosition {
                    partition: row.kafka_partition,
                    offset: row.kafka_offset,
                };
                known.insert(
                    (chain_id.to_owned(), row.seq),
                    Known {
                        hash: row.hash,
                        prev_hash: row.prev_hash,
                        source,
                    },
                );
            }
        }
        // What the previous batch stored or is storing, as ClickHouse will return it.
        for ((chain_id, seq), row) in &self.unstored {
            let in_range = ranges
                .get(chain_id.as_str())
                .is_some_and(|&(first, last)| (first.saturating_sub(1)..=last + 1).contains(seq));
            if in_range {
                known.insert((chain_id.clone(), *seq), row.clone());
            }
        }
        Ok(known)
    }

    /// What stores the rows this pipeline produces.
    pub fn writer(&self) -> BatchWriter {
        BatchWriter {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            head_topic: self.head_topic.clone(),
        }
    }
}

/// Stores a batch's rows, on a task of its own while the pipeline verifies the next batch.
#[derive(Clone)]
pub struct BatchWriter {
    store: Store,
    metrics: Metrics,
    head_topic: Option<HeadTopic>,
}

impl BatchWriter {
    /// Writes the batch's findings and events, retrying while ClickHouse is down.
    pub async fn store_rows(
        &self,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        let started = Instant::now();
        let store = &self.store;
        // Three independent inserts in one round trip's time; a failure retries all three, and
        // every table keeps one row per key when read (FINAL), so a repeat costs nothing.
        with_retry(&self.metrics, shutdown, "storing a batch", || async {
            tokio::try_join!(
                store.insert_findings(&batch.findings),
                store.insert_events(&batch.events),
                store.insert_chunks(&batch.witnessed.chunks),
            )
            .map(|_| ())
        })
        .await?;
        self.metrics
            .insert_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.stored.inc_by(batch.events.len() as u64);
        Ok(())
    }

    /// Writes the batch's chain heads and witnessed heads, after its rows (a persisted head
    /// never points past stored events, nor a witnessed head past stored chunk roots), then
    /// publishes the witnessed heads: a published head is always stored.
    pub async fn store_heads(
        &self,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        let store = &self.store;
        let witnessed: Vec<_> = batch
            .witnessed
            .heads
            .iter()
            .map(|(_, row)| row.clone())
            .collect();
        with_retry(&self.metrics, shutdown, "storing chain heads", || async {
            tokio::try_join!(
                store.insert_heads(&batch.heads),
                store.insert_witnessed(&witnessed),
            )
            .map(|_| ())
        })
        .await?;
        self.metrics.fleet.heads(&batch.heads);
        self.metrics.fleet.witnessed(witnessed.iter());
        self.publish_witnessed(batch, shutdown).await
    }

    async fn publish_witnessed(
        &self,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        let Some(topic) = &self.head_topic else {
            return Ok(());
        };
        if batch.witnessed.heads.is_empty() {
            return Ok(());
        }
        while let Err(error) = topic.publish(&batch.witnessed.heads).await {
            tracing::warn!(%error, topic = topic.topic(), "publishing witnessed heads failed; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Stopped),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        Ok(())
    }
}

fn malformed(chain_id: &str, seq: u64, detail: String) -> Finding {
    Finding {
        kind: BreakKind::Malformed,
        chain_id: chain_id.into(),
        seq,
        last_seq: seq,
        detail,
    }
}

fn known_row(row: &EventRow, source: SourcePosition) -> Known {
    Known {
        hash: row.hash.clone(),
        prev_hash: row.prev_hash.clone(),
        source,
    }
}

/// The static label for a stored finding kind.
fn kind_label(kind: &str) -> &'static str {
    BreakKind::ALL
        .into_iter()
        .map(BreakKind::as_str)
        .find(|name| *name == kind)
        .unwrap_or("other")
}
