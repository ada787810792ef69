//! Prometheus metrics and `/healthz`, on their own HTTP listener.
//!
//! Kept off the gRPC port so scrapers need no query token and a load balancer can probe health
//! with plain HTTP. `/healthz` answers 200 only while ClickHouse answers.

use crate::store::Store;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;

type Labels = Vec<(String, String)>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    seconds: Family<Labels, Histogram, fn() -> Histogram>,
    export_rows: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("verdict_query");
        let requests = Family::<Labels, Counter>::default();
        let seconds: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        let export_rows = Counter::default();
        registry.register(
            "requests",
            "gRPC requests by method and status code",
            requests.clone(),
        );
        registry.register(
            "request_seconds",
            "Time to answer a gRPC request (for Export: to start streaming)",
            seconds.clone(),
        );
        registry.register(
            "export_rows",
            "Rows streamed by Export",
            export_rows.clone(),
        );
        Self {
            registry,
            requests,
            seconds,
            export_rows,
        }
    }

    /// Records one finished request.
    pub fn observe(&self, method: &str, code: tonic::Code, started: Instant) {
        let method = vec![("method".to_owned(), method.to_owned())];
        let mut labels = method.clone();
        labels.push(("code".into(), format!("{code:?}")));
        self.requests.get_or_create(&labels).inc();
        self.seconds
            .get_or_create(&method)
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn export_rows(&self, rows: u64) {
        self.export_rows.inc_by(rows);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// The `/metrics` and `/healthz` routes.
pub fn router(metrics: Arc<Metrics>, store: Store) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State((m, _)): State<(Arc<Metrics>, Store)>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
            }),
        )
        .route(
            "/healthz",
            get(|State((_, s)): State<(Arc<Metrics>, Store)>| async move {
                match s.ping().await {
                    Ok(()) => (StatusCode::OK, "ok\n".to_owned()).into_response(),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
                }
            }),
        )
        .with_state((metrics, store))
}
