//! Streaming a policy replay: the export's chain reader walks the matching decisions chain by
//! chain in seq order, and a blocking worker verifies each batch of envelopes with the trusted
//! keys and re-decides the verified ones ([`crate::replay`]), reporting progress per batch, then
//! the changes and the summary. Each chain's `PolicyLoaded` events within its range are read
//! (and verified) first: the gateway starts among them reset the replay's rate-limit windows.
//!
//! Reading (ClickHouse) and replaying (signature checks and decisions: CPU) overlap on two cores;
//! the channels between them are bounded, so a slow client slows the reads. A client that goes
//! away stops the worker, whose dropped receiver stops the reader. The summary says where the
//! worker's time went (waiting for rows, verifying, deciding): a slow store or a slow engine.

use crate::export_stream::read_chains;
use crate::filter::Conditions;
use crate::replay::Replay;
use crate::store::{Store, StoreError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::Status;
use verdict_proto::pb::{self, replay_message::Kind};
use verdict_proto::verify::EventStatus;
use verdict_proto::{ChainVerifier, SignedEvent, TrustedKeys};
use verdict_schema::{EventRow, POLICY_LOADED};

pub type ReplayResult = Result<pb::ReplayMessage, Status>;

/// One replay request, validated: the chains to walk, the conditions, the keys to verify with
/// and the replay to feed.
pub struct ReplayStream {
    pub store: Store,
    pub keys: TrustedKeys,
    pub chains: Vec<(String, u64, u64)>,
    pub cond: Conditions,
    pub replay: Replay,
}

impl ReplayStream {
    /// Replays every matching call into `tx`; returns the number of calls examined.
    pub async fn run(self, tx: mpsc::Sender<ReplayResult>) -> u64 {
        let loads = match policy_loads(&self.store, &self.chains).await {
            Ok(loads) => loads,
            Err(e) => {
                let _ = tx.send(Err(crate::api::QueryError::from(e).into())).await;
                return 0;
            }
        };
        let (batches_tx, mut batches) = mpsc::channel(2);
        tokio::spawn(read_chains(self.store, self.chains, self.cond, batches_tx));
        let (keys, mut replay) = (self.keys, self.replay);
        let worker = tokio::task::spawn_blocking(move || {
            let loads = loads.iter().map(Vec::as_slice);
            for event in verified(&mut ChainVerifier::new(keys.clone()), &mut replay, loads) {
                replay.policy_loaded(&event);
            }
            let mut verifier = ChainVerifier::new(keys);
            let mut stages = Stages::default();
            while let Some(batch) = stages.time(Stage::Read, || batches.blocking_recv()) {
                let rows = match batch {
                    Ok(rows) => rows,
                    Err(e) => return fail(&tx, crate::api::QueryError::from(e).into()),
                };
                replay_batch(&mut verifier, &mut replay, &rows, &mut stages);
                if tx
                    .blocking_send(message(Kind::Progress(replay.calls())))
                    .is_err()
                {
                    return replay.calls();
                }
            }
            let calls = replay.calls();
            let (changes, mut summary) = replay.finish();
            stages.report(&mut summary);
            for change in changes {
                if tx.blocking_send(message(Kind::Change(change))).is_err() {
                    return calls;
                }
            }
            let _ = tx.blocking_send(message(Kind::Summary(summary)));
            calls
        });
        worker.await.unwrap_or(0)
    }
}

/// The envelopes of every `PolicyLoaded` event within the chains' ranges.
async fn policy_loads(
    store: &Store,
    chains: &[(String, u64, u64)],
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut loads = Vec::new();
    for (chain, first, last) in chains {
        let range = (*first, *last);
        loads.extend(store.kind_envelopes(chain, POLICY_LOADED, range).await?);
    }
    Ok(loads)
}

/// Verifies the rows' envelopes (batched) and replays the trusted ones, in order.
fn replay_batch(
    verifier: &mut ChainVerifier,
    replay: &mut Replay,
    rows: &[EventRow],
    stages: &mut Stages,
) {
    let envelopes = rows.iter().map(|row| row.envelope.as_slice());
    let events = stages.time(Stage::Verify, || verified(verifier, replay, envelopes));
    stages.time(Stage::Decide, || {
        for event in &events {
            replay.add(event);
        }
    });
}

/// Where a replay's worker spends its time.
#[derive(Clone, Copy)]
enum Stage {
    /// Waiting for the next batch of rows from ClickHouse.
    Read,
    /// Decoding and verifying envelopes.
    Verify,
    /// Decoding bodies and re-deciding the calls.
    Decide,
}

#[derive(Default)]
struct Stages([Duration; 3]);

impl Stages {
    fn time<T>(&mut self, stage: Stage, work: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let result = work();
        self.0[stage as usize] += start.elapsed();
        result
    }

    fn report(&self, summary: &mut pb::ReplaySummary) {
        [
            summary.read_wait_secs,
            summary.verify_secs,
            summary.decide_secs,
        ] = self.0.map(|d| d.as_secs_f64());
        tracing::info!(
            calls = summary.calls,
            read_wait_secs = summary.read_wait_secs,
            verify_secs = summary.verify_secs,
            decide_secs = summary.decide_secs,
            "replay stages"
        );
    }
}

/// The envelopes that decode and verify with the trusted keys, in order; the others are counted
/// as untrusted.
fn verified<'a>(
    verifier: &mut ChainVerifier,
    replay: &mut Replay,
    envelopes: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Vec<SignedEvent> {
    let mut events = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        match SignedEvent::decode(envelope) {
            Ok(event) => events.push(event),
            Err(_) => replay.untrusted(),
        }
    }
    let statuses = verifier.verify_batch(&events);
    events
        .into_iter()
        .zip(statuses)
        .filter_map(|(event, verdict)| match verdict.status {
            EventStatus::Untrusted => {
                replay.untrusted();
                None
            }
            _ => Some(event),
        })
        .collect()
}

fn message(kind: Kind) -> ReplayResult {
    Ok(pb::ReplayMessage { kind: Some(kind) })
}

fn fail(tx: &mpsc::Sender<ReplayResult>, status: Status) -> u64 {
    let _ = tx.blocking_send(Err(status));
    0
}
