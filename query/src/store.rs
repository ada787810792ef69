//! Reads from the auditor's ClickHouse tables.
//!
//! Rows are read into the auditor's own row structs ([`EventRow`], [`FindingRow`],
//! [`ChainHeadRow`]), so each column is defined once for writer and reader. Rows may be stored
//! more than once (Kafka redelivery; `ReplacingMergeTree` merges them eventually), so every read
//! deduplicates: `LIMIT 1 BY` the row identity, or `FINAL` for aggregates.
//!
//! Wide rows are never sorted, and no read scans the whole table when a window will do:
//! - pages (Search, WhoTried) read `events_by_time` (ordered by kind, tool, time) inside a time
//!   window below the page's anchor, widening the window (sized from the rows the last one held,
//!   [`PageWindow::widen`]) until the page is full. WhoTried's attempts are all there; Search's
//!   whole events are read from `events` by primary key, through the keys `(chain_id, seq)` the
//!   window picked. ClickHouse 18.16 cannot stop reading at a `LIMIT` in sort order, so the
//!   window is what bounds the work;
//! - Summarize adds whole hours from `event_counts` and counts only the partial hours at the
//!   range's edges from rows;
//! - exports and verification walk one chain at a time in windows of `seq` along the primary
//!   key.
//!
//! On a cluster (`[clickhouse] cluster`, see `verdict_schema::Cluster`) the same SQL reads the
//! `Distributed` tables under the same names. Nothing here branches on the layout, because every
//! read stays exact when rows are sharded by chain: `FINAL` and `LIMIT 1 BY chain_id, seq` see
//! all copies of a key on its one shard, aggregates (`count`, `min`, `max`, `sum`) merge across
//! shards, `ORDER BY … LIMIT` is merged by the server answering, and `IN (subquery)` runs its
//! subquery once, globally (the client's `distributed_product_mode`). How stale an answer can be
//! after a replica failover is in README "Operations".

use crate::config::ClickHouseConfig;
use crate::filter::{Bound, Conditions, Param};
use crate::paging::{Cursor, Keyset, PageWindow, NANOS_PER_SEC};
use clickhouse::{Client, Row, RowOwned, RowRead};
use serde::Deserialize;
use verdict_schema::{ChainHeadRow, EventRow, FindingRow, WitnessedHeadRow};

pub use crate::summary::SummaryRow;

/// Newest-first order of `events`.
pub const EVENT_KEYSET: Keyset = Keyset {
    time: "time_unix_nanos",
    tie: None,
};
/// Newest-first order of `findings` (several findings may share chain and seq).
pub const FINDING_KEYSET: Keyset = Keyset {
    time: "detected_unix_nanos",
    tie: Some("concat(kind, '/', evidence_sha256)"),
};
/// `[a, b, ...]` over the grouped columns (names from the service's fixed list).
fn key_array(columns: &[&str]) -> String {
    if columns.is_empty() {
        "emptyArrayString()".to_owned()
    } else {
        format!("[{}]", columns.join(", "))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("ClickHouse: {0}")]
pub struct StoreError(#[from] clickhouse::error::Error);

/// What a page of events can be read as: whole events (Search, [`EventRow`]) or only an
/// attempt's columns (WhoTried, [`AttemptRow`]). ClickHouse reads only the columns asked for,
/// and an event's envelope, body and arguments are most of its bytes.
pub trait PageRow: RowOwned + RowRead {
    /// Whether the row has columns only `events` holds: it is then read from there by the keys
    /// a window of `events_by_time` picked, and reading a window's rows only to find it short of
    /// a page costs more than counting its keys first (see [`Store::events_page`]). Narrow rows
    /// are read from `events_by_time` itself.
    const WIDE: bool;

    /// The row's place in newest-first order.
    fn key(&self) -> Cursor;
}

impl PageRow for EventRow {
    const WIDE: bool = true;

    fn key(&self) -> Cursor {
        Cursor::of_event(self.time_unix_nanos, &self.chain_id, self.seq)
    }
}

/// The columns of a decision that WhoTried answers with (see `verdict.v1.Attempt`).
#[derive(Debug, Clone, Row, Deserialize)]
pub struct AttemptRow {
    pub chain_id: String,
    pub seq: u64,
    pub time_unix_nanos: i64,
    pub agent_id: String,
    pub session: String,
    pub client_name: String,
    pub client_version: String,
    pub upstream: String,
    pub tool: String,
    pub risk: String,
    pub decision: String,
    pub rule_id: String,
    pub reason: String,
    pub approval_id: String,
    pub approver: String,
    pub target_names: Vec<String>,
    pub target_values: Vec<String>,
    pub verification: String,
}

impl From<EventRow> for AttemptRow {
    fn from(row: EventRow) -> Self {
        Self {
            chain_id: row.chain_id,
            seq: row.seq,
            time_unix_nanos: row.time_unix_nanos,
            agent_id: row.agent_id,
            session: row.session,
            client_name: row.client_name,
            client_version: row.client_version,
            upstream: row.upstream,
            tool: row.tool,
            risk: row.risk,
            decision: row.decision,
            rule_id: row.rule_id,
            reason: row.reason,
            approval_id: row.approval_id,
            approver: row.approver,
            target_names: row.target_names,
            target_values: row.target_values,
            verification: row.verification,
        }
    }
}

impl PageRow for AttemptRow {
    /// Every column is in `events_by_time` (migration 5).
    const WIDE: bool = false;

    fn key(&self) -> Cursor {
        Cursor::of_event(self.time_unix_nanos, &self.chain_id, self.seq)
    }
}

/// The outcome of a forwarded call, found by its decision's `(chain_id, seq)`.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct OutcomeRef {
    pub chain_id: String,
    pub decision_seq: u64,
    pub outcome: String,
}

/// Attempts of one agent on one target with one decision.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct GroupRow {
    pub agent_id: String,
    pub target_name: String,
    pub target_value: String,
    pub decision: String,
    pub count: u64,
    pub first: i64,
    pub last: i64,
}

