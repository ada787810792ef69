//! A real Kafka-protocol broker for one test: `tansu` with SQLite storage.
//!
//! SQLite rather than memory storage, because tansu 0.6's memory engine reports wrong high
//! watermarks and skips the rest of a batch when a consumer resumes inside it; with SQLite both
//! are exact. The database stays in the temp dir across [`Broker::stop`] / [`Broker::resume`],
//! so broker-outage tests restart the same broker with its data.

use crate::process::{find_program, free_port, port_open, ServerProcess};
use crate::{HarnessError, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::process::Command;
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Broker {
    dir: tempfile::TempDir,
    port: u16,
    process: Option<ServerProcess>,
}

impl Broker {
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("verdict-tansu-")
            .tempdir()
            .map_err(|source| HarnessError::Io {
                what: "creating a temp dir".into(),
                source,
            })?;
        let mut broker = Self {
            dir,
            port: free_port(),
            process: None,
        };
        broker.resume()?;
        Ok(broker)
    }

    /// Starts (or restarts) the broker on the same port and storage.
    pub fn resume(&mut self) -> Result<()> {
        let program = find_program(
            "tansu",
            "cargo install tansu --locked --features dynostore,libsql",
        )?;
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new(program);
        command
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            // tansu joins the sqlite path onto its working directory: keep it relative.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path());
        let log = self.dir.path().join(format!("broker-{}.log", self.port));
        let mut process = ServerProcess::spawn("tansu broker", command, log)?;
        let port = self.port;
        process.wait_ready(START_TIMEOUT, || port_open(port))?;
        self.process = Some(process);
        Ok(())
    }

    /// Kills the broker (SIGKILL); its storage stays for [`Broker::resume`].
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// `bootstrap.servers` for Kafka clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic through the Kafka admin API.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .map_err(|e| HarnessError::Kafka(e.to_string()))?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .map_err(|e| HarnessError::Kafka(e.to_string()))?;
        for result in results {
            result.map_err(|(topic, code)| {
                HarnessError::Kafka(format!("creating topic {topic}: {code}"))
            })?;
        }
        Ok(())
    }
}
