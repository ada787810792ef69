//! Chain heads: persisted after every batch and restored on start and on every partition
//! assignment, so a restarted auditor (or the one that takes over a partition) continues each
//! chain exactly where the stored rows end.
//!
//! A head row's `version` is its seq, so of two auditors racing during a rebalance the one that
//! got further wins in `chain_heads FINAL`. Besides the head, this module tracks what the
//! silent-chain check needs: the interval the last checkpoint promised and when the chain was
//! last heard from (local arrival time, so a backlog being caught up is not "silent") and on which
//! partition. A chain whose newest event is a `shutdown` checkpoint is `ended` and never silent,
//! and a chain is judged only where this auditor has read the topic to its end
//! ([`CaughtUp`]): an auditor that stopped reading is no witness of silence.

use crate::store::{Store, StoreError};
use crate::watchdog::CaughtUp;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use verdict_proto::pb::event_body::Kind;
use verdict_proto::verify::ChainHead;
use verdict_proto::{BreakKind, ChainVerifier, SignedEvent};
use verdict_schema::{ChainHeadRow, EventRow, FindingRow};

#[derive(Debug, Clone)]
struct HeadInfo {
    row: ChainHeadRow,
    interval_secs: Option<u32>,
    last_heard: Instant,
    /// Where the chain was last heard (`None`: not since its head was restored).
    partition: Option<i32>,
    silent_reported_at: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Heads {
    chains: HashMap<String, HeadInfo>,
}

impl Heads {
    /// Replaces `verifier`'s state with the persisted heads (see [`ChainVerifier::restore`]).
    pub async fn restore(
        &mut self,
        store: &Store,
        verifier: &mut ChainVerifier,
    ) -> Result<(), StoreError> {
        self.chains.clear();
        restore_rotations(store, verifier).await?;
        for row in store.heads().await? {
            let Some(hash) = parse_hash(&row.hash) else {
                tracing::warn!(chain_id = %row.chain_id, "stored head has an invalid hash; chain restarts");
                continue;
            };
            verifier.restore(&row.chain_id, ChainHead { seq: row.seq, hash });
            let interval_secs = match row.ended {
                0 => store
                    .last_checkpoint(&row.chain_id)
                    .await?
                    .and_then(|bytes| SignedEvent::decode(&bytes).ok())
                    .and_then(|event| checkpoint_interval(&event)),
                _ => None,
            };
            tracing::debug!(chain_id = %row.chain_id, seq = row.seq, "restored chain head");
            self.chains.insert(
                row.chain_id.clone(),
                HeadInfo {
                    row,
                    interval_secs,
                    last_heard: Instant::now(),
                    partition: None,
                    silent_reported_at: None,
                },
            );
        }
        Ok(())
    }

    /// Notes that `event`, stored as `row`, is now the chain's head.
    pub fn advance(&mut self, event: &SignedEvent, row: &EventRow) {
        let info = self
            .chains
            .entry(event.chain_id.clone())
            .or_insert_with(|| HeadInfo {
                row: ChainHeadRow {
                    chain_id: event.chain_id.clone(),
                    ..ChainHeadRow::default()
                },
                interval_secs: None,
                last_heard: Instant::now(),
                partition: None,
                silent_reported_at: None,
            });
        info.partition = Some(row.kafka_partition);
        info.row.seq = event.seq;
        info.row.hash = row.hash.clone();
        info.row.key_id = event.key_id.clone();
        info.row.last_event_unix_nanos = row.time_unix_nanos;
        info.row.updated_at = row.ingested_at;
        info.row.version = event.seq;
        info.row.ended = 0;
        if row.kind == "checkpoint" {
            info.row.last_checkpoint_unix_nanos = row.time_unix_nanos;
            info.interval_secs = checkpoint_interval(event);
            info.row.ended = u8::from(row.checkpoint_reason == "shutdown");
        }
    }

    /// Notes that something arrived on the chain from `partition` (resets the silence timer).
    pub fn heard(&mut self, chain_id: &str, partition: i32) {
        if let Some(info) = self.chains.get_mut(chain_id) {
            info.last_heard = Instant::now();
            info.partition = Some(partition);
        }
    }

    /// The rows to persist for `chain_ids`.
    pub fn rows<'a>(&self, chain_ids: impl Iterator<Item = &'a str>) -> Vec<ChainHeadRow> {
        chain_ids
            .filter_map(|id| self.chains.get(id))
            .map(|info| info.row.clone())
            .collect()
    }