/// A page's rows in one window of `events_by_time`, sorted, with its parameters: selected
/// whole ([`PageRow::WIDE`] is false) or as the keys `(chain_id, seq)` of a subquery through
/// which wide rows are read from `events` by primary key.
#[derive(Debug, Clone)]
struct PageSlice {
    /// `FROM … LIMIT ?`, to follow a `SELECT` list.
    sql: String,
    params: Bound,
}

impl PageSlice {
    fn new(cond: &Bound, after: &Bound, lower: &Bound, limit: u64) -> Self {
        let sql = format!(
            "FROM events_by_time WHERE {} AND {} AND {} \
             ORDER BY {} LIMIT 1 BY chain_id, seq LIMIT ?",
            cond.sql,
            after.sql,
            lower.sql,
            EVENT_KEYSET.order_by()
        );
        let mut params = cond.params.clone();
        params.extend(after.params.iter().cloned());
        params.extend(lower.params.iter().cloned());
        params.push(Param::U64(limit));
        Self {
            sql,
            params: Bound::new("", params),
        }
    }

    /// The page's rows of type `T`: from this window directly, or by its keys from `events`.
    fn rows_sql<T: PageRow>(&self) -> String {
        match T::WIDE {
            false => format!("SELECT ?fields {}", self.sql),
            true => format!(
                "SELECT ?fields FROM events WHERE (chain_id, seq) IN (SELECT chain_id, seq {}) \
                 ORDER BY {} LIMIT 1 BY chain_id, seq",
                self.sql,
                EVENT_KEYSET.order_by()
            ),
        }
    }
}

/// The rows of a page's window not read yet: at or above `lower` (`None`: no bound), below
/// `read_down_to` (`None`: nothing read yet).
fn time_slice(lower: Option<i64>, read_down_to: Option<i64>) -> Bound {
    let mut sql = vec!["1"];
    let mut params = Vec::new();
    if let Some(nanos) = lower {
        sql.push("time >= toDateTime(?) AND time_unix_nanos >= ?");
        params.extend([
            Param::I64(nanos.div_euclid(NANOS_PER_SEC)),
            Param::I64(nanos),
        ]);
    }
    if let Some(nanos) = read_down_to {
        sql.push("time_unix_nanos < ?");
        params.push(Param::I64(nanos));
    }
    Bound::new(sql.join(" AND "), params)
}

/// Page sizes above which a window's keys are counted before its wide rows are read: reading up
/// to a page of wide rows only to find the window too small costs more than counting its keys.
const PROBE_ABOVE: u64 = 200;

