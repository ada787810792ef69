//! What an operator watches: Prometheus metrics on `/metrics` and liveness on `/healthz`.
//!
//! The auditor is the witness of the audit trail, so the numbers that matter are how much it has
//! verified and stored, how many findings of each kind it raised, how far behind the topic it is,
//! whether ClickHouse is reachable (while it is not, consumption pauses and nothing is lost), and
//! whether it is reading at all (see `crate::watchdog`).

use crate::fleet::FleetMetrics;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

type Labels = [(&'static str, &'static str); 1];

/// Cheap to clone: every metric is an `Arc` inside.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Events verified, by the status they were stored with.
    pub verified: Family<Labels, Counter>,
    /// Event rows written to ClickHouse.
    pub stored: Counter,
    /// Findings raised, by kind.
    pub findings: Family<Labels, Counter>,
    /// Messages behind the end of the assigned partitions (librdkafka's view).
    pub consumer_lag: Gauge,
    /// Seconds to write one batch (events, findings, heads).
    pub insert_seconds: Histogram,
    /// 1 while the last ClickHouse operation succeeded.
    pub clickhouse_up: Gauge,
    /// 1 while this auditor holds no partitions and the group's backlog stands still.
    pub stalled: Gauge,
    /// Per chain and per partition, for a fleet dashboard (see `crate::fleet`).
    pub fleet: FleetMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("verdict_auditor");
        let verified = Family::<Labels, Counter>::default();
        let stored = Counter::default();
        let findings = Family::<Labels, Counter>::default();
        let consumer_lag = Gauge::default();
        let insert_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let clickhouse_up = Gauge::default();
        let stalled = Gauge::default();
        registry.register(
            "events_verified",
            "Events verified, by stored status",
            verified.clone(),
        );
        registry.register("events_stored", "Event rows written", stored.clone());
        registry.register("findings", "Findings raised, by kind", findings.clone());
        registry.register(
            "consumer_lag_messages",
            "Messages behind the end of the assigned partitions",
            consumer_lag.clone(),
        );
        registry.register(
            "insert_seconds",
            "Time to store one batch in ClickHouse",
            insert_seconds.clone(),
        );
        registry.register(
            "clickhouse_up",
            "1 while ClickHouse answers, 0 while inserts are being retried",
            clickhouse_up.clone(),
        );
        registry.register(
            "stalled",
            "1 while partitions this auditor does not hold have a backlog no one commits and it rejoins the group",
            stalled.clone(),
        );
        let fleet = FleetMetrics::default();
        fleet.register(&mut registry);
        Self {
            registry: Arc::new(registry),
            verified,
            stored,
            findings,
            consumer_lag,
            insert_seconds,
            clickhouse_up,
            stalled,
            fleet,
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Serves `/metrics` and `/healthz` on `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .with_state(self);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

async fn metrics(State(metrics): State<Metrics>) -> String {
    metrics.render()
}

/// 200 while the auditor stores what it reads; 503 while it is paused waiting for ClickHouse,
/// or has nothing of its own to read while partitions it does not hold have a backlog no one
/// commits (it is rejoining).
async fn healthz(State(metrics): State<Metrics>) -> (StatusCode, &'static str) {
    if metrics.clickhouse_up.get() != 1 {
        (StatusCode::SERVICE_UNAVAILABLE, "clickhouse unavailable\n")
    } else if metrics.stalled.get() == 1 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "stalled: partitions no one reads while unread messages wait; rejoining the group\n",
        )
    } else {
        (StatusCode::OK, "ok\n")
    }
}
