//! ClickHouse access: migrations, batched inserts and the few reads the auditor needs (chain
//! heads to resume from, stored rows to tell a redelivery from a replay or a fork).
//!
//! The client runs with validation off: ClickHouse 18.16 rejects the newer
//! `RowBinaryWithNamesAndTypes` format, and plain `RowBinary` works on every release. Every
//! value in a query is bound with `?`, never spliced into the SQL.

use crate::metrics::Metrics;
use clickhouse::{Client, Row, RowOwned, RowWrite};
use serde::Deserialize;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use verdict_proto::Hash;
use verdict_schema::{
    ChainHeadRow, ChunkRow, ClickHouseConfig, Cluster, ClusterError, EventRow, FindingRow,
    WitnessedHeadRow,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error(transparent)]
    Migration(#[from] verdict_schema::MigrationError),
}

/// What the auditor needs to know about an already stored event.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct StoredEvent {
    pub seq: u64,
    pub hash: String,
    pub prev_hash: String,
    pub verification: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

#[derive(Debug, Row, Deserialize)]
struct EnvelopeOnly {
    #[serde(with = "serde_bytes")]
    envelope: Vec<u8>,
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    cluster: Option<Cluster>,
}

impl Store {
    /// Inserts are uncompressed: envelopes are mostly hashes and signatures, which do not
    /// compress, and LZ4 cost more than half the insert time on the 2-core benchmark host.
    ///
    /// Fails when `config.cluster` or the database is not a usable identifier.
    pub fn new(config: &ClickHouseConfig) -> Result<Self, ClusterError> {
        let client = config
            .client()
            .with_compression(clickhouse::Compression::None);
        let cluster = config.cluster()?;
        Ok(Self { client, cluster })
    }

    /// Applies the stored contract's migrations (see `verdict_schema::migrations`), on one
    /// server or `ON CLUSTER`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.cluster {
            Some(cluster) => verdict_schema::migrate_cluster(&self.client, cluster).await?,
            None => verdict_schema::migrate(&self.client).await?,
        }
        Ok(())
    }

    pub async fn insert_events(&self, rows: &[EventRow]) -> Result<(), StoreError> {
        self.insert("events", rows).await
    }

    pub async fn insert_findings(&self, rows: &[FindingRow]) -> Result<(), StoreError> {
        self.insert("findings", rows).await
    }

    pub async fn insert_heads(&self, rows: &[ChainHeadRow]) -> Result<(), StoreError> {
        self.insert("chain_heads", rows).await
    }

    async fn insert<T: RowOwned + RowWrite>(
        &self,
        table: &str,
        rows: &[T],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<T>(table).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Every chain's newest persisted head.
    pub async fn heads(&self) -> Result<Vec<ChainHeadRow>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT chain_id, seq, hash, key_id, last_event_unix_nanos, \
                 last_checkpoint_unix_nanos, ended, updated_at, version FROM chain_heads FINAL",
            )
            .fetch_all::<ChainHeadRow>()
            .await?)
    }

    /// The highest stored seq of every chain. Above a chain's persisted head these are rows
    /// stored before a crash kept the head from being written.
    pub async fn highest_stored_seqs(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .client
            .query("SELECT chain_id, max(seq) FROM events GROUP BY chain_id")
            .fetch_all()
            .await?)
    }

    /// Stored events of `chain_id` with `first <= seq <= last`, deduplicated.
    pub async fn events_in(
        &self,
        chain_id: &str,
        first: u64,
        last: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT seq, hash, prev_hash, verification, kafka_partition, kafka_offset \
                 FROM events FINAL WHERE chain_id = ? AND seq >= ? AND seq <= ? ORDER BY seq",
            )
            .bind(chain_id)
            .bind(first)
            .bind(last)
            .fetch_all::<StoredEvent>()
            .await?)
    }

    pub async fn insert_chunks(&self, rows: &[ChunkRow]) -> Result<(), StoreError> {
        self.insert("merkle_chunks", rows).await
    }

    pub async fn insert_witnessed(&self, rows: &[WitnessedHeadRow]) -> Result<(), StoreError> {
        self.insert("witnessed_heads", rows).await
    }

    /// The stored Merkle chunk roots of `chain_id`, in chunk order.
    pub async fn chunk_roots(&self, chain_id: &str) -> Result<Vec<ChunkRow>, StoreError> {
        Ok(self
            .client
            .query("SELECT ?fields FROM merkle_chunks FINAL WHERE chain_id = ? ORDER BY chunk")
            .bind(chain_id)
            .fetch_all::<ChunkRow>()
            .await?)
    }

    /// `(hash, prev_hash)` of the stored *verified* events `first..=last` of `chain_id`, in seq
    /// order: fewer than asked when any is missing or was not verified in order.
    pub async fn verified_hashes(
        &self,
        chain_id: &str,
        first: u64,
        last: u64,
    ) -> Result<Vec<(Hash, Hash)>, StoreError> {
        let rows: Vec<StoredEvent> = self.events_in(chain_id, first, last).await?;
        Ok(rows
            .into_iter()
            .filter(|row| row.verification == "verified")
            .map_while(|row| {
                Some((
                    crate::witness::parse_hash(&row.hash)?,
                    crate::witness::parse_hash(&row.prev_hash)?,
                ))
            })
            .collect())
    }

    /// The newest head `key_id` witnessed for `chain_id`.
    pub async fn last_witnessed(
        &self,
        chain_id: &str,
        key_id: &str,
    ) -> Result<Option<WitnessedHeadRow>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT ?fields FROM witnessed_heads WHERE chain_id = ? AND key_id = ? \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(chain_id)
            .bind(key_id)
            .fetch_optional::<WitnessedHeadRow>()
            .await?)
    }

    /// The envelopes of every stored trusted key rotation, per chain in seq order.
    pub async fn key_rotations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT envelope FROM events WHERE kind = ? \
                 AND verification IN ('verified', 'after_break') ORDER BY chain_id, seq",
            )
            .bind(verdict_schema::KEY_ROTATION)
            .fetch_all::<EnvelopeOnly>()
            .await?;
        Ok(rows.into_iter().map(|row| row.envelope).collect())
    }

    /// The envelope of the chain's newest stored checkpoint, if any.
    pub async fn last_checkpoint(&self, chain_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT envelope FROM events WHERE chain_id = ? AND kind = 'checkpoint' \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(chain_id)
            .fetch_optional::<EnvelopeOnly>()
            .await?
            .map(|row| row.envelope))
    }
}

/// The auditor is shutting down while waiting for ClickHouse; the batch was not committed.
#[derive(Debug, thiserror::Error)]
#[error("shutdown requested while ClickHouse was unavailable")]
pub struct Stopped;

/// Longest pause between two attempts while ClickHouse is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `op` until it succeeds, backing off exponentially (100 ms doubling to 5 s). Nothing else
/// happens meanwhile: the caller does not poll Kafka, so consumption pauses and nothing is lost.
/// Warns once per outage and keeps `clickhouse_up` current.
pub async fn with_retry<T, F, Fut>(
    metrics: &Metrics,
    shutdown: &CancellationToken,
    what: &str,
    mut op: F,
) -> Result<T, Stopped>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        match op().await {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(what, failures, "clickhouse is back");
                }
                metrics.clickhouse_up.set(1);
                return Ok(value);
            }
            Err(error) => {
                metrics.clickhouse_up.set(0);
                if failures == 0 {
                    tracing::warn!(what, %error, "clickhouse unavailable; consumption paused, retrying");
                } else {
                    tracing::debug!(what, %error, failures, "clickhouse still unavailable");
                }
                failures += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(Stopped),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}