/// Seqs per ClickHouse batch when walking a chain.
pub const BATCH_ROWS: u64 = 10_000;

/// Walks `first..=last` of one chain in inclusive windows of at most [`BATCH_ROWS`] seqs, so
/// each batch query reads one primary-key range, never the rest of the chain (ClickHouse 18.16
/// cannot stop at a `LIMIT` in key order). After an empty window [`ChainWalk`] says where the
/// next stored seq is, so a gap (a forged seq near `u64::MAX`, say) costs one query, not billions.
#[derive(Debug, Clone)]
struct SeqWalk {
    next: Option<u64>,
    last: u64,
}

impl SeqWalk {
    fn new(first: u64, last: u64) -> Self {
        Self {
            next: Some(first).filter(|&f| f <= last),
            last,
        }
    }

    fn next_window(&mut self) -> Option<(u64, u64)> {
        let from = self.next?;
        let to = from.saturating_add(BATCH_ROWS - 1).min(self.last);
        self.next = to.checked_add(1).filter(|&n| n <= self.last);
        Some((from, to))
    }

    /// Continues at `seq` (the next stored seq after an empty window; `None`: there is none).
    fn resume_at(&mut self, seq: Option<u64>) {
        self.next = seq.filter(|&s| s <= self.last);
    }
}

/// One chain's events matching some conditions, in `seq` order, a [`SeqWalk`] window at a time
/// (exports, VerifyChain). Empty windows are skipped by jumping to the next stored seq.
#[derive(Debug)]
pub struct ChainWalk {
    chain_id: String,
    cond: Conditions,
    seqs: SeqWalk,
}

impl ChainWalk {
    /// Walks `first..=last` of `chain_id`.
    pub fn new(chain_id: &str, cond: Conditions, (first, last): (u64, u64)) -> Self {
        Self {
            chain_id: chain_id.to_owned(),
            cond,
            seqs: SeqWalk::new(first, last),
        }
    }

    /// The next non-empty batch, or `None` once the range is walked.
    pub async fn next_batch(&mut self, store: &Store) -> Result<Option<Vec<EventRow>>, StoreError> {
        while let Some(window) = self.seqs.next_window() {
            let rows = store
                .chain_batch(&self.chain_id, &self.cond, window)
                .await?;
            if !rows.is_empty() {
                return Ok(Some(rows));
            }
            self.seqs
                .resume_at(store.next_seq(&self.chain_id, window.1).await?);
        }
        Ok(None)
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
}

impl Store {
    /// A client for `config`; every query is bounded by `max_execution_time` on the server too.
    pub fn new(config: &ClickHouseConfig, timeout_secs: u64) -> Self {
        let client = config
            .client()
            .with_setting("max_execution_time", timeout_secs.to_string());
        Self { client }
    }

    /// A query with no bound conditions; values go in with `.bind()` (escaped by the client).
    pub(crate) fn raw_query(&self, sql: &str) -> clickhouse::query::Query {
        self.client.query(sql)
    }

    fn query(&self, sql: &str, bound: &[&Bound]) -> clickhouse::query::Query {
        bound
            .iter()
            .fold(self.client.query(sql), |q, b| b.bind_to(q))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client.query("SELECT 1").fetch_one::<u8>().await?;
        Ok(())
    }

    /// Up to `limit` events matching `cond`, newest first, strictly after `after`, read in
    /// widening windows below `window.anchor` (nanoseconds; [`PageWindow::widen`] sizes each from
    /// the rows the last one held). Pages of narrow rows, and small pages, read each window's new
    /// slice only (below the last one read) and stop once they hold `limit` rows. Pages of wide
    /// rows over [`PROBE_ABOVE`] rows count each window's keys on `events_by_time` first, so the
    /// wide rows are read from `events` once, for the first window that holds a full page.
    pub async fn events_page<T: PageRow>(
        &self,
        cond: &Conditions,
        after: Option<&Cursor>,
        window: PageWindow,
        limit: u32,
    ) -> Result<Vec<T>, StoreError> {
        let cond = cond.to_bound();
        let after = after.map_or_else(|| Bound::new("1", vec![]), |c| EVENT_KEYSET.after(c));
        let limit = u64::from(limit);
        let probe = T::WIDE && limit > PROBE_ABOVE;
        let mut rows: Vec<T> = Vec::new();
        // Direct reads: every row at or above this time has been read.
        let mut read_down_to = None;
        let mut lower = window.first();
        loop {
            let slice = time_slice(lower, read_down_to);
            let wanted = limit - rows.len() as u64;
            let page = PageSlice::new(&cond, &after, &slice, wanted);
            if let (true, Some(bound)) = (probe, lower) {
                let sql = format!("SELECT count() FROM (SELECT chain_id, seq {})", page.sql);
                let found: u64 = self.query(&sql, &[&page.params]).fetch_one().await?;
                if found < limit {
                    lower = window.widen(bound, found, limit);
                    continue;
                }
            }
            let read: Vec<T> = self
                .query(&page.rows_sql::<T>(), &[&page.params])
                .fetch_all()
                .await?;
            rows.extend(read);
            match lower {
                Some(bound) if !probe && (rows.len() as u64) < limit => {
                    read_down_to = Some(bound);
                    lower = window.widen(bound, rows.len() as u64, limit);
                }
                _ => return Ok(rows),
            }
        }
    }

