//! Findings in the `Follow` feed: the auditor's integrity findings (forgeries, gaps, forks,
//! silent chains, ...) as records a SIEM can take, read from the store in the order the
//! follower's cursor names them (see `follow_cursor`: by the topic position of the message that
//! raised them, `silent_chain` by chain and seq; never by a time).
//!
//! A finding may be stored more than once (the auditor redelivered its message after a restart
//! and raised it again): copies share their identity `(chain_id, kind, seq, evidence_sha256)` and
//! their topic position, and every read here keeps one row per identity (`LIMIT 1 BY`), so each
//! is delivered once.
//!
//! A finding's JSON line is a [`FindingRecord`] (its `finding` field, the kind, tells it from an
//! event's record); its OCSF line is a Detection Finding (see [`crate::ocsf::finding_to_ocsf`]).

use crate::filter::{Bound, Conditions, Param};
use crate::follow_cursor::Positions;
use crate::ocsf;
use crate::store::{Store, StoreError, BATCH_ROWS};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use verdict_proto::pb;
use verdict_schema::FindingRow;

/// The one finding kind raised by no message on the topic.
const SILENT: &str = "silent_chain";

/// Finding kinds that mean someone forged or altered the trail; the others (gaps, reorders,
/// silence, tool changes) may also be faults.
const FORGERIES: &[&str] = &[
    "bad_signature",
    "unknown_key",
    "key_not_allowed_for_chain",
    "malformed",
    "fork",
    "replay",
];

/// One finding as the feed delivers it (JSON lines; `unmapped.verdict_finding` in OCSF).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingRecord {
    /// The finding kind: bad_signature, unknown_key, gap, fork, replay, silent_chain, ...
    pub finding: String,
    pub chain_id: String,
    pub seq: u64,
    pub last_seq: u64,
    pub detail: String,
    pub detected_unix_nanos: i64,
    /// Base64 of the offending message as received (empty for `silent_chain`).
    pub evidence: String,
    pub evidence_sha256: String,
    /// The topic position of that message (-1 for `silent_chain`).
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

impl FindingRecord {
    fn from_row(row: &FindingRow) -> Self {
        Self {
            finding: row.kind.clone(),
            chain_id: row.chain_id.clone(),
            seq: row.seq,
            last_seq: row.last_seq,
            detail: row.detail.clone(),
            detected_unix_nanos: row.detected_unix_nanos,
            evidence: B64.encode(&row.evidence),
            evidence_sha256: row.evidence_sha256.clone(),
            kafka_partition: row.kafka_partition,
            kafka_offset: row.kafka_offset,
        }
    }

    /// True for the kinds that mean forged or altered messages (OCSF High, CEF 9).
    pub fn is_forgery(&self) -> bool {
        FORGERIES.contains(&self.finding.as_str())
    }

    /// A stable id for deduplication downstream: the finding's identity in the store.
    pub fn uid(&self) -> String {
        let digest = self
            .evidence_sha256
            .get(..16)
            .unwrap_or(&self.evidence_sha256);
        format!(
            "finding:{}:{}:{}:{digest}",
            self.chain_id, self.finding, self.seq
        )
    }
}

/// One finding as one line of `format`.
fn line(row: &FindingRow, format: pb::ExportFormat) -> String {
    let record = FindingRecord::from_row(row);
    let mut line = match format {
        pb::ExportFormat::Ocsf => ocsf::finding_to_ocsf(&record).to_string(),
        _ => serde_json::to_string(&record).unwrap_or_default(),
    };
    line.push('\n');
    line
}

/// The message of one finding, with the cursor after it.
pub(crate) fn message(
    row: &FindingRow,
    format: pb::ExportFormat,
    positions: &mut Positions,
) -> pb::FollowMessage {
    if row.kind == SILENT {
        positions.advance_silent(&row.chain_id, row.seq);
    } else {
        positions.advance_finding(row.kafka_partition, row.kafka_offset);
    }
    pb::FollowMessage {
        data: line(row, format).into_bytes(),
        chain_id: row.chain_id.clone(),
        seq: row.seq,
        cursor: positions.encode(),
        finding: true,
        behind: 0,
    }
}

/// `(key = ? AND at <op> ?) OR ... OR key NOT IN (...)`: rows past each known position, and every
/// row of a key the positions do not name.
fn beyond(key: &str, at: &str, op: &str, positions: Vec<(Param, Param)>) -> Bound {
    if positions.is_empty() {
        return Bound::new("1", Vec::new());
    }
    let n = positions.len();
    let mut parts = vec![format!("({key} = ? AND {at} {op} ?)"); n];
    parts.push(format!("{key} NOT IN ({})", vec!["?"; n].join(", ")));
    let (keys, ats): (Vec<Param>, Vec<Param>) = positions.into_iter().unzip();
    let mut params: Vec<Param> = keys
        .iter()
        .cloned()
        .zip(ats)
        .flat_map(|(k, a)| [k, a])
        .collect();
    params.extend(keys);
    Bound::new(format!("({})", parts.join(" OR ")), params)
}

