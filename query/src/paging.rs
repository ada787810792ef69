//! Stable cursor paging, newest first.
//!
//! A page token is the sort key of the last row returned — `(time, chain_id, seq, tie)` —
//! serialised as JSON and base64url-encoded (opaque to clients). The next page asks for rows
//! strictly *before* that key in the order `time DESC, chain_id DESC, seq DESC, tie DESC`. The key
//! is unique per row, so no row is returned twice, and a row present when paging started is never
//! skipped: rows inserted meanwhile sort either before the cursor (seen later) or after it (never
//! seen, as with any snapshot-free reader). No OFFSET is used, so deep pages cost the same as the
//! first.
//!
//! ClickHouse 18.16 reads every matching row before it sorts, however small the `LIMIT`; a page
//! therefore looks in a [`PageWindow`] below its anchor first, widening it until it holds a full
//! page (see `crate::store`).

use crate::filter::{Bound, Param};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use verdict_proto::envelope::MAX_CHAIN_ID_BYTES;
use verdict_proto::pb;

pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// How far below its anchor a page looks, widening in turn, before it reads without a bound.
const WINDOWS_SECS: [i64; 4] = [3600, 86_400, 7 * 86_400, 31 * 86_400];

/// Where a newest-first page starts looking: below `anchor` (the cursor's time, the filter's end,
/// or now), never below `floor` (the filter's start; 0 for none).
#[derive(Debug, Clone, Copy)]
pub struct PageWindow {
    pub anchor: i64,
    pub floor: i64,
}

impl PageWindow {
    /// The first window's lower bound: [`WINDOWS_SECS`]`[0]` below the anchor; `None` (no bound
    /// but the filter's) when that reaches below the floor.
    pub fn first(self) -> Option<i64> {
        self.lower(WINDOWS_SECS[0] * NANOS_PER_SEC)
    }

    /// The lower bound of the window after one reaching down to `lower` held `found` of the
    /// `wanted` rows: twice the span that holds them at the density seen so far, but no wider
    /// than the next of [`WINDOWS_SECS`] (all of it when nothing was found). `None` (no bound but
    /// the filter's) once that reaches below the floor or past the widest window.
    ///
    /// Why estimate: a page of 1,000 attempts an hour and a half deep would otherwise read a whole
    /// day (the next fixed window), most of a WhoTried's time at 10M events (BENCHMARKS.md).
    pub fn widen(self, lower: i64, found: u64, wanted: u64) -> Option<i64> {
        let span = self.anchor.saturating_sub(lower);
        let next = WINDOWS_SECS
            .iter()
            .map(|secs| secs * NANOS_PER_SEC)
            .find(|&next| next > span)?;
        let estimate = if found == 0 {
            next
        } else {
            let needed = span as f64 * wanted as f64 / found as f64;
            (2.0 * needed).min(next as f64) as i64
        };
        self.lower(estimate.max(span + 1))
    }

    fn lower(self, span: i64) -> Option<i64> {
        Some(self.anchor.saturating_sub(span)).filter(|&lower| lower > self.floor)
    }
}