    /// The outcomes of the decisions `rows` (newest first, as a page returns them) selected with
    /// `cond`. The decisions are named by their key range and `cond`, not listed (ClickHouse
    /// 18.16 parses long literal lists slowly): that range may since hold late arrivals too, so
    /// the caller keeps the outcomes of its own rows. No outcome is older than its decision.
    pub async fn outcomes(
        &self,
        cond: &Conditions,
        rows: &[impl PageRow],
    ) -> Result<Vec<OutcomeRef>, StoreError> {
        let (Some(newest), Some(oldest)) = (rows.first(), rows.last()) else {
            return Ok(Vec::new());
        };
        let (newest, oldest) = (newest.key(), oldest.key());
        let cond = cond.to_bound();
        let range = EVENT_KEYSET.between(&newest, &oldest);
        let since = Bound::new("", vec![Param::I64(oldest.time)]);
        let sql = format!(
            "SELECT chain_id, decision_seq, outcome FROM events_by_time \
             WHERE kind = 'outcome' AND tool = '' AND time_unix_nanos >= ? \
               AND (chain_id, decision_seq) IN ( \
                 SELECT chain_id, seq FROM events_by_time WHERE {} AND {}) \
             LIMIT 1 BY chain_id, decision_seq",
            cond.sql, range.sql
        );
        Ok(self
            .query(&sql, &[&since, &cond, &range])
            .fetch_all()
            .await?)
    }

    /// Decision counts per agent × target (each target of a matching attempt; `''` for none).
    pub async fn attempt_groups(&self, cond: &Conditions) -> Result<Vec<GroupRow>, StoreError> {
        let cond = cond.to_bound();
        let sql = format!(
            "SELECT agent_id, target_name, target_value, decision, count() AS count, \
                    min(time_unix_nanos) AS first, max(time_unix_nanos) AS last \
             FROM ( \
                SELECT agent_id, target_names, target_values, decision, time_unix_nanos \
                FROM events_by_time WHERE {} LIMIT 1 BY chain_id, seq) \
             LEFT ARRAY JOIN target_names AS target_name, target_values AS target_value \
             GROUP BY agent_id, target_name, target_value, decision \
             ORDER BY agent_id, target_name, target_value, decision",
            cond.sql
        );
        Ok(self.query(&sql, &[&cond]).fetch_all().await?)
    }

    /// Event counts grouped by `columns` (names from the service's fixed list), counted row by
    /// row (deduplicated) from `events_by_time`, which holds trusted events only.
    pub async fn count_rows(
        &self,
        cond: &Conditions,
        columns: &[&str],
    ) -> Result<Vec<SummaryRow>, StoreError> {
        let cond = cond.to_bound();
        let sql = format!(
            "SELECT {keys} AS keys, count() AS count FROM ( \
                SELECT {cols} FROM events_by_time WHERE {c} LIMIT 1 BY chain_id, seq) \
             GROUP BY keys",
            keys = key_array(columns),
            cols = ["chain_id", "seq"]
                .iter()
                .chain(columns)
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            c = cond.sql,
        );
        Ok(self.query(&sql, &[&cond]).fetch_all().await?)
    }

