//! `Follow`: the events matching a filter as the auditor stores them, then live, each message
//! carrying the cursor to resume after it ([`Positions`]: per-chain seqs, see
//! `follow_cursor`).
//!
//! One task per follower walks every chain from its position up to where the chain is stored
//! without a hole ([`Store::stored_through`]), sends the matching events in seq order, and
//! sleeps a poll interval when a round found nothing new. The client never polls: the stream
//! stays open. Back-pressure is the bounded channel in front of the gRPC stream: a slow client
//! slows the reads. A client more than `follow_max_lag` stored events behind while the channel
//! is full is disconnected with `RESOURCE_EXHAUSTED` naming how to resume. ClickHouse errors do
//! not end the stream: the round is retried after a pause (an outage only delays delivery).
//!
//! A follower that asks for findings also gets, each round, the findings stored after its
//! findings positions (`follow_findings`), in the same stream and cursor.

use crate::config::Limits;
use crate::export_stream::write_line;
use crate::filter::Conditions;
use crate::follow_cursor::Positions;
use crate::follow_findings;
use crate::store::{Store, StoreError, BATCH_ROWS};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;
use verdict_proto::pb;

pub type FollowResult = Result<pb::FollowMessage, Status>;

/// Pause after a failed ClickHouse read before the round is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long a disconnect status may wait for room in the client's channel.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a follower's task stops.
enum Stop {
    /// The client went away.
    Gone,
    /// The client is told why and how to resume.
    Disconnect(Status),
}

/// One follower: what it asked for and where it is.
pub struct Follow {
    pub store: Store,
    pub cond: Conditions,
    /// Events, findings or both.
    pub items: pb::FollowItems,
    /// The findings' conditions (the filter's chains).
    pub finding_cond: Conditions,
    pub format: pb::ExportFormat,
    pub positions: Positions,
    pub limits: Limits,
}

impl Follow {
    /// Streams until the client goes away or falls too far behind.
    pub async fn run(mut self, tx: mpsc::Sender<FollowResult>) {
        if let Err(Stop::Disconnect(status)) = self.follow(&tx).await {
            tracing::warn!(status = %status.message(), "follower disconnected");
            let _ = tx.send_timeout(Err(status), FAREWELL_TIMEOUT).await;
        }
    }

    async fn follow(&mut self, tx: &mpsc::Sender<FollowResult>) -> Result<(), Stop> {
        self.send(tx, position_only(&self.positions), &[]).await?;
        let poll = Duration::from_millis(self.limits.follow_poll_millis);
        loop {
            match self.round(tx).await {
                Ok(true) => {}
                Ok(false) => tokio::time::sleep(poll).await,
                Err(ReadOrStop::Stop(stop)) => return Err(stop),
                Err(ReadOrStop::Read(e)) => {
                    tracing::warn!(error = %e, "follow: the audit store did not answer; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
            if tx.is_closed() {
                return Err(Stop::Gone);
            }
        }
    }

    /// One pass over every chain and the findings; true when it moved any position.
    async fn round(&mut self, tx: &mpsc::Sender<FollowResult>) -> Result<bool, ReadOrStop> {
        let mut moved = false;
        if self.items != pb::FollowItems::Findings {
            let heads = self.store.stored_heads().await?;
            for (chain, head) in &heads {
                moved |= self.chain_step(tx, chain, *head, &heads).await?;
            }
        }
        if self.items != pb::FollowItems::Events {
            moved |= self.findings_step(tx).await?;
        }
        Ok(moved)
    }

    /// Delivers the next findings after the follower's findings positions; true when any.
    async fn findings_step(&mut self, tx: &mpsc::Sender<FollowResult>) -> Result<bool, ReadOrStop> {
        let rows = self
            .store
            .findings_after(&self.finding_cond, &self.positions)
            .await?;
        for row in &rows {
            let message = follow_findings::message(row, self.format, &mut self.positions);
            self.send(tx, message, &[]).await?;
        }
        Ok(!rows.is_empty())
    }

    /// Delivers the next window of `chain` (up to its hole-free end); true when it moved.
    async fn chain_step(
        &mut self,
        tx: &mpsc::Sender<FollowResult>,
        chain: &str,
        head: u64,
        heads: &[(String, u64)],
    ) -> Result<bool, ReadOrStop> {
        let after = self.positions.get(chain);
        if head <= after {
            return Ok(false);
        }
        let to = head.min(after.saturating_add(BATCH_ROWS));
        let grace = i64::from(self.limits.follow_gap_grace_secs);
        let end = self.store.stored_through(chain, (after, to), grace).await?;
        if end == after {
            return Ok(false);
        }
        let rows = self
            .store
            .chain_batch(chain, &self.cond, (after + 1, end))
            .await?;
        let last_seq = rows.last().map(|r| r.seq);
        for row in rows {
            self.positions.advance(chain, row.seq);
            let (chain_id, seq) = (row.chain_id.clone(), row.seq);
            let mut data = Vec::new();
            write_line(row, self.format, &mut data);
            let message = pb::FollowMessage {
                data,
                chain_id,
                seq,
                cursor: self.positions.encode(),
                finding: false,
                behind: self.positions.behind(heads),
            };
            self.send(tx, message, heads).await?;
        }
        if last_seq != Some(end) {
            self.positions.advance(chain, end);
            self.send(tx, position_only(&self.positions), heads).await?;
        }
        Ok(true)
    }

    /// Sends one message, waiting for room; while it waits, a client too far behind the stored
    /// `heads` is disconnected.
    async fn send(
        &self,
        tx: &mpsc::Sender<FollowResult>,
        message: pb::FollowMessage,
        heads: &[(String, u64)],
    ) -> Result<(), Stop> {
        let poll = Duration::from_millis(self.limits.follow_poll_millis.max(10));
        let mut heads = heads.to_vec();
        loop {
            match tokio::time::timeout(poll, tx.reserve()).await {
                Ok(Ok(permit)) => {
                    permit.send(Ok(message));
                    return Ok(());
                }
                Ok(Err(_)) => return Err(Stop::Gone),
                Err(_) => {
                    if let Ok(now) = self.store.stored_heads().await {
                        heads = now;
                    }
                    self.check_lag(&heads)?;
                }
            }
        }
    }

    fn check_lag(&self, heads: &[(String, u64)]) -> Result<(), Stop> {
        let behind = self.positions.behind(heads);
        if behind <= self.limits.follow_max_lag {
            return Ok(());
        }
        Err(Stop::Disconnect(Status::resource_exhausted(format!(
            "follower is {behind} stored events behind (limit {}): reconnect with the cursor \
             of the last message received to resume where it stopped",
            self.limits.follow_max_lag
        ))))
    }
}

fn position_only(positions: &Positions) -> pb::FollowMessage {
    pb::FollowMessage {
        cursor: positions.encode(),
        ..Default::default()
    }
}

/// A round ends on a failed read (retried) or a stop.
enum ReadOrStop {
    Read(StoreError),
    Stop(Stop),
}

impl From<StoreError> for ReadOrStop {
    fn from(e: StoreError) -> Self {
        Self::Read(e)
    }
}

impl From<Stop> for ReadOrStop {
    fn from(stop: Stop) -> Self {
        Self::Stop(stop)
    }
}