/// The window of a newest-first page: below the cursor, else below the filter's end, else below
/// now; never below the filter's start.
pub fn page_window(filter: Option<&pb::EventFilter>, cursor: Option<&Cursor>) -> PageWindow {
    let (from, to) = filter
        .and_then(|f| f.time.as_ref())
        .map_or((0, 0), |t| (t.from_unix_nanos, t.to_unix_nanos));
    let anchor = match (cursor, to) {
        (Some(c), _) => c.time,
        (None, 0) => verdict_proto::now_unix_nanos(),
        (None, to) => to,
    };
    PageWindow {
        anchor,
        floor: from,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub time: i64,
    pub chain_id: String,
    pub seq: u64,
    /// A further tie-breaker where `(chain_id, seq)` is not unique (findings); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tie: String,
}

/// A finding's tie-breaker is `<kind>/<hex SHA-256>`: far below this.
const MAX_TIE_BYTES: usize = 256;
/// The longest token [`Cursor::encode`] can produce, with room to spare: base64 of a cursor with
/// a 128-byte chain id (JSON-escaped at most 6× per byte) and the longest tie.
const MAX_TOKEN_CHARS: usize = 4 * (6 * MAX_CHAIN_ID_BYTES + MAX_TIE_BYTES + 128) / 3 + 4;

#[derive(Debug, thiserror::Error)]
#[error("page_token is not a token this service issued")]
pub struct BadToken;

impl Cursor {
    /// The place of event `(chain_id, seq)` at `time` (events need no tie-breaker).
    pub fn of_event(time: i64, chain_id: &str, seq: u64) -> Self {
        Self {
            time,
            chain_id: chain_id.to_owned(),
            seq,
            tie: String::new(),
        }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a cursor serialises"))
    }

    /// `None` for an empty token (the first page). A token this service could not have issued —
    /// too long, or naming a chain id no envelope can carry — is refused here, before it reaches
    /// a query (a forged 1 MB chain id would otherwise fail in ClickHouse as UNAVAILABLE).
    pub fn decode(token: &str) -> Result<Option<Self>, BadToken> {
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN_CHARS {
            return Err(BadToken);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| BadToken)?;
        let cursor: Self = serde_json::from_slice(&bytes).map_err(|_| BadToken)?;
        let chain_ok = (1..=MAX_CHAIN_ID_BYTES).contains(&cursor.chain_id.len());
        if !chain_ok || cursor.tie.len() > MAX_TIE_BYTES {
            return Err(BadToken);
        }
        Ok(Some(cursor))
    }
}

/// The sort key columns of a paged table.
#[derive(Debug, Clone, Copy)]
pub struct Keyset {
    pub time: &'static str,
    /// A String expression breaking ties after `(chain_id, seq)`, if needed.
    pub tie: Option<&'static str>,
}

impl Keyset {
    /// `ORDER BY` clause, newest first.
    pub fn order_by(&self) -> String {
        match self.tie {
            Some(tie) => format!("{} DESC, chain_id DESC, seq DESC, {tie} DESC", self.time),
            None => format!("{} DESC, chain_id DESC, seq DESC", self.time),
        }
    }

    /// The condition selecting rows strictly after `cursor` in [`Keyset::order_by`] order
    /// (older ones).
    pub fn after(&self, cursor: &Cursor) -> Bound {
        self.beyond(cursor, "<")
    }

    /// The rows from `newest` to `oldest` inclusive, in [`Keyset::order_by`] order.
    pub fn between(&self, newest: &Cursor, oldest: &Cursor) -> Bound {
        let (newer, older) = (self.beyond(newest, ">"), self.after(oldest));
        let mut params = newer.params;
        params.extend(older.params);
        Bound::new(format!("NOT {} AND NOT {}", newer.sql, older.sql), params)
    }

    /// Rows strictly beyond `cursor` on the side `op` (`<`: older, `>`: newer).
    fn beyond(&self, cursor: &Cursor, op: &str) -> Bound {
        let t = self.time;
        let last = match self.tie {
            Some(tie) => Bound::new(
                format!("seq {op} ? OR (seq = ? AND {tie} {op} ?)"),
                vec![
                    Param::U64(cursor.seq),
                    Param::U64(cursor.seq),
                    Param::Str(cursor.tie.clone()),
                ],
            ),
            None => Bound::new(format!("seq {op} ?"), vec![Param::U64(cursor.seq)]),
        };
        let mut params = vec![
            Param::I64(cursor.time),
            Param::I64(cursor.time),
            Param::Str(cursor.chain_id.clone()),
            Param::Str(cursor.chain_id.clone()),
        ];
        params.extend(last.params);
        Bound::new(
            format!(
                "({t} {op} ? OR ({t} = ? AND (chain_id {op} ? OR (chain_id = ? AND ({})))))",
                last.sql
            ),
            params,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_widen_until_the_floor_then_open() {
        let hour = 3600 * NANOS_PER_SEC;
        let open = PageWindow {
            anchor: 100 * 24 * hour,
            floor: 0,
        };
        let first = open.first().unwrap();
        assert_eq!(first, 99 * 24 * hour + 23 * hour);
        // Nothing found: the next fixed window, a day.
        assert_eq!(open.widen(first, 0, 1000), Some(99 * 24 * hour));
        // 500 of 1,000 in an hour: twice the two hours they need.
        assert_eq!(open.widen(first, 500, 1000), Some(open.anchor - 4 * hour));
        // 1 of 1,000 in an hour: no wider than a day.
        assert_eq!(open.widen(first, 1, 1000), Some(99 * 24 * hour));
        // Past the widest window (31 days): unbounded.
        assert_eq!(open.widen(open.anchor - 31 * 24 * hour, 10, 1000), None);
        let floored = PageWindow {
            anchor: 100 * 24 * hour,
            floor: 99 * 24 * hour,
        };
        assert_eq!(floored.first(), Some(99 * 24 * hour + 23 * hour));
        assert_eq!(floored.widen(floored.first().unwrap(), 0, 10), None);
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            time: 42,
            chain_id: "gw:1'\"".into(),
            seq: 7,
            tie: String::new(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), Some(cursor));
        assert_eq!(Cursor::decode("").unwrap(), None);
        assert!(Cursor::decode("not a token!").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("[1,2]")).is_err());
        let forged = |chain_id: String, tie: String| {
            Cursor::decode(
                &Cursor {
                    time: 1,
                    chain_id,
                    seq: 1,
                    tie,
                }
                .encode(),
            )
        };
        assert!(
            forged("c".repeat(1 << 20), String::new()).is_err(),
            "1 MB chain id"
        );
        assert!(forged("c".repeat(129), String::new()).is_err());
        assert!(forged(String::new(), String::new()).is_err());
        assert!(forged("c".repeat(128), "t".repeat(257)).is_err());
        let longest = "\u{1}".repeat(128);
        assert!(
            forged(longest, "t".repeat(256)).unwrap().is_some(),
            "every issued token decodes"
        );
    }
}
