//! The forwarder's Prometheus metrics and `/healthz`, on their own HTTP listener (as the gateway,
//! auditor and query service serve theirs), labelled by destination: what each destination got,
//! how far behind the stored trail it is, and what went wrong on the way.
//!
//! - `delivered`: events and findings a receiver accepted;
//! - `failures`: failed attempts (a webhook POST, a syslog write, a lost feed connection);
//! - `retries`: webhook attempts after the first of a batch;
//! - `dead_lettered`: events written to the dead-letter file instead;
//! - `lag_events`: stored events after the destination's cursor (as the query service counted
//!   them when it sent the last delivered one); `lag_seconds`: while it is behind, the age of the
//!   last delivered event (its gateway time), 0 once caught up.

use axum::http::header;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

type Labels = Vec<(String, String)>;
type Seconds = Gauge<f64, AtomicU64>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    delivered: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    dead_lettered: Family<Labels, Counter>,
    lag_events: Family<Labels, Gauge>,
    lag_seconds: Family<Labels, Seconds>,
}

/// One destination's metrics (handles into the shared families).
#[derive(Debug, Clone, Default)]
pub struct DestinationMetrics {
    pub delivered: Counter,
    pub failures: Counter,
    pub retries: Counter,
    pub dead_lettered: Counter,
    pub lag_events: Gauge,
    pub lag_seconds: Seconds,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("verdict_forwarder");
        let metrics = Self {
            delivered: Family::default(),
            failures: Family::default(),
            retries: Family::default(),
            dead_lettered: Family::default(),
            lag_events: Family::default(),
            lag_seconds: Family::default(),
            registry: Registry::default(),
        };
        let counters = [
            (
                "delivered",
                "Events and findings a receiver accepted",
                &metrics.delivered,
            ),
            (
                "failures",
                "Failed delivery attempts and lost feed connections",
                &metrics.failures,
            ),
            (
                "retries",
                "Webhook attempts after the first of a batch",
                &metrics.retries,
            ),
            (
                "dead_lettered",
                "Events written to the dead-letter file",
                &metrics.dead_lettered,
            ),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "lag_events",
            "Stored events after the destination's cursor",
            metrics.lag_events.clone(),
        );
        registry.register(
            "lag_seconds",
            "While behind: age of the last delivered event; 0 when caught up",
            metrics.lag_seconds.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The metrics of destination `name`.
    pub fn destination(&self, name: &str) -> DestinationMetrics {
        let labels = vec![("destination".to_owned(), name.to_owned())];
        DestinationMetrics {
            delivered: self.delivered.get_or_create(&labels).clone(),
            failures: self.failures.get_or_create(&labels).clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            dead_lettered: self.dead_lettered.get_or_create(&labels).clone(),
            lag_events: self.lag_events.get_or_create(&labels).clone(),
            lag_seconds: self.lag_seconds.get_or_create(&labels).clone(),
        }
    }

    fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl DestinationMetrics {
    /// After a delivery: `behind` stored events remain; the last delivered event is from
    /// `time_millis` (Unix ms).
    pub fn lag(&self, behind: u64, time_millis: i64) {
        self.lag_events
            .set(i64::try_from(behind).unwrap_or(i64::MAX));
        let seconds = if behind == 0 {
            0.0
        } else {
            (verdict_proto::now_unix_nanos() / 1_000_000 - time_millis).max(0) as f64 / 1000.0
        };
        self.lag_seconds.set(seconds);
    }
}

/// The `/metrics` and `/healthz` routes (healthy while the process serves).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(m): axum::extract::State<Arc<Metrics>>| async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                },
            ),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics)
}
