//! The ClickHouse tables and their migrations.
//!
//! Migrations are versioned and idempotent: each runs once, in order, and is recorded in
//! `schema_migrations`; the auditor applies them at start ([`migrate`]). The SQL is the subset common to ClickHouse 18.16 (Debian's package, used in
//! tests and local runs) and current releases: no DateTime64, Map, JSON, LowCardinality or TTL.
//! Enumerations are stored as their lowercase names (`String`). Hashes (`hash`, `prev_hash`,
//! `policy_sha256`, `arguments_sha256`, `evidence_sha256`) are lowercase hex; `envelope` and
//! `evidence` hold raw bytes (a ClickHouse `String` is a byte string).
//!
//! Trust (migration 3): `events` holds trusted material only — events whose signature verified
//! with a key trusted for their chain. Anything else (bad signature, unknown or disallowed key,
//! undecodable bytes) is a `findings` row with the bytes as evidence, outside the key space of
//! `events`, so for each `(chain_id, seq)` there is at most one genuine event and no read path can
//! answer with a forgery. `events` is not partitioned by the time an event claims: rows at one key
//! always land in the one partition, where merges and `FINAL` see them together.
//!
//! Deduplication: `events`, `findings` and `chain_heads` are `ReplacingMergeTree`s keyed by their
//! identity, so a redelivered Kafka batch never shows twice in query results — readers use `FINAL`
//! (or `LIMIT 1 BY` the key) where exactness matters.
//!
//! The witness (migration 4): `witnessed_heads` keeps every head the auditor's witness key signed
//! (the signed bytes and signature as published, plus readable columns), and `merkle_chunks` the
//! Merkle root of every complete chunk of [`MERKLE_CHUNK`] events per chain, which the query service
//! combines with the leaves of a few chunks into O(log n) proofs without reading a whole chain.
//!
//! Read paths (migration 2): `events` is ordered for the auditor and for chain walks (export,
//! verification), which no time or tool filter can prune. Two tables fed by materialized views
//! on `events` serve the compliance questions:
//! - `events_by_time`: the filterable columns, ordered by `(kind, tool, time)`, so "newest
//!   first" pages read a time window of one kind and tool instead of every row. Since migration
//!   5 it also holds the rest of an attempt (session, client, rule, approval), so WhoTried reads
//!   its page from here alone; migration 5 rebuilds it from `events`, like migration 3, and
//!   while it runs the table is empty or partial (a few seconds per million events);
//! - `event_counts`: events per hour × kind × agent × tool × risk ×
//!   decision × upstream, summed on merge, so dashboards aggregate tens of thousands of rows
//!   instead of millions. It counts rows as inserted, which is exact because the auditor never
//!   writes an event twice (the auditor's `resolve` and `in_flight` modules; the README names the
//!   two rebalance cases where it can). Two auditors applying this migration at once,
//!   or one still writing with the old version, can count rows stored meanwhile twice or not at
//!   all; the README (operations) shows how to rebuild it from `events FINAL`.

