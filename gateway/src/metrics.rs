//! What an operator watches on `/metrics` (served on `metrics_listen` only, never on the agents'
//! port): decisions by kind, call outcomes, refusals before authentication, open HTTP
//! connections, how far the journal has got, its disk space, how far behind it the Kafka
//! shipper is, and whether the witness's heads agree with the journal.
//!
//! Journal and shipper positions are read when scraped, so they cost nothing on the call path.

use crate::audit::shipper::ShipperStatus;
use crate::audit::witness_watch::WitnessStatus;
use crate::audit::Recorder;
use crate::audit::RefusalReason;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use verdict_proto::pb::{self, event_body::Kind};
use verdict_proto::Label;

type Labels = [(&'static str, String); 1];

pub struct GatewayMetrics {
    registry: Registry,
    decisions: Family<Labels, Counter>,
    outcomes: Family<Labels, Counter>,
    journal_seq: Gauge,
    journal_writable: Gauge,
    journal_free_bytes: Gauge,
    journal_space: Gauge,
    refusals: Family<Labels, Counter>,
    connections: Gauge,
    shipped_seq: Gauge,
    shipper_lag: Gauge,
    shipper: OnceLock<Arc<ShipperStatus>>,
    witness_agreed_seq: Gauge,
    witness_disagreements: Gauge,
    witness_rejected: Gauge,
    witness: OnceLock<Arc<WitnessStatus>>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("verdict_gateway");
        let metrics = Self {
            decisions: Family::default(),
            outcomes: Family::default(),
            journal_seq: Gauge::default(),
            journal_writable: Gauge::default(),
            journal_free_bytes: Gauge::default(),
            journal_space: Gauge::default(),
            refusals: Family::default(),
            connections: Gauge::default(),
            shipped_seq: Gauge::default(),
            shipper_lag: Gauge::default(),
            shipper: OnceLock::new(),
            witness_agreed_seq: Gauge::default(),
            witness_disagreements: Gauge::default(),
            witness_rejected: Gauge::default(),
            witness: OnceLock::new(),
            registry: Registry::default(),
        };
        registry.register(
            "decisions",
            "Decisions journaled, by kind",
            metrics.decisions.clone(),
        );
        registry.register(
            "outcomes",
            "Forwarded calls' outcomes, by kind",
            metrics.outcomes.clone(),
        );
        registry.register(
            "journal_seq",
            "Seq of the newest journaled event",
            metrics.journal_seq.clone(),
        );
        registry.register(
            "journal_writable",
            "1 while the journal accepts writes; 0: calls are refused",
            metrics.journal_writable.clone(),
        );
        registry.register(
            "journal_free_bytes",
            "Free bytes on the journal's file system (for an unprivileged writer)",
            metrics.journal_free_bytes.clone(),
        );
        registry.register(
            "journal_space",
            "Journal disk space: 0 ample, 1 below alarm_free_bytes, 2 below min_free_bytes (refusals only counted)",
            metrics.journal_space.clone(),
        );
        registry.register(
            "refusals",
            "Requests refused before authentication, by reason (journaled in aggregate)",
            metrics.refusals.clone(),
        );
        registry.register(
            "http_connections",
            "HTTP connections open on the agents' listener",
            metrics.connections.clone(),
        );
        registry.register(
            "shipped_seq",
            "Highest seq the Kafka broker acknowledged",
            metrics.shipped_seq.clone(),
        );
        registry.register(
            "shipper_lag_events",
            "Journaled events not yet acknowledged by Kafka",
            metrics.shipper_lag.clone(),
        );
        registry.register(
            "witness_agreed_seq",
            "The highest seq of this chain the witness signed and the journal agrees with",
            metrics.witness_agreed_seq.clone(),
        );
        // Gauges read from the watcher's counters: `_total` names, monotonic values.
        registry.register(
            "witness_disagreements_total",
            "Witnessed heads of this chain that this gateway never wrote (its key leaked)",
            metrics.witness_disagreements.clone(),
        );
        registry.register(
            "witness_heads_rejected_total",
            "Heads on the witness topic whose signature does not verify",
            metrics.witness_rejected.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl GatewayMetrics {
    /// Counts a journaled event.
    pub fn observe(&self, body: &pb::EventBody) {
        match &body.kind {
            Some(Kind::Decision(d)) => {
                self.decisions
                    .get_or_create(&[(
                        "decision",
                        pb::DecisionKind::label_of(d.decision).to_owned(),
                    )])
                    .inc();
            }
            Some(Kind::Outcome(o)) => {
                let kind = pb::OutcomeKind::label_of(o.kind).to_owned();
                self.outcomes.get_or_create(&[("outcome", kind)]).inc();
            }
            _ => {}
        }
    }

    /// Counts a request refused before authentication.
    pub fn refused(&self, reason: RefusalReason) {
        self.refusals
            .get_or_create(&[("reason", reason.label().to_owned())])
            .inc();
    }

    /// Counts an open HTTP connection until the guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections.inc();
        OpenConnection(self.connections.clone())
    }

    /// Reports the shipper's progress from now on.
    pub fn watch_shipper(&self, status: Arc<ShipperStatus>) {
        let _ = self.shipper.set(status);
    }

    /// Reports the witness watcher's comparisons from now on.
    pub fn watch_witness(&self, status: Arc<WitnessStatus>) {
        let _ = self.witness.set(status);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, recorder: &Recorder) -> String {
        let written = *recorder.written().borrow();
        self.journal_seq.set(written as i64);
        self.journal_writable.set(i64::from(recorder.healthy()));
        let space = recorder.space();
        self.journal_free_bytes
            .set(i64::try_from(space.free_bytes()).unwrap_or(i64::MAX));
        self.journal_space.set(space.level() as i64);
        if let Some(shipper) = self.shipper.get() {
            let shipped = shipper.acknowledged.load(Ordering::Relaxed);
            self.shipped_seq.set(shipped as i64);
            self.shipper_lag.set(written.saturating_sub(shipped) as i64);
        }
        if let Some(witness) = self.witness.get() {
            let read = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed) as i64;
            self.witness_agreed_seq.set(read(&witness.agreed_seq));
            self.witness_disagreements.set(read(&witness.disagreements));
            self.witness_rejected.set(read(&witness.rejected));
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// An open connection, counted in `verdict_gateway_http_connections` while it lives.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
