//! Wiring: the query service behind the token interceptor, plus gRPC health and reflection, on one
//! listener (TLS, and client certificates, when configured); `/metrics` and `/healthz` on another.
//! Both stop gracefully on the same signal.
//!
//! Health and reflection need no token: health is for load balancers, and reflection only
//! describes the public `proto/` contract (it lets grpcurl and SIEM tooling discover the API).
//! Reflection is served as v1 and v1alpha, since grpcurl 1.8 and Python's grpcio-reflection only
//! speak v1alpha.

use crate::api::QueryService;
use crate::auth::{AuthConfigError, Tokens};
use crate::config::{QueryConfig, TlsConfig};
use crate::metrics::{self, Metrics};
use crate::store::Store;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use verdict_proto::pb::audit_query_server::AuditQueryServer;
use verdict_proto::{TrustError, TrustedKeys};
use verdict_service::net::accept_no_delay;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error(transparent)]
    Keys(#[from] TrustError),
    #[error("tls: reading {path}: {source}")]
    TlsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("metrics server: {0}")]
    Metrics(std::io::Error),
    #[error("no query tokens configured: every request would be refused")]
    NoTokens,
}

/// The TLS settings from the configured PEM files.
fn server_tls(tls: &TlsConfig) -> Result<ServerTlsConfig, ServeError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            path: path.clone(),
            source,
        })
    };
    let mut config =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

/// Serves until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    config: QueryConfig,
    grpc: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if config.tokens.is_empty() {
        return Err(ServeError::NoTokens);
    }
    let tokens = Tokens::from_config(&config.tokens)?;
    let keys = TrustedKeys::load(&config.trusted_keys, None)?;
    let timeout = Duration::from_secs(config.limits.request_timeout_secs);
    let store = Store::new(&config.clickhouse, config.limits.request_timeout_secs);
    let metrics = Arc::new(Metrics::new());
    let service = QueryService::new(
        store.clone(),
        config.limits.clone(),
        keys,
        Arc::clone(&metrics),
    );

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<AuditQueryServer<QueryService>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(verdict_proto::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let query = AuditQueryServer::with_interceptor(service, move |request| tokens.check(request));

    // One shutdown signal, observed by both servers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let metrics_task = metrics_listener.map(|listener| {
        let app = metrics::router(metrics, store);
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        })
    });
    let mut server = tonic::transport::Server::builder().timeout(timeout);
    if let Some(tls) = &config.tls {
        server = server.tls_config(server_tls(tls)?)?;
    }
    server
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(query)
        .serve_with_incoming_shutdown(accept_no_delay(grpc), stopped(stop_rx))
        .await?;
    if let Some(task) = metrics_task {
        task.await
            .map_err(|e| ServeError::Metrics(std::io::Error::other(e)))?
            .map_err(ServeError::Metrics)?;
    }
    Ok(())
}