    /// One `silent_chain` finding per silence: a chain whose last checkpoint promised an
    /// interval, not ended, not heard from for that interval plus `grace`, on a partition
    /// `caught_up` covers.
    pub fn silent(
        &mut self,
        grace: Duration,
        caught_up: &CaughtUp,
        now_secs: u32,
        now_nanos: i64,
    ) -> Vec<FindingRow> {
        let mut findings = Vec::new();
        for (chain_id, info) in &mut self.chains {
            let Some(interval) = info.interval_secs else {
                continue;
            };
            let quiet = info.last_heard.elapsed();
            if info.row.ended != 0
                || quiet < Duration::from_secs(interval.into()) + grace
                || !caught_up.covers(info.partition)
                || info.silent_reported_at == Some(info.row.seq)
            {
                continue;
            }
            info.silent_reported_at = Some(info.row.seq);
            tracing::warn!(%chain_id, seq = info.row.seq, "chain silent past its checkpoint interval");
            findings.push(FindingRow {
                kind: BreakKind::SilentChain.as_str().into(),
                chain_id: chain_id.clone(),
                seq: info.row.seq,
                last_seq: info.row.seq,
                detail: format!(
                    "no event for {} s after seq {}; the last checkpoint promised one every {interval} s",
                    quiet.as_secs(),
                    info.row.seq
                ),
                detected_at: now_secs,
                detected_unix_nanos: now_nanos,
                evidence_sha256: crate::sha256_hex(&[]),
                kafka_partition: -1,
                kafka_offset: -1,
                ..FindingRow::default()
            });
        }
        findings
    }
}

fn parse_hash(text: &str) -> Option<verdict_proto::Hash> {
    hex::decode(text).ok()?.try_into().ok()
}

fn checkpoint_interval(event: &SignedEvent) -> Option<u32> {
    match event.decode_body().ok()?.kind? {
        Kind::Checkpoint(c) if c.interval_secs > 0 => Some(c.interval_secs),
        _ => None,
    }
}

/// Re-learns every stored key rotation (re-verified, in seq order), so that a chain resumed from
/// its stored head is checked against the key that signs it now, and its retired keys stay
/// retired.
async fn restore_rotations(store: &Store, verifier: &mut ChainVerifier) -> Result<(), StoreError> {
    for envelope in store.key_rotations().await? {
        let learned = SignedEvent::decode(&envelope)
            .map_err(|e| e.to_string())
            .and_then(|event| verifier.restore_rotation(&event));
        if let Err(error) = learned {
            tracing::warn!(%error, "a stored key rotation does not verify; ignored");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watchdog::Lags;
    use prost::Message;
    use std::collections::{BTreeMap, BTreeSet};
    use verdict_proto::pb;
    use verdict_proto::verify::EventStatus;
    use verdict_proto::{ChainWriter, SecretKey};
    use verdict_schema::SourcePosition;

    fn checkpoint(reason: &str, interval_secs: u32) -> Vec<u8> {
        pb::EventBody {
            time_unix_nanos: 1,
            kind: Some(Kind::Checkpoint(pb::Checkpoint {
                reason: reason.into(),
                interval_secs,
                ..Default::default()
            })),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_quiet_chain_is_reported_once_and_an_ended_one_never() {
        let mut heads = Heads::default();
        for (chain, reason) in [("gw", "periodic"), ("gw-ended", "shutdown")] {
            let event = ChainWriter::new(chain, SecretKey::from_seed(&[2; 32]))
                .append(checkpoint(reason, 1));
            let source = SourcePosition {
                partition: 0,
                offset: 0,
            };
            let row = EventRow::from_event(&event, EventStatus::Verified, source, 0).unwrap();
            heads.advance(&event, &row);
        }
        std::thread::sleep(Duration::from_millis(1100));
        let lags = Lags::default();
        lags.set(BTreeMap::from([(0, 0), (1, 0)]));
        // An auditor that does not hold partition 0, or has not read it to the end, is no witness.
        assert!(heads
            .silent(Duration::ZERO, &lags.caught_up(&BTreeSet::from([1])), 0, 0)
            .is_empty());
        lags.set(BTreeMap::from([(0, 3), (1, 0)]));
        assert!(heads
            .silent(
                Duration::ZERO,
                &lags.caught_up(&BTreeSet::from([0, 1])),
                0,
                0
            )
            .is_empty());
        lags.set(BTreeMap::from([(0, 0), (1, 0)]));
        let caught_up = lags.caught_up(&BTreeSet::from([0]));
        let found = heads.silent(Duration::ZERO, &caught_up, 0, 0);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].chain_id.as_str(), found[0].seq), ("gw", 1));
        assert!(heads.silent(Duration::ZERO, &caught_up, 0, 0).is_empty());
        assert_eq!(heads.rows(["gw-ended"].into_iter())[0].ended, 1);
    }
}