use crate::cluster::{Cluster, ClusterError};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A migration could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("clickhouse migration: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("clickhouse migration on a cluster: {0}")]
    Cluster(#[from] ClusterError),
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct MigrationRow {
    version: u32,
    description: String,
}

const MIGRATION_COLUMNS: &str = "version UInt32, description String";

/// Applies every migration not yet recorded in `schema_migrations`, in order, on one server.
/// Statements creating things are idempotent (`IF NOT EXISTS`), so two auditors applying those
/// at once are harmless; a rebuild (migrations 3 and 5: drop, create, refill) is not, and is
/// applied by one auditor or `--migrate-only` first (README "Upgrading to migration 5").
pub async fn migrate(client: &Client) -> Result<(), MigrationError> {
    migrate_up_to(client, u32::MAX).await
}

/// [`migrate`], stopping after version `last`: a store as an older auditor left it, for tests of
/// the upgrade.
pub async fn migrate_up_to(client: &Client, last: u32) -> Result<(), MigrationError> {
    let create = format!(
        "CREATE TABLE IF NOT EXISTS schema_migrations ({MIGRATION_COLUMNS}) \
         ENGINE = ReplacingMergeTree ORDER BY version"
    );
    client.query(&create).execute().await?;
    let applied = applied(client).await?;
    for &(version, description, statements) in MIGRATIONS {
        if applied.contains(&version) || version > last {
            continue;
        }
        for statement in statements {
            client.query(statement).execute().await?;
        }
        record(client, version, description).await?;
    }
    Ok(())
}

/// [`migrate`] on a cluster (see [`Cluster`]): the same versions, each statement in its
/// cluster form, `ON CLUSTER`. A cluster without any version starts from [`BASELINE`], the
/// schema migrations 1 to [`BASELINE_VERSION`] arrive at, and records those versions; a cluster
/// created before a later baseline runs that version's own statements.
pub async fn migrate_cluster(client: &Client, cluster: &Cluster) -> Result<(), MigrationError> {
    client
        .query(&cluster.migrations_table(MIGRATION_COLUMNS))
        .execute()
        .await?;
    let applied = applied(client).await?;
    // Version 1 is recorded last, so a cluster is fresh until its whole baseline is recorded.
    let fresh = !applied.contains(&1);
    if fresh {
        run_on_cluster(client, cluster, BASELINE).await?;
        for &(version, description, _) in MIGRATIONS.iter().rev() {
            if version <= BASELINE_VERSION && !applied.contains(&version) {
                record(client, version, description).await?;
            }
        }
    }
    for &(version, description, statements) in MIGRATIONS {
        if applied.contains(&version) || (fresh && version <= BASELINE_VERSION) {
            continue;
        }
        // Half-recorded by an auditor whose baseline was version 4: that baseline is applied.
        if version > FIRST_BASELINE_VERSION {
            run_on_cluster(client, cluster, statements).await?;
        }
        record(client, version, description).await?;
    }
    Ok(())
}

/// Each statement in its cluster form. An `INSERT … SELECT` goes through the distributed
/// tables: synchronously, so the rows are on their shards before the version is recorded.
async fn run_on_cluster(
    client: &Client,
    cluster: &Cluster,
    statements: &[&str],
) -> Result<(), MigrationError> {
    for statement in statements {
        for sql in cluster.translate(statement)? {
            client
                .query(&sql)
                .with_setting("insert_distributed_sync", "1")
                .execute()
                .await?;
        }
    }
    Ok(())
}

async fn applied(client: &Client) -> Result<BTreeSet<u32>, MigrationError> {
    Ok(client
        .query("SELECT version, description FROM schema_migrations FINAL")
        .fetch_all::<MigrationRow>()
        .await?
        .into_iter()
        .map(|m| m.version)
        .collect())
}

async fn record(client: &Client, version: u32, description: &str) -> Result<(), MigrationError> {
    let mut insert = client.insert::<MigrationRow>("schema_migrations").await?;
    insert
        .write(&MigrationRow {
            version,
            description: description.into(),
        })
        .await?;
    insert.end().await?;
    tracing::info!(version, description, "applied migration");
    Ok(())
}

/// The columns of `events` (and of the table migration 3 rebuilds it into).
macro_rules! event_columns {
    () => {
        r"
    chain_id String,
    seq UInt64,
    -- the gateway's decision time (as the event claims it): seconds for ranges, nanoseconds for order
    time DateTime,
    time_unix_nanos Int64,
    -- decision | outcome | checkpoint
    kind String,
    agent_id String,
    session String,
    client_name String,
    client_version String,
    protocol_version String,
    transport String,
    remote_addr String,
    upstream String,
    method String,
    tool String,
    -- read | write | destructive | '' (not a tool call)
    risk String,
    -- allow | deny | hide | rate_limited | approval_requested | approved | rejected
    -- | approval_expired | error | '' (outcome and checkpoint rows)
    decision String,
    rule_id String,
    policy_sha256 String,
    reason String,
    request_id String,
    approval_id String,
    approver String,
    -- full | redacted | hash
    redaction String,
    arguments_json String,
    arguments_sha256 String,
    target_names Array(String),
    target_values Array(String),
    -- outcome rows: the decision they belong to, and what happened
    decision_seq UInt64,
    -- ok | tool_error | jsonrpc_error | upstream_unreachable | cancelled | ''
    outcome String,
    jsonrpc_error_code Int64,
    outcome_message String,
    latency_micros UInt64,
    -- checkpoint rows
    checkpoint_reason String,
    -- the envelope as received, so any row can be re-verified later
    envelope String,
    hash String,
    prev_hash String,
    key_id String,
    -- verified | after_break | out_of_order (untrusted events are findings only)
    verification String,
    kafka_partition Int32,
    kafka_offset Int64,
    ingested_at DateTime
"
    };
}

/// `events` as migration 1 created it: partitioned by the month of the time the event claims.
const EVENTS_V1: &str = concat!(
    "CREATE TABLE IF NOT EXISTS events (",
    event_columns!(),
    ") ENGINE = ReplacingMergeTree(ingested_at)\nPARTITION BY toYYYYMM(time)\nORDER BY (chain_id, seq)"
);

/// The engine of `events` since migration 3: trusted events only, one partition, keyed and
/// deduplicated by `(chain_id, seq)` and the auditor's own `ingested_at` — never by anything the
/// event claims, so two rows at one key always meet in a merge.
macro_rules! events_v3_engine {
    () => {
        ") ENGINE = ReplacingMergeTree(ingested_at)\nORDER BY (chain_id, seq)"
    };
}

/// `events` since migration 3, built beside the old table and renamed over it.
const EVENTS_V3: &str = concat!(
    "CREATE TABLE events_rebuilt (",
    event_columns!(),
    events_v3_engine!()
);

/// `events` as a new cluster creates it: the migration 3 definition under its own name.
const EVENTS_CURRENT: &str = concat!(
    "CREATE TABLE IF NOT EXISTS events (",
    event_columns!(),
    events_v3_engine!()
);

const FINDINGS: &str = r"CREATE TABLE IF NOT EXISTS findings (
    -- bad_signature | unknown_key | key_not_allowed_for_chain | malformed | gap | fork | replay
    -- | reorder | stale | silent_chain
    kind String,
    chain_id String,
    seq UInt64,
    last_seq UInt64,
    detail String,
    detected_at DateTime,
    detected_unix_nanos Int64,
    -- the offending message bytes as received
    evidence String,
    evidence_sha256 String,
    kafka_partition Int32,
    kafka_offset Int64
) ENGINE = ReplacingMergeTree(detected_at)
PARTITION BY toYYYYMM(detected_at)
ORDER BY (chain_id, kind, seq, evidence_sha256)";

const CHAIN_HEADS: &str = r"CREATE TABLE IF NOT EXISTS chain_heads (
    chain_id String,
    seq UInt64,
    hash String,
    key_id String,
    last_event_unix_nanos Int64,
    last_checkpoint_unix_nanos Int64,
    ended UInt8,
    updated_at DateTime,
    -- ReplacingMergeTree keeps the row with the highest version: the newest head
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY chain_id";

/// The filterable columns of `events_by_time` (migration 2), as declared and as selected.
macro_rules! by_time_columns {
    () => {
        "time DateTime, time_unix_nanos Int64, chain_id String, seq UInt64, kind String,
    agent_id String, upstream String, tool String, risk String, decision String, reason String,
    arguments_json String, target_names Array(String), target_values Array(String),
    decision_seq UInt64, outcome String, verification String, ingested_at DateTime"
    };
}
macro_rules! by_time_names {
    () => {
        "time, time_unix_nanos, chain_id, seq, kind, agent_id, upstream, tool, risk, decision,
       reason, arguments_json, target_names, target_values, decision_seq, outcome,
       verification, ingested_at"
    };
}

/// The rest of an attempt (migration 5), so WhoTried reads its page from `events_by_time` alone
/// instead of looking each row up again in `events`, whose order no time filter can use.
macro_rules! attempt_columns {
    () => {
        ",
    session String, client_name String, client_version String, rule_id String,
    approval_id String, approver String"
    };
}
macro_rules! attempt_names {
    () => {
        ",
       session, client_name, client_version, rule_id, approval_id, approver"
    };
}

macro_rules! by_time_engine {
    () => {
        "
) ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(time)
ORDER BY (kind, tool, time_unix_nanos, chain_id, seq)"
    };
}

