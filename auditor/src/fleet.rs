//! Per-chain and per-partition gauges for a fleet dashboard: many gateways (one chain each) on
//! one topic, several auditors in one group.
//!
//! Why here and in this shape: only the auditor sees every chain's verified head, what it
//! witnessed and each partition's backlog, so it is where a fleet is watched from. Every value is
//! set from what was *stored* (after a batch's heads and witnessed heads are in ClickHouse), never
//! from what was merely read. Times are Unix timestamps, not ages, as Prometheus expects (an age
//! is `time() - gauge` on the dashboard, and does not need the auditor to be scraped to grow). An
//! auditor keeps reporting chains whose partitions moved to another member, with their last
//! values, so a dashboard takes `max by (chain_id)` over the group's auditors: seqs and times
//! only grow. One series per chain: a fleet of thousands of gateways is thousands of series.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use verdict_schema::{ChainHeadRow, WitnessedHeadRow};

type ChainLabel = [(&'static str, String); 1];
type PartitionLabel = [(&'static str, i32); 1];

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Cheap to clone: every family is an `Arc` inside.
#[derive(Clone, Default)]
pub struct FleetMetrics {
    head_seq: Family<ChainLabel, Gauge>,
    last_event: Family<ChainLabel, Gauge>,
    last_checkpoint: Family<ChainLabel, Gauge>,
    witnessed_seq: Family<ChainLabel, Gauge>,
    witness_lag: Family<ChainLabel, Gauge>,
    partition_lag: Family<PartitionLabel, Gauge>,
}

impl FleetMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let chain = [
            (
                "chain_head_seq",
                "Newest verified and stored seq of a chain",
                &self.head_seq,
            ),
            (
                "chain_last_event_timestamp_seconds",
                "Time (as the gateway signed it) of a chain's newest stored event",
                &self.last_event,
            ),
            (
                "chain_last_checkpoint_timestamp_seconds",
                "Time (as the gateway signed it) of a chain's newest stored checkpoint",
                &self.last_checkpoint,
            ),
            (
                "chain_witnessed_seq",
                "Newest seq of a chain the auditor's witness key signed and stored",
                &self.witnessed_seq,
            ),
            (
                "chain_witness_lag_events",
                "Verified events of a chain not yet covered by a witnessed head",
                &self.witness_lag,
            ),
        ];
        for (name, help, family) in chain {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "partition_lag_messages",
            "Messages behind the end of one assigned partition (librdkafka's view)",
            self.partition_lag.clone(),
        );
    }

    /// Chain heads just stored.
    pub fn heads(&self, rows: &[ChainHeadRow]) {
        for row in rows {
            let label = chain(&row.chain_id);
            self.head_seq.get_or_create(&label).set(seq(row.seq));
            self.last_event
                .get_or_create(&label)
                .set(row.last_event_unix_nanos / NANOS_PER_SEC);
            if row.last_checkpoint_unix_nanos > 0 {
                self.last_checkpoint
                    .get_or_create(&label)
                    .set(row.last_checkpoint_unix_nanos / NANOS_PER_SEC);
            }
            self.update_witness_lag(&label);
        }
    }

    /// Witnessed heads just stored.
    pub fn witnessed<'a>(&self, rows: impl Iterator<Item = &'a WitnessedHeadRow>) {
        for row in rows {
            let label = chain(&row.chain_id);
            let witnessed = self.witnessed_seq.get_or_create(&label);
            witnessed.set(witnessed.get().max(seq(row.seq)));
            drop(witnessed);
            self.update_witness_lag(&label);
        }
    }

    /// The backlog of each assigned partition (unknown lags, `-1`, are left out).
    pub fn partition_lags(&self, lags: &std::collections::BTreeMap<i32, i64>) {
        self.partition_lag.clear();
        for (&partition, &lag) in lags.iter().filter(|(_, &lag)| lag >= 0) {
            self.partition_lag
                .get_or_create(&[("partition", partition)])
                .set(lag);
        }
    }

    /// `head - witnessed`, for chains the witness has signed at least once.
    fn update_witness_lag(&self, label: &ChainLabel) {
        let Some(witnessed) = self.witnessed_seq.get(label).map(|g| g.get()) else {
            return;
        };
        let head = self.head_seq.get(label).map_or(0, |g| g.get());
        self.witness_lag
            .get_or_create(label)
            .set((head - witnessed).max(0));
    }
}

fn chain(chain_id: &str) -> ChainLabel {
    [("chain_id", chain_id.to_owned())]
}

/// A seq as a gauge value (seqs past `i64::MAX` are pinned there).
fn seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use std::collections::BTreeMap;

    fn render(fleet: &FleetMetrics) -> String {
        let mut registry = Registry::with_prefix("verdict_auditor");
        fleet.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn heads_witnessed_heads_and_lags_become_one_series_per_chain() {
        let fleet = FleetMetrics::default();
        let head = |chain_id: &str, seq| ChainHeadRow {
            chain_id: chain_id.into(),
            seq,
            last_event_unix_nanos: 1_700_000_100 * NANOS_PER_SEC,
            last_checkpoint_unix_nanos: 1_700_000_000 * NANOS_PER_SEC,
            ..Default::default()
        };
        fleet.heads(&[head("gw-1", 500), head("gw-2", 7)]);
        let witnessed = WitnessedHeadRow {
            chain_id: "gw-1".into(),
            seq: 480,
            ..Default::default()
        };
        fleet.witnessed([witnessed].iter());
        fleet.partition_lags(&BTreeMap::from([(0, 12), (1, -1)]));
        let text = render(&fleet);
        for line in [
            "verdict_auditor_chain_head_seq{chain_id=\"gw-1\"} 500",
            "verdict_auditor_chain_head_seq{chain_id=\"gw-2\"} 7",
            "verdict_auditor_chain_last_event_timestamp_seconds{chain_id=\"gw-1\"} 1700000100",
            "verdict_auditor_chain_last_checkpoint_timestamp_seconds{chain_id=\"gw-2\"} 1700000000",
            "verdict_auditor_chain_witnessed_seq{chain_id=\"gw-1\"} 480",
            "verdict_auditor_chain_witness_lag_events{chain_id=\"gw-1\"} 20",
            "verdict_auditor_partition_lag_messages{partition=\"0\"} 12",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("witness_lag_events{chain_id=\"gw-2\"}"));
        assert!(!text.contains("partition=\"1\""));
        fleet.heads(&[head("gw-1", 530)]);
        assert!(render(&fleet).contains("chain_witness_lag_events{chain_id=\"gw-1\"} 50"));
    }
}