    /// Event counts grouped by `columns` over the whole hours `[from_hour, to_hour)` (Unix
    /// seconds), from the pre-aggregated `event_counts`; `cond` may use only its columns.
    pub async fn count_hours(
        &self,
        cond: &Conditions,
        (from_hour, to_hour): (i64, i64),
        columns: &[&str],
    ) -> Result<Vec<SummaryRow>, StoreError> {
        let cond = cond.to_bound();
        let hours = Bound::new("", vec![Param::I64(from_hour), Param::I64(to_hour)]);
        let sql = format!(
            "SELECT {keys} AS keys, sum(events) AS count FROM event_counts \
             WHERE hour >= toDateTime(?) AND hour < toDateTime(?) AND {c} GROUP BY keys",
            keys = key_array(columns),
            c = cond.sql,
        );
        Ok(self.query(&sql, &[&hours, &cond]).fetch_all().await?)
    }

    /// The chains with events matching `cond`, in order, with their lowest and highest matching
    /// seq.
    pub async fn chain_ranges(
        &self,
        cond: &Conditions,
    ) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let cond = cond.to_bound();
        let sql = format!(
            "SELECT chain_id, min(seq), max(seq) FROM events WHERE {} \
             GROUP BY chain_id ORDER BY chain_id",
            cond.sql
        );
        Ok(self.query(&sql, &[&cond]).fetch_all().await?)
    }

    /// The events of `chain_id` with `from <= seq <= to` matching `cond`, in `seq` order, each
    /// seq once (the newest stored copy, as the table's merges keep); callers keep the range to
    /// one [`SeqWalk`] window. Sorting here rather than in ClickHouse: 18.16
    /// sorts wide rows at a third of the speed it reads them.
    pub async fn chain_batch(
        &self,
        chain_id: &str,
        cond: &Conditions,
        (from, to): (u64, u64),
    ) -> Result<Vec<EventRow>, StoreError> {
        let cond = cond.to_bound();
        let range = Bound::new(
            "",
            vec![
                Param::Str(chain_id.to_owned()),
                Param::U64(from),
                Param::U64(to),
            ],
        );
        let sql = format!(
            "SELECT ?fields FROM events WHERE chain_id = ? AND seq >= ? AND seq <= ? AND {}",
            cond.sql
        );
        let mut rows: Vec<EventRow> = self.query(&sql, &[&range, &cond]).fetch_all().await?;
        rows.sort_unstable_by_key(|row| (row.seq, std::cmp::Reverse(row.ingested_at)));
        rows.dedup_by_key(|row| row.seq);
        Ok(rows)
    }

    /// The lowest stored seq of `chain_id` above `after`, if any.
    async fn next_seq(&self, chain_id: &str, after: u64) -> Result<Option<u64>, StoreError> {
        let (count, next) = self
            .client
            .query("SELECT count(), min(seq) FROM events WHERE chain_id = ? AND seq > ?")
            .bind(chain_id)
            .bind(after)
            .fetch_one::<(u64, u64)>()
            .await?;
        Ok((count > 0).then_some(next))
    }

    /// Lowest and highest stored seq of a chain (`None` for an unknown chain).
    pub async fn seq_bounds(&self, chain_id: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let (count, low, high) = self
            .client
            .query("SELECT count(), min(seq), max(seq) FROM events WHERE chain_id = ?")
            .bind(chain_id)
            .fetch_one::<(u64, u64, u64)>()
            .await?;
        Ok((count > 0).then_some((low, high)))
    }

