//! Follow cursors: a follower's position as the last delivered `seq` of each chain, never a time.
//!
//! The auditor stores rows late and out of order (redelivery after a restart, a chain whose
//! events arrive after another's), and event times are claims of the gateway. A time cursor
//! would skip an event stored after the follower passed its timestamp, or repeat one; a per-chain
//! `(chain_id, seq)` position names exactly what was delivered, so "everything after it" is
//! well defined whatever the arrival order. A chain the cursor does not name starts at seq 1.
//!
//! Findings have positions of their own, also never a time. A finding raised by a message on the
//! topic is placed by that message's `(partition, offset)`: the auditor stores each batch's
//! findings in one insert, batches in offset order, and a redelivered message yields its finding
//! again at the same offset, so "the offset of the last delivered finding and how many findings
//! at that offset were delivered" names exactly what was delivered, across auditor restarts. A
//! `silent_chain` finding (raised by no message) is placed by its chain and seq: one per seq at
//! which a chain fell silent.
//!
//! On the wire the cursor is `f2.` + unpadded URL-safe base64 of a JSON object
//! `{"e": {"chain_id": seq}, "f": {"partition": [offset, n]}, "s": {"chain_id": seq}}`: opaque to
//! clients, versioned by its prefix. An `f1.` cursor (events only, `{"chain_id": seq}`) is still
//! read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const PREFIX: &str = "f2.";
const EVENTS_ONLY_PREFIX: &str = "f1.";

#[derive(Debug, thiserror::Error)]
#[error("cursor: not a Follow cursor ({0})")]
pub struct BadCursor(&'static str);

/// Where a follower is: the last delivered seq of each chain, and its findings' positions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Positions {
    #[serde(rename = "e", default)]
    events: BTreeMap<String, u64>,
    /// Per partition: the offset of the last delivered finding, and how many findings at that
    /// offset (in [`crate::follow_findings`] order) were delivered.
    #[serde(rename = "f", default)]
    findings: BTreeMap<i32, (i64, u32)>,
    /// Per chain: the seq of the last delivered `silent_chain` finding.
    #[serde(rename = "s", default)]
    silent: BTreeMap<String, u64>,
}

impl Positions {
    /// Positions at the given `(chain_id, seq)` pairs.
    pub fn at(heads: impl IntoIterator<Item = (String, u64)>) -> Self {
        Self {
            events: heads.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Also positioned after the given findings: `offsets` per partition (the highest offset
    /// that raised a finding) and `silent` per chain.
    pub fn after_findings(
        mut self,
        offsets: impl IntoIterator<Item = (i32, i64)>,
        silent: impl IntoIterator<Item = (String, u64)>,
    ) -> Self {
        self.findings = offsets
            .into_iter()
            .map(|(partition, offset)| (partition, (offset.saturating_add(1), 0)))
            .collect();
        self.silent = silent.into_iter().collect();
        self
    }

    /// The last delivered seq of `chain_id` (0: nothing yet).
    pub fn get(&self, chain_id: &str) -> u64 {
        self.events.get(chain_id).copied().unwrap_or(0)
    }

    /// Moves `chain_id` forward to `seq` (never back).
    pub fn advance(&mut self, chain_id: &str, seq: u64) {
        if seq > self.get(chain_id) {
            self.events.insert(chain_id.to_owned(), seq);
        }
    }

    /// Every partition's finding position: `(partition, offset, delivered at that offset)`.
    pub fn finding_offsets(&self) -> impl Iterator<Item = (i32, i64, u32)> + '_ {
        self.findings
            .iter()
            .map(|(&p, &(offset, n))| (p, offset, n))
    }

    /// Records one more delivered finding raised at `(partition, offset)` (never moves back).
    pub fn advance_finding(&mut self, partition: i32, offset: i64) {
        let position = self.findings.entry(partition).or_insert((offset, 0));
        if offset > position.0 {
            *position = (offset, 1);
        } else if offset == position.0 {
            position.1 += 1;
        }
    }

    /// Every chain's last delivered `silent_chain` seq.
    pub fn silent_seqs(&self) -> impl Iterator<Item = (&str, u64)> {
        self.silent
            .iter()
            .map(|(chain, &seq)| (chain.as_str(), seq))
    }

    /// Records the delivered `silent_chain` finding of `chain_id` at `seq`.
    pub fn advance_silent(&mut self, chain_id: &str, seq: u64) {
        let position = self.silent.entry(chain_id.to_owned()).or_default();
        *position = (*position).max(seq);
    }

    /// Stored events not yet delivered, given each chain's highest stored seq.
    pub fn behind(&self, heads: &[(String, u64)]) -> u64 {
        heads
            .iter()
            .map(|(chain, head)| head.saturating_sub(self.get(chain)))
            .sum()
    }

    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(cursor: &str) -> Result<Self, BadCursor> {
        if let Some(encoded) = cursor.strip_prefix(EVENTS_ONLY_PREFIX) {
            return json::<BTreeMap<String, u64>>(encoded).map(Self::at);
        }
        let encoded = cursor.strip_prefix(PREFIX).ok_or(BadCursor("prefix"))?;
        json(encoded)
    }
}

fn json<T: serde::de::DeserializeOwned>(encoded: &str) -> Result<T, BadCursor> {
    let json = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| BadCursor("encoding"))?;
    serde_json::from_slice(&json).map_err(|_| BadCursor("content"))
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
        positions.advance_finding(2, 40);
        positions.advance_finding(2, 40);
        positions.advance_finding(2, 39);
        positions.advance_silent("gw-1", 4);
        let back = Positions::decode(&positions.encode()).unwrap();
        assert_eq!(back, positions);
        assert_eq!(back.get("gw-1"), 7);
        assert_eq!(back.get("unknown"), 0);
        assert_eq!(back.behind(&[("gw-1".into(), 10), ("gw-3".into(), 2)]), 5);
        assert_eq!(back.finding_offsets().collect::<Vec<_>>(), [(2, 40, 2)]);
        assert_eq!(back.silent_seqs().collect::<Vec<_>>(), [("gw-1", 4)]);
        positions.advance_finding(2, 41);
        assert_eq!(
            positions.finding_offsets().collect::<Vec<_>>(),
            [(2, 41, 1)]
        );
    }

    #[test]
    fn reads_an_events_only_cursor() {
        let old = format!("f1.{}", URL_SAFE_NO_PAD.encode(br#"{"gw-1":7}"#));
        let positions = Positions::decode(&old).unwrap();
        assert_eq!(positions, Positions::at([("gw-1".to_owned(), 7)]));
    }

    #[test]
    fn starts_after_the_stored_findings() {
        let positions = Positions::default().after_findings([(0, 9)], [("gw".to_owned(), 3)]);
        assert_eq!(
            positions.finding_offsets().collect::<Vec<_>>(),
            [(0, 10, 0)]
        );
        assert_eq!(positions.silent_seqs().collect::<Vec<_>>(), [("gw", 3)]);
    }

    #[test]
    fn rejects_what_it_did_not_make() {
        for bad in [
            "",
            "f1.",
            "f1.!!",
            "x1.e30",
            "f1.WzFd",
            "f2.WzFd",
            "f2.eyJ4Ijp7fX0",
        ] {
            assert!(Positions::decode(bad).is_err(), "{bad}");
        }
    }
}