/// `events_by_time` as migrations 2 and 3 created it.
const EVENTS_BY_TIME_V2: &str = concat!(
    "CREATE TABLE IF NOT EXISTS events_by_time (\n    ",
    by_time_columns!(),
    by_time_engine!()
);
const EVENTS_BY_TIME_FEED_V2: &str = concat!(
    "CREATE MATERIALIZED VIEW IF NOT EXISTS events_by_time_feed TO events_by_time AS\nSELECT ",
    by_time_names!(),
    "\nFROM events"
);
/// Rows stored before the feed existed (a repeat is merged away: same key).
const EVENTS_BY_TIME_FILL_V2: &str = concat!(
    "INSERT INTO events_by_time\nSELECT ",
    by_time_names!(),
    "\nFROM events"
);

/// `events_by_time` since migration 5: the filterable columns and the rest of an attempt.
const EVENTS_BY_TIME: &str = concat!(
    "CREATE TABLE IF NOT EXISTS events_by_time (\n    ",
    by_time_columns!(),
    attempt_columns!(),
    by_time_engine!()
);
const EVENTS_BY_TIME_FEED: &str = concat!(
    "CREATE MATERIALIZED VIEW IF NOT EXISTS events_by_time_feed TO events_by_time AS\nSELECT ",
    by_time_names!(),
    attempt_names!(),
    "\nFROM events"
);
/// Every stored row, once (a repeat is merged away: same key).
const EVENTS_BY_TIME_FILL: &str = concat!(
    "INSERT INTO events_by_time\nSELECT ",
    by_time_names!(),
    attempt_names!(),
    "\nFROM events"
);