    /// The stored hash (hex) of one event.
    pub async fn event_hash(&self, chain_id: &str, seq: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .client
            .query("SELECT hash FROM events WHERE chain_id = ? AND seq = ? LIMIT 1")
            .bind(chain_id)
            .bind(seq)
            .fetch_optional()
            .await?)
    }

    /// Witnessed heads of `chain_id` (newest first), or the newest of every chain; with them, the
    /// newest head each other witness key signed of the chain(s) — a key's last head is where it
    /// handed the role over — so a verifier that trusts the first witness key can follow.
    pub async fn witnessed_heads(
        &self,
        chain_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<WitnessedHeadRow>, StoreError> {
        let (newest, per_key) = match chain_id {
            Some(chain_id) => (
                self.client
                    .query(
                        "SELECT ?fields FROM witnessed_heads WHERE chain_id = ? \
                         ORDER BY seq DESC, time_unix_nanos DESC LIMIT 1 BY seq LIMIT ?",
                    )
                    .bind(chain_id)
                    .bind(limit),
                self.client
                    .query(
                        "SELECT ?fields FROM witnessed_heads WHERE chain_id = ? \
                         ORDER BY seq DESC, time_unix_nanos DESC LIMIT 1 BY key_id",
                    )
                    .bind(chain_id),
            ),
            None => (
                self.client
                    .query(
                        "SELECT ?fields FROM witnessed_heads ORDER BY chain_id, seq DESC, time_unix_nanos DESC \
                         LIMIT 1 BY chain_id LIMIT ?",
                    )
                    .bind(limit),
                self.client.query(
                    "SELECT ?fields FROM witnessed_heads ORDER BY chain_id, seq DESC, time_unix_nanos DESC \
                     LIMIT 1 BY chain_id, key_id",
                ),
            ),
        };
        let mut rows: Vec<WitnessedHeadRow> = newest.fetch_all().await?;
        for row in per_key.fetch_all::<WitnessedHeadRow>().await? {
            let known = rows
                .iter()
                .any(|r| (&r.chain_id, r.seq, &r.key_id) == (&row.chain_id, row.seq, &row.key_id));
            if !known {
                rows.push(row);
            }
        }
        rows.sort_by(|a, b| a.chain_id.cmp(&b.chain_id).then(b.seq.cmp(&a.seq)));
        Ok(rows)
    }

    /// The newest head of `chain_id` at or below `seq` that each witness key other than
    /// `key_id` signed, oldest first: where earlier keys handed the role over.
    pub async fn earlier_keys_heads(
        &self,
        chain_id: &str,
        seq: u64,
        key_id: &str,
    ) -> Result<Vec<WitnessedHeadRow>, StoreError> {
        let mut rows: Vec<WitnessedHeadRow> = self
            .client
            .query(
                "SELECT ?fields FROM witnessed_heads WHERE chain_id = ? AND seq <= ? AND key_id != ? \
                 ORDER BY seq DESC, time_unix_nanos DESC LIMIT 1 BY key_id",
            )
            .bind(chain_id)
            .bind(seq)
            .bind(key_id)
            .fetch_all()
            .await?;
        rows.reverse();
        Ok(rows)
    }

    /// The newest witnessed head of `chain_id` with a seq in `first..=last`.
    pub async fn witnessed_head_within(
        &self,
        chain_id: &str,
        first: u64,
        last: u64,
    ) -> Result<Option<WitnessedHeadRow>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT ?fields FROM witnessed_heads WHERE chain_id = ? AND seq >= ? AND seq <= ? \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(chain_id)
            .bind(first)
            .bind(last)
            .fetch_optional()
            .await?)
    }

    /// The witnessed head of `chain_id` at `seq` (0: the newest).
    pub async fn witnessed_head(
        &self,
        chain_id: &str,
        seq: u64,
    ) -> Result<Option<WitnessedHeadRow>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT ?fields FROM witnessed_heads WHERE chain_id = ? AND (seq = ? OR ? = 0) \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(chain_id)
            .bind(seq)
            .bind(seq)
            .fetch_optional()
            .await?)
    }

    /// Stored Merkle chunk roots (hex) of `chain_id`, chunks `0..count`, in order.
    pub async fn chunk_roots(&self, chain_id: &str, count: u64) -> Result<Vec<String>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT root FROM merkle_chunks WHERE chain_id = ? AND chunk < ? \
                 ORDER BY chunk LIMIT 1 BY chunk",
            )
            .bind(chain_id)
            .bind(count)
            .fetch_all()
            .await?)
    }

    /// Stored event hashes (hex) of `chain_id`, seqs `first..=last`, in order.
    pub async fn event_hashes(
        &self,
        chain_id: &str,
        first: u64,
        last: u64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT hash FROM events WHERE chain_id = ? AND seq >= ? AND seq <= ? \
                 ORDER BY seq LIMIT 1 BY seq",
            )
            .bind(chain_id)
            .bind(first)
            .bind(last)
            .fetch_all()
            .await?)
    }

    /// The chain and seq of the stored event whose hash (hex) is `hash`.
    pub async fn event_position(&self, hash: &str) -> Result<Option<(String, u64)>, StoreError> {
        Ok(self
            .client
            .query("SELECT chain_id, seq FROM events WHERE hash = ? LIMIT 1")
            .bind(hash)
            .fetch_optional()
            .await?)
    }

    /// The envelopes of the chain's stored trusted key rotations below `seq`, in seq order.
    pub async fn key_rotations(
        &self,
        chain_id: &str,
        seq: u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.kind_envelopes(chain_id, verdict_schema::KEY_ROTATION, (0, seq))
            .await
    }

    /// The envelopes of the chain's stored trusted events of `kind` with `from <= seq < below`,
    /// in seq order (readers re-verify them: the columns only select).
    pub async fn kind_envelopes(
        &self,
        chain_id: &str,
        kind: &str,
        (from, below): (u64, u64),
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let hex_envelopes: Vec<String> = self
            .client
            .query(
                "SELECT hex(envelope) FROM events WHERE chain_id = ? AND seq >= ? AND seq < ? \
                 AND kind = ? AND verification IN ('verified', 'after_break') \
                 ORDER BY seq LIMIT 1 BY seq",
            )
            .bind(chain_id)
            .bind(from)
            .bind(below)
            .bind(kind)
            .fetch_all()
            .await?;
        Ok(hex_envelopes
            .iter()
            .filter_map(|h| hex::decode(h).ok())
            .collect())
    }

    /// The stored envelope of one event.
    pub async fn envelope(&self, chain_id: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let hex_envelope: Option<String> = self
            .client
            .query("SELECT hex(envelope) FROM events WHERE chain_id = ? AND seq = ? LIMIT 1")
            .bind(chain_id)
            .bind(seq)
            .fetch_optional()
            .await?;
        Ok(hex_envelope.and_then(|h| hex::decode(h).ok()))
    }

    pub async fn findings_page(
        &self,
        cond: &Conditions,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<FindingRow>, StoreError> {
        let cond = cond.to_bound();
        let after = after.map_or_else(|| Bound::new("1", vec![]), |c| FINDING_KEYSET.after(c));
        let sql = format!(
            "SELECT ?fields FROM findings WHERE {} AND {} ORDER BY {} \
             LIMIT 1 BY chain_id, kind, seq, evidence_sha256 LIMIT ?",
            cond.sql,
            after.sql,
            FINDING_KEYSET.order_by()
        );
        let limit = Bound::new("", vec![Param::U64(limit.into())]);
        Ok(self
            .query(&sql, &[&cond, &after, &limit])
            .fetch_all()
            .await?)
    }

    /// The newest head of every chain, or of one.
    pub async fn chain_heads(
        &self,
        chain_id: Option<&str>,
    ) -> Result<Vec<ChainHeadRow>, StoreError> {
        let (sql, params) = match chain_id {
            Some(id) => ("chain_id = ?", vec![Param::Str(id.to_owned())]),
            None => ("1", vec![]),
        };
        let cond = Bound::new(sql, params);
        let sql = format!(
            "SELECT ?fields FROM chain_heads FINAL WHERE {} ORDER BY chain_id",
            cond.sql
        );
        Ok(self.query(&sql, &[&cond]).fetch_all().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_walk_covers_the_range_once_and_jumps_gaps() {
        let mut walk = SeqWalk::new(0, 2 * BATCH_ROWS);
        let windows: Vec<_> = std::iter::from_fn(|| walk.next_window()).collect();
        assert_eq!(
            windows,
            vec![
                (0, BATCH_ROWS - 1),
                (BATCH_ROWS, 2 * BATCH_ROWS - 1),
                (2 * BATCH_ROWS, 2 * BATCH_ROWS)
            ]
        );
        assert_eq!(SeqWalk::new(5, 4).next_window(), None);
        let mut edge = SeqWalk::new(u64::MAX - 1, u64::MAX);
        assert_eq!(edge.next_window(), Some((u64::MAX - 1, u64::MAX)));
        assert_eq!(edge.next_window(), None);

        let mut gap = SeqWalk::new(1, u64::MAX);
        assert_eq!(gap.next_window(), Some((1, BATCH_ROWS)));
        gap.resume_at(Some(u64::MAX));
        assert_eq!(gap.next_window(), Some((u64::MAX, u64::MAX)));
        let mut end = SeqWalk::new(1, u64::MAX);
        end.next_window();
        end.resume_at(None);
        assert_eq!(end.next_window(), None);
    }
}
