//! Streaming a policy replay: the export's chain reader walks the matching decisions chain by
//! chain in seq order, and a blocking worker verifies each batch of envelopes with the trusted
//! keys and re-decides the verified ones ([`crate::replay`]), reporting progress per batch, then
//! the changes and the summary.
//!
//! Reading (ClickHouse) and replaying (signature checks and decisions: CPU) overlap on two cores;
//! the channels between them are bounded, so a slow client slows the reads. A client that goes
//! away stops the worker, whose dropped receiver stops the reader.

use crate::export_stream::read_chains;
use crate::filter::Conditions;
use crate::replay::Replay;
use crate::store::Store;
use tokio::sync::mpsc;
use tonic::Status;
use verdict_proto::pb::{self, replay_message::Kind};
use verdict_proto::verify::EventStatus;
use verdict_proto::{ChainVerifier, SignedEvent, TrustedKeys};
use verdict_schema::EventRow;

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
        let (batches_tx, mut batches) = mpsc::channel(2);
        tokio::spawn(read_chains(self.store, self.chains, self.cond, batches_tx));
        let (keys, mut replay) = (self.keys, self.replay);
        let worker = tokio::task::spawn_blocking(move || {
            let mut verifier = ChainVerifier::new(keys);
            while let Some(batch) = batches.blocking_recv() {
                let rows = match batch {
                    Ok(rows) => rows,
                    Err(e) => return fail(&tx, crate::api::QueryError::from(e).into()),
                };
                replay_batch(&mut verifier, &mut replay, &rows);
                if tx
                    .blocking_send(message(Kind::Progress(replay.calls())))
                    .is_err()
                {
                    return replay.calls();
                }
            }
            let calls = replay.calls();
            let (changes, summary) = replay.finish();
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

/// Verifies the rows' envelopes (batched) and replays the trusted ones, in order.
fn replay_batch(verifier: &mut ChainVerifier, replay: &mut Replay, rows: &[EventRow]) {
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        match SignedEvent::decode(&row.envelope) {
            Ok(event) => events.push(event),
            Err(_) => replay.untrusted(),
        }
    }
    for (event, verdict) in events.iter().zip(verifier.verify_batch(&events)) {
        match verdict.status {
            EventStatus::Untrusted => replay.untrusted(),
            _ => replay.add(event),
        }
    }
}

fn message(kind: Kind) -> ReplayResult {
    Ok(pb::ReplayMessage { kind: Some(kind) })
}

fn fail(tx: &mpsc::Sender<ReplayResult>, status: Status) -> u64 {
    let _ = tx.blocking_send(Err(status));
    0
}
