//! Stable cursor paging, newest first.
//!
//! A page token is the sort key of the last row returned — `(time, chain_id, seq, tie)` —
//! serialised as JSON and base64url-encoded (opaque to clients). The next page asks for rows
//! strictly *before* that key in the order `time DESC, chain_id DESC, seq DESC, tie DESC`. The key
//! is unique per row, so no row is returned twice, and a row present when paging started is never
//! skipped: rows inserted meanwhile sort either before the cursor (seen later) or after it (never
//! seen, as with any snapshot-free reader). No OFFSET is used, so deep pages cost the same as the
//! first.

use crate::filter::{Bound, Param};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub time: i64,
    pub chain_id: String,
    pub seq: u64,
    /// A further tie-breaker where `(chain_id, seq)` is not unique (findings); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tie: String,
}

#[derive(Debug, thiserror::Error)]
#[error("page_token is not a token this service issued")]
pub struct BadToken;

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a cursor serialises"))
    }

    /// `None` for an empty token (the first page).
    pub fn decode(token: &str) -> Result<Option<Self>, BadToken> {
        if token.is_empty() {
            return Ok(None);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| BadToken)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| BadToken)
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

    /// The condition selecting rows strictly after `cursor` in [`Keyset::order_by`] order.
    pub fn after(&self, cursor: &Cursor) -> Bound {
        let t = self.time;
        let last = match self.tie {
            Some(tie) => Bound::new(
                format!("seq < ? OR (seq = ? AND {tie} < ?)"),
                vec![
                    Param::U64(cursor.seq),
                    Param::U64(cursor.seq),
                    Param::Str(cursor.tie.clone()),
                ],
            ),
            None => Bound::new("seq < ?", vec![Param::U64(cursor.seq)]),
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
                "({t} < ? OR ({t} = ? AND (chain_id < ? OR (chain_id = ? AND ({})))))",
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
    }
}