const EVENT_COUNTS: &str = r"CREATE TABLE IF NOT EXISTS event_counts (
    hour DateTime,
    kind String,
    agent_id String,
    tool String,
    risk String,
    decision String,
    upstream String,
    events UInt64
) ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, kind, agent_id, tool, risk, decision, upstream)";

const EVENT_COUNTS_FEED: &str = r"CREATE MATERIALIZED VIEW IF NOT EXISTS event_counts_feed TO event_counts AS
SELECT toDateTime(intDiv(toUInt32(time), 3600) * 3600) AS hour,
       kind, agent_id, tool, risk, decision, upstream, count() AS events
FROM events
GROUP BY hour, kind, agent_id, tool, risk, decision, upstream";

/// Rows stored before the feed existed, once: a sum cannot absorb a second copy.
const EVENT_COUNTS_FILL: &str = r"INSERT INTO event_counts
SELECT toDateTime(intDiv(toUInt32(time), 3600) * 3600) AS hour,
       kind, agent_id, tool, risk, decision, upstream, count() AS events
FROM events FINAL
WHERE (SELECT count() FROM event_counts) = 0
GROUP BY hour, kind, agent_id, tool, risk, decision, upstream";

/// Events per Merkle chunk (a power of two): chunk `i` covers seqs `i * MERKLE_CHUNK + 1 ..=
/// (i + 1) * MERKLE_CHUNK`.
pub const MERKLE_CHUNK: u64 = 1024;

/// Heads the auditor's witness signed: one row per (chain, seq, witness key). `signed_head` and
/// `signature` are the authoritative bytes; the other columns repeat them for queries.
const WITNESSED_HEADS: &str = r"CREATE TABLE IF NOT EXISTS witnessed_heads (
    chain_id String,
    seq UInt64,
    event_hash String,
    tree_root String,
    time_unix_nanos Int64,
    checkpoint_seq UInt64,
    key_id String,
    signed_head String,
    signature String
) ENGINE = ReplacingMergeTree
ORDER BY (chain_id, seq, key_id)";

