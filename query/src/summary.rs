//! Summarize from pre-aggregated hours: which filters `event_counts` can answer, how a time range
//! splits into whole hours (read from `event_counts`) and partial hours at its edges (counted from
//! rows), and how the parts add up.
//!
//! `event_counts` (see `verdict_schema::migrations`) holds one count per hour × kind × agent × tool ×
//! risk × decision × upstream. A filter on anything else (targets, argument values, reason text,
//! chain ids) cannot be answered from it, and falls back to counting rows.

use clickhouse::Row;
use serde::Deserialize;
use std::collections::BTreeMap;
use verdict_proto::pb;

const NANOS_PER_HOUR: i64 = 3600 * 1_000_000_000;

/// A count for one combination of the grouped columns.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct SummaryRow {
    pub keys: Vec<String>,
    pub count: u64,
}

/// Whether `event_counts` can answer `filter` (its time range aside).
pub fn by_dimensions_only(filter: &pb::EventFilter) -> bool {
    filter.targets.is_empty()
        && filter.arguments.is_empty()
        && filter.reason_contains.is_empty()
        && filter.chain_ids.is_empty()
}

/// A `[from, to)` range in nanoseconds, split at hour boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourSplit {
    /// Whole hours `[from_hour, to_hour)` in Unix seconds, if the range holds any.
    pub hours: Option<(i64, i64)>,
    /// The partial hours outside them, as nanosecond ranges.
    pub edges: Vec<(i64, i64)>,
}

pub fn split_hours((from, to): (i64, i64)) -> HourSplit {
    let first_whole = from.div_euclid(NANOS_PER_HOUR) + i64::from(from % NANOS_PER_HOUR != 0);
    let end_whole = to.div_euclid(NANOS_PER_HOUR);
    if first_whole >= end_whole {
        return HourSplit {
            hours: None,
            edges: vec![(from, to)],
        };
    }
    let (start, end) = (first_whole * NANOS_PER_HOUR, end_whole * NANOS_PER_HOUR);
    HourSplit {
        hours: Some((first_whole * 3600, end_whole * 3600)),
        edges: [(from, start), (end, to)]
            .into_iter()
            .filter(|(a, b)| a < b)
            .collect(),
    }
}

/// Adds up rows with the same keys; largest count first, then by keys.
pub fn merge(rows: Vec<SummaryRow>) -> Vec<pb::SummaryRow> {
    let mut sums: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for row in rows {
        *sums.entry(row.keys).or_default() += row.count;
    }
    let mut merged: Vec<pb::SummaryRow> = sums
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(keys, count)| pb::SummaryRow { keys, count })
        .collect();
    merged.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.keys.cmp(&b.keys)));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = NANOS_PER_HOUR;

    #[test]
    fn a_range_splits_into_whole_hours_and_edges() {
        assert_eq!(
            split_hours((10 * H + 5, 13 * H + 7)),
            HourSplit {
                hours: Some((11 * 3600, 13 * 3600)),
                edges: vec![(10 * H + 5, 11 * H), (13 * H, 13 * H + 7)],
            }
        );
        assert_eq!(
            split_hours((10 * H, 12 * H)),
            HourSplit {
                hours: Some((10 * 3600, 12 * 3600)),
                edges: vec![],
            }
        );
        assert_eq!(
            split_hours((10 * H + 5, 11 * H + 3)),
            HourSplit {
                hours: None,
                edges: vec![(10 * H + 5, 11 * H + 3)],
            }
        );
    }

    #[test]
    fn parts_add_up_per_key() {
        let row = |k: &str, count| SummaryRow {
            keys: vec![k.into()],
            count,
        };
        let merged = merge(vec![row("a", 2), row("b", 5), row("a", 4), row("c", 0)]);
        let flat: Vec<_> = merged
            .iter()
            .map(|r| (r.keys[0].as_str(), r.count))
            .collect();
        assert_eq!(flat, vec![("a", 6), ("b", 5)]);
    }
}
