//! The test harness: real servers on free loopback ports, in temporary directories, stopped when
//! dropped.
//!
//! Every integration test that needs ClickHouse or a Kafka-protocol broker starts its own through
//! this crate, so tests share no global state and can run in parallel. Nothing here is a mock:
//! [`ClickHouse`] runs `clickhouse-server` with the project's config from `deploy/clickhouse/`,
//! [`Broker`] runs `tansu` with SQLite storage (the engine whose offsets are exact; see
//! README "Local broker").

pub mod approvals;
pub mod audit_rows;
pub mod auditor;
pub mod bins;
pub mod broker;
pub mod chains;
pub mod clickhouse;
pub mod cluster;
pub mod forwarder;
pub mod gateways;
pub mod mcp;
pub mod ocsf;
pub mod pki;
pub mod process;
pub mod query;
pub mod rsyslog;
pub mod stateless;
pub mod stdio;
pub mod trail;
pub mod webhook;

pub use broker::Broker;
pub use clickhouse::ClickHouse;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{program} is not installed ({hint})")]
    Missing { program: String, hint: &'static str },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} did not become ready within {secs} s; last log lines:\n{log}")]
    NotReady {
        what: String,
        secs: u64,
        log: String,
    },
    #[error("{0}")]
    Kafka(String),
}

pub type Result<T> = std::result::Result<T, HarnessError>;

use std::time::{Duration, Instant};

/// Polls `done` every 100 ms until it holds; panics after 60 s, naming `what` it waited for.
/// For what a server does after it has answered (a gateway queues a call's outcome without
/// holding the reply for it; a forwarder delivers in the background).
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