impl Store {
    /// Where findings stored so far end, among those detected before `unix_nanos`: the highest
    /// offset per partition that raised one, and the highest `silent_chain` seq per chain.
    pub async fn finding_heads(
        &self,
        unix_nanos: i64,
    ) -> Result<(Vec<(i32, i64)>, Vec<(String, u64)>), StoreError> {
        let offsets = self
            .raw_query(
                "SELECT kafka_partition, max(kafka_offset) FROM findings \
                 WHERE kind != ? AND detected_unix_nanos < ? GROUP BY kafka_partition",
            )
            .bind(SILENT)
            .bind(unix_nanos)
            .fetch_all()
            .await?;
        let silent = self
            .raw_query(
                "SELECT chain_id, max(seq) FROM findings \
                 WHERE kind = ? AND detected_unix_nanos < ? GROUP BY chain_id",
            )
            .bind(SILENT)
            .bind(unix_nanos)
            .fetch_all()
            .await?;
        Ok((offsets, silent))
    }

    /// The next findings after `positions` that match `cond`, one per identity, in cursor order:
    /// those raised by messages (by partition and offset) and then the `silent_chain` ones.
    pub async fn findings_after(
        &self,
        cond: &Conditions,
        positions: &Positions,
    ) -> Result<Vec<FindingRow>, StoreError> {
        let mut rows = self.raised_after(cond, positions).await?;
        rows.extend(self.silent_after(cond, positions).await?);
        Ok(rows)
    }

    async fn raised_after(
        &self,
        cond: &Conditions,
        positions: &Positions,
    ) -> Result<Vec<FindingRow>, StoreError> {
        let at: Vec<(i32, i64, u32)> = positions.finding_offsets().collect();
        let delivered: u64 = at.iter().map(|&(_, _, n)| u64::from(n)).sum();
        let since = beyond(
            "kafka_partition",
            "kafka_offset",
            ">=",
            at.iter()
                .map(|&(p, offset, _)| (Param::I64(p.into()), Param::I64(offset)))
                .collect(),
        );
        let rows: Vec<FindingRow> = self
            .bounded(
                &format!(
                    "SELECT ?fields FROM findings WHERE kind != ? AND {} AND {} \
                     ORDER BY kafka_partition, kafka_offset, chain_id, kind, seq, evidence_sha256 \
                     LIMIT 1 BY kafka_partition, kafka_offset, chain_id, kind, seq, evidence_sha256 \
                     LIMIT {}",
                    cond.to_bound().sql,
                    since.sql,
                    BATCH_ROWS + delivered
                ),
                &[&cond.to_bound(), &since],
            )
            .fetch_all()
            .await?;
        Ok(skip_delivered(rows, &at))
    }

    async fn silent_after(
        &self,
        cond: &Conditions,
        positions: &Positions,
    ) -> Result<Vec<FindingRow>, StoreError> {
        let since = beyond(
            "chain_id",
            "seq",
            ">",
            positions
                .silent_seqs()
                .map(|(chain, seq)| (Param::Str(chain.to_owned()), Param::U64(seq)))
                .collect(),
        );
        Ok(self
            .bounded(
                &format!(
                    "SELECT ?fields FROM findings WHERE kind = ? AND {} AND {} \
                     ORDER BY chain_id, seq LIMIT 1 BY chain_id, seq LIMIT {BATCH_ROWS}",
                    cond.to_bound().sql,
                    since.sql
                ),
                &[&cond.to_bound(), &since],
            )
            .fetch_all()
            .await?)
    }

    /// `sql` (whose first `?` is the silent kind) with `bound` after it.
    fn bounded(&self, sql: &str, bound: &[&Bound]) -> clickhouse::query::Query {
        bound
            .iter()
            .fold(self.raw_query(sql).bind(SILENT), |q, b| b.bind_to(q))
    }
}

/// `rows` without the first `n` of each position `(partition, offset, n)`: those were delivered.
fn skip_delivered(rows: Vec<FindingRow>, at: &[(i32, i64, u32)]) -> Vec<FindingRow> {
    let mut seen = 0u32;
    let mut last = None;
    rows.into_iter()
        .filter(|row| {
            let here = (row.kafka_partition, row.kafka_offset);
            seen = if last == Some(here) { seen + 1 } else { 1 };
            last = Some(here);
            !at.iter()
                .any(|&(p, offset, n)| (p, offset) == here && seen <= n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(partition: i32, offset: i64, seq: u64) -> FindingRow {
        FindingRow {
            kind: "fork".into(),
            seq,
            kafka_partition: partition,
            kafka_offset: offset,
            ..FindingRow::default()
        }
    }

    #[test]
    fn skips_what_the_cursor_says_was_delivered_at_its_offset() {
        let rows = vec![
            row(0, 5, 1),
            row(0, 5, 2),
            row(0, 5, 3),
            row(0, 6, 4),
            row(1, 5, 9),
        ];
        let left = skip_delivered(rows, &[(0, 5, 2), (1, 3, 1)]);
        let seqs: Vec<u64> = left.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [3, 4, 9]);
    }

    #[test]
    fn beyond_binds_every_position_and_names_the_rest() {
        let bound = beyond(
            "chain_id",
            "seq",
            ">",
            vec![(Param::Str("a".into()), Param::U64(3))],
        );
        assert_eq!(
            bound.sql,
            "((chain_id = ? AND seq > ?) OR chain_id NOT IN (?))"
        );
        assert_eq!(
            bound.params,
            [
                Param::Str("a".into()),
                Param::U64(3),
                Param::Str("a".into())
            ]
        );
        assert_eq!(beyond("k", "a", ">", vec![]).sql, "1");
    }

    #[test]
    fn a_finding_line_is_told_from_an_event_by_its_finding_field() {
        let line = line(&row(0, 5, 1), pb::ExportFormat::Jsonl);
        let record: FindingRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(record.finding, "fork");
        assert!(
            record.uid().starts_with("finding::fork:1:"),
            "{}",
            record.uid()
        );
    }
}
