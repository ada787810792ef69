//! Where the tables live and how to reach them: one client definition for the writer and the
//! reader.

use crate::cluster::{Cluster, ClusterError};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    #[serde(default = "default_clickhouse_url")]
    pub url: String,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The cluster (a `remote_servers` entry) the tables live on; absent: one server. See
    /// README "Operations" and the `cluster` module for what changes.
    #[serde(default)]
    pub cluster: Option<String>,
    /// On a cluster, how many replicas of a shard must hold an insert before it succeeds
    /// (`insert_quorum`); absent: one, and the others copy it asynchronously.
    #[serde(default)]
    pub insert_quorum: Option<u32>,
}

impl ClickHouseConfig {
    /// A client for these settings, shared by the auditor and the query service. Validation is
    /// off: ClickHouse 18.16 does not speak RowBinaryWithNamesAndTypes.
    pub fn client(&self) -> clickhouse::Client {
        let mut client = clickhouse::Client::default()
            .with_url(&self.url)
            .with_database(&self.database)
            .with_validation(false);
        if let Some(user) = &self.user {
            client = client.with_user(user);
        }
        if let Some(password) = &self.password {
            client = client.with_password(password);
        }
        if self.cluster.is_some() {
            client = cluster_settings(client, self.insert_quorum);
        }
        client
    }

    /// The cluster layout, checked, when `cluster` is set.
    pub fn cluster(&self) -> Result<Option<Cluster>, ClusterError> {
        self.cluster
            .as_deref()
            .map(|name| Cluster::new(name, &self.database))
            .transpose()
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: default_clickhouse_url(),
            database: default_database(),
            user: None,
            password: None,
            cluster: None,
            insert_quorum: None,
        }
    }
}

fn default_clickhouse_url() -> String {
    "http://127.0.0.1:8123".into()
}

fn default_database() -> String {
    "default".into()
}

/// How every client reads and writes through the distributed tables:
/// - `insert_distributed_sync`: an insert returns once every shard stored its rows, so the
///   auditor commits Kafka offsets only for rows a replica holds (not rows queued on the server
///   that received them);
/// - `load_balancing = in_order` and `prefer_localhost_replica = 0`: every client reads and
///   writes the first live replica of each shard (in `remote_servers` order), so an answer
///   includes every insert acknowledged before it while that replica is up, and auditors taking
///   over a partition read the heads the previous owner wrote;
/// - `max_replica_delay_for_distributed_queries`: after a failover, a replica more than this many
///   seconds behind is passed over while another is fresher;
/// - `distributed_product_mode = global`: a subquery on a distributed table inside `IN` runs once
///   on the server answering, not again on every shard (a chain lives on one shard, but a page's
///   keys are chosen across all of them).
fn cluster_settings(client: clickhouse::Client, quorum: Option<u32>) -> clickhouse::Client {
    let client = client
        .with_setting("insert_distributed_sync", "1")
        .with_setting("load_balancing", "in_order")
        .with_setting("prefer_localhost_replica", "0")
        .with_setting("max_replica_delay_for_distributed_queries", "10")
        .with_setting("distributed_product_mode", "global");
    match quorum {
        Some(quorum) => client.with_setting("insert_quorum", quorum.to_string()),
        None => client,
    }
}