/// The Merkle root of every complete chunk of [`MERKLE_CHUNK`] events of a chain: proofs
/// read these and the leaves of a few chunks instead of a whole chain.
const MERKLE_CHUNKS: &str = r"CREATE TABLE IF NOT EXISTS merkle_chunks (
    chain_id String,
    chunk UInt64,
    root String
) ENGINE = ReplacingMergeTree
ORDER BY (chain_id, chunk)";

/// The version the first cluster baseline stood for: no cluster runs a migration up to it on its
/// own, and every later one must have a cluster form.
const FIRST_BASELINE_VERSION: u32 = 4;

/// The last version [`BASELINE`] stands for.
const BASELINE_VERSION: u32 = 5;

/// The schema of versions 1 to [`BASELINE_VERSION`] as one step, without the renames and refills
/// an upgraded single server needed: where a cluster starts.
const BASELINE: &[&str] = &[
    EVENTS_CURRENT,
    FINDINGS,
    CHAIN_HEADS,
    EVENTS_BY_TIME,
    EVENTS_BY_TIME_FEED,
    EVENT_COUNTS,
    EVENT_COUNTS_FEED,
    WITNESSED_HEADS,
    MERKLE_CHUNKS,
];

/// `(version, description, statements)`, applied in order.
pub const MIGRATIONS: &[(u32, &str, &[&str])] = &[
    (1, "events, findings, chain heads", &[EVENTS_V1, FINDINGS, CHAIN_HEADS]),
    (
        2,
        "read paths: events_by_time, event_counts",
        &[
            EVENTS_BY_TIME_V2,
            EVENTS_BY_TIME_FEED_V2,
            EVENTS_BY_TIME_FILL_V2,
            EVENT_COUNTS,
            EVENT_COUNTS_FEED,
            EVENT_COUNTS_FILL,
        ],
    ),
    (
        3,
        "trusted events only, in one partition; read paths rebuilt from them",
        &[
            // Nothing may feed the read paths while `events` is swapped.
            "DROP TABLE IF EXISTS events_by_time_feed",
            "DROP TABLE IF EXISTS event_counts_feed",
            "DROP TABLE IF EXISTS events_rebuilt",
            EVENTS_V3,
            // Untrusted rows (stored before this version) are already findings with their bytes.
            "INSERT INTO events_rebuilt SELECT * FROM events FINAL WHERE verification != 'untrusted'",
            "DROP TABLE IF EXISTS events_before_v3",
            "RENAME TABLE events TO events_before_v3, events_rebuilt TO events",
            "DROP TABLE events_before_v3",
            "DROP TABLE IF EXISTS events_by_time",
            EVENTS_BY_TIME_V2,
            EVENTS_BY_TIME_FEED_V2,
            EVENTS_BY_TIME_FILL_V2,
            "DROP TABLE IF EXISTS event_counts",
            EVENT_COUNTS,
            EVENT_COUNTS_FEED,
            EVENT_COUNTS_FILL,
        ],
    ),
    (
        4,
        "the witness: witnessed heads and Merkle chunk roots",
        &[WITNESSED_HEADS, MERKLE_CHUNKS],
    ),
    (
        5,
        "events_by_time carries whole attempts; rebuilt from events",
        &[
            // As in migration 3: no feed while the table is replaced; the fill runs after the
            // new feed exists, so a row stored meanwhile is there twice (one key) or once.
            "DROP TABLE IF EXISTS events_by_time_feed",
            "DROP TABLE IF EXISTS events_by_time",
            EVENTS_BY_TIME,
            EVENTS_BY_TIME_FEED,
            EVENTS_BY_TIME_FILL,
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every migration after the first cluster baseline, and the baseline itself, must have a
    /// cluster form, or upgrading a cluster stops at it.
    #[test]
    fn the_baseline_and_every_migration_a_cluster_may_run_translate() {
        let cluster = Cluster::new("verdict", "audit").unwrap();
        let later = MIGRATIONS
            .iter()
            .filter(|m| m.0 > FIRST_BASELINE_VERSION)
            .flat_map(|m| m.2);
        for statement in BASELINE.iter().chain(later) {
            let translated = cluster.translate(statement).unwrap();
            assert!(!translated.is_empty(), "{statement}");
        }
    }
}
