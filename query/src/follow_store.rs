//! The ClickHouse reads of `Follow` ([`crate::follow`]): where each chain's stored events end,
//! and how far a chain is stored without a hole, so a follower never passes an event that the
//! auditor has not stored yet (late or out-of-order arrival).
//!
//! A hole is waited for until the event stored after it is `gap_grace_secs` old by the auditor's
//! `ingested_at` (never a time the event claims); then it is taken as a real gap of the chain
//! (the auditor records those as `gap` findings) and passed.

use crate::store::{Store, StoreError};

impl Store {
    /// The highest stored seq of every chain.
    pub async fn stored_heads(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .raw_query("SELECT chain_id, max(seq) FROM events GROUP BY chain_id ORDER BY chain_id")
            .fetch_all()
            .await?)
    }

    /// The highest seq of every chain among events that claim a time before `unix_nanos`.
    pub async fn heads_before(&self, unix_nanos: i64) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .raw_query(
                "SELECT chain_id, max(seq) FROM events WHERE time_unix_nanos < ? \
                 GROUP BY chain_id ORDER BY chain_id",
            )
            .bind(unix_nanos)
            .fetch_all()
            .await?)
    }

    /// The highest `s <= to` such that every seq in `after+1..=s` of `chain_id` is stored or is
    /// a hole older than `gap_grace_secs` (`after` when the next seq is still awaited).
    pub async fn stored_through(
        &self,
        chain_id: &str,
        (after, to): (u64, u64),
        gap_grace_secs: i64,
    ) -> Result<u64, StoreError> {
        let seqs: Vec<(u64, i64)> = self
            .raw_query(
                "SELECT seq, toInt64(now()) - toInt64(min(ingested_at)) FROM events \
                 WHERE chain_id = ? AND seq > ? AND seq <= ? GROUP BY seq ORDER BY seq",
            )
            .bind(chain_id)
            .bind(after)
            .bind(to)
            .fetch_all()
            .await?;
        Ok(contiguous_end(after, &seqs, gap_grace_secs))
    }
}

/// See [`Store::stored_through`]: `seqs` are the stored seqs above `after` (ascending) with the
/// age in seconds of their first stored copy.
fn contiguous_end(after: u64, seqs: &[(u64, i64)], gap_grace_secs: i64) -> u64 {
    let mut end = after;
    for &(seq, age) in seqs {
        if seq != end + 1 && age < gap_grace_secs {
            break;
        }
        end = seq;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::contiguous_end;

    #[test]
    fn waits_at_a_young_hole_and_passes_an_old_one() {
        let young = [(5, 100), (6, 100), (8, 1), (9, 1)];
        assert_eq!(contiguous_end(4, &young, 30), 6);
        let old = [(5, 100), (6, 100), (8, 31), (9, 1)];
        assert_eq!(contiguous_end(4, &old, 30), 9);
        assert_eq!(contiguous_end(4, &[(6, 1)], 30), 4);
        assert_eq!(contiguous_end(4, &[], 30), 4);
    }
}
