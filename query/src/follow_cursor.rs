//! Follow cursors: a follower's position as the last delivered `seq` of each chain, never a time.
//!
//! The auditor stores rows late and out of order (redelivery after a restart, a chain whose
//! events arrive after another's), and event times are claims of the gateway. A time cursor
//! would skip an event stored after the follower passed its timestamp, or repeat one; a per-chain
//! `(chain_id, seq)` position names exactly what was delivered, so "everything after it" is
//! well defined whatever the arrival order. A chain the cursor does not name starts at seq 1.
//!
//! On the wire the cursor is `f1.` + unpadded URL-safe base64 of a JSON object
//! `{"chain_id": seq, ...}`: opaque to clients, versioned by its prefix.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::BTreeMap;

const PREFIX: &str = "f1.";

#[derive(Debug, thiserror::Error)]
#[error("cursor: not a Follow cursor ({0})")]
pub struct BadCursor(&'static str);

/// The last delivered seq of each chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions(BTreeMap<String, u64>);

impl Positions {
    /// Positions at the given `(chain_id, seq)` pairs.
    pub fn at(heads: impl IntoIterator<Item = (String, u64)>) -> Self {
        Self(heads.into_iter().collect())
    }

    /// The last delivered seq of `chain_id` (0: nothing yet).
    pub fn get(&self, chain_id: &str) -> u64 {
        self.0.get(chain_id).copied().unwrap_or(0)
    }

    /// Moves `chain_id` forward to `seq` (never back).
    pub fn advance(&mut self, chain_id: &str, seq: u64) {
        if seq > self.get(chain_id) {
            self.0.insert(chain_id.to_owned(), seq);
        }
    }

    /// Stored events not yet delivered, given each chain's highest stored seq.
    pub fn behind(&self, heads: &[(String, u64)]) -> u64 {
        heads
            .iter()
            .map(|(chain, head)| head.saturating_sub(self.get(chain)))
            .sum()
    }

    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(&self.0).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(cursor: &str) -> Result<Self, BadCursor> {
        let encoded = cursor.strip_prefix(PREFIX).ok_or(BadCursor("prefix"))?;
        let json = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| BadCursor("encoding"))?;
        serde_json::from_slice(&json)
            .map(Self)
            .map_err(|_| BadCursor("content"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_only_moves_forward() {
        let mut positions = Positions::default();
        positions.advance("gw-1", 7);
        positions.advance("gw\"2", 3);
        positions.advance("gw-1", 5);
        let back = Positions::decode(&positions.encode()).unwrap();
        assert_eq!(back, positions);
        assert_eq!(back.get("gw-1"), 7);
        assert_eq!(back.get("unknown"), 0);
        assert_eq!(back.behind(&[("gw-1".into(), 10), ("gw-3".into(), 2)]), 5);
    }

    #[test]
    fn rejects_what_it_did_not_make() {
        for bad in ["", "f1.", "f1.!!", "x1.e30", "f1.WzFd"] {
            assert!(Positions::decode(bad).is_err(), "{bad}");
        }
    }
}
