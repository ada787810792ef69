//! A replicated, sharded ClickHouse cluster for one test: one ZooKeeper (Debian's `zookeeper`
//! package, a one-node ensemble) and one `clickhouse-server` per replica of each shard, on free
//! loopback ports, each with `remote_servers`, `macros` and `zookeeper` settings generated into
//! its temp dir, all killed when dropped.
//!
//! Why real servers: what a cluster changes (replication through ZooKeeper, `ON CLUSTER` DDL,
//! distributed inserts and reads, a replica catching up after an outage) is server behaviour no
//! single server or mock shows. The cluster is named [`CLUSTER`]; each replica's `{replica}` macro
//! is unique across the cluster (`ch-<shard>-<replica>`), as the migrations table needs.

use crate::clickhouse::ClickHouse;
use crate::process::{free_port, ServerProcess};
use crate::{HarnessError, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The cluster's name in `remote_servers` (and in the services' `[clickhouse] cluster`).
pub const CLUSTER: &str = "verdict";
const ZK_SCRIPT: &str = "/usr/share/zookeeper/bin/zkServer.sh";
const ZK_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A one-node ZooKeeper ensemble.
#[derive(Debug)]
pub struct ZooKeeper {
    // Dropped (killed) before its directory is removed.
    _process: ServerProcess,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ZooKeeper {
    pub fn start() -> Result<Self> {
        if !Path::new(ZK_SCRIPT).is_file() {
            return Err(HarnessError::Missing {
                program: ZK_SCRIPT.into(),
                hint: "apt-get install zookeeper (scripts/deps.sh)",
            });
        }
        let dir = temp_dir("verdict-zookeeper-")?;
        let port = free_port();
        let config = format!(
            "tickTime=1000\ndataDir={}/data\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n4lw.commands.whitelist=ruok\n",
            dir.path().display()
        );
        let config_path = dir.path().join("zoo.cfg");
        write(&config_path, &config)?;
        let mut command = Command::new(ZK_SCRIPT);
        command
            .arg("start-foreground")
            .arg(&config_path)
            .env("ZOO_LOG_DIR", dir.path())
            .env("JVMFLAGS", "-Xmx256m");
        let mut process = ServerProcess::spawn("zookeeper", command, dir.path().join("zk.log"))?;
        process.wait_ready(ZK_START_TIMEOUT, || ruok(port))?;
        Ok(Self {
            _process: process,
            port,
            _dir: dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// ZooKeeper's "are you ok" four-letter command answers `imok`.
fn ruok(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
    else {
        return false;
    };
    let mut answer = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_ok()
        && stream.write_all(b"ruok").is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer == "imok"
}

/// Shards × replicas per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub shards: usize,
    pub replicas: usize,
}

impl Layout {
    /// One shard on two replicas.
    pub const REPLICATED: Layout = Layout {
        shards: 1,
        replicas: 2,
    };
    /// Two shards of one replica each.
    pub const SHARDED: Layout = Layout {
        shards: 2,
        replicas: 1,
    };
}

/// How long a new cluster is watched for servers that die just after start (see
/// [`ClickHouseCluster::settle`]): `SETTLE_CHECKS` × `SETTLE_PAUSE`.
const SETTLE_CHECKS: u32 = 12;
const SETTLE_PAUSE: Duration = Duration::from_millis(250);

/// The servers of a [`Layout`], coordinated by their own [`ZooKeeper`].
#[derive(Debug)]
pub struct ClickHouseCluster {
    // Servers stop before ZooKeeper (fields drop in order).
    servers: Vec<ClickHouse>,
    layout: Layout,
    _zookeeper: ZooKeeper,
}

impl ClickHouseCluster {
    pub fn start(layout: Layout) -> Result<Self> {
        let zookeeper = ZooKeeper::start()?;
        let count = layout.shards * layout.replicas;
        let ports: Vec<(u16, u16, u16)> = (0..count)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let remote_servers = remote_servers(layout, &ports);
        let servers = ports
            .iter()
            .enumerate()
            .map(|(i, &(http, tcp, interserver))| {
                let (shard, replica) = (i / layout.replicas + 1, i % layout.replicas + 1);
                let extra = format!(
                    "<interserver_http_port>{interserver}</interserver_http_port>\
                     <interserver_http_host>127.0.0.1</interserver_http_host>\
                     <zookeeper><node><host>127.0.0.1</host><port>{zk}</port></node></zookeeper>\
                     <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>\
                     <macros><shard>{shard}</shard><replica>ch-{shard}-{replica}</replica></macros>\
                     {remote_servers}",
                    zk = zookeeper.port(),
                );
                ClickHouse::start_with(http, tcp, &extra)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut cluster = Self {
            servers,
            layout,
            _zookeeper: zookeeper,
        };
        cluster.settle()?;
        Ok(cluster)
    }

    /// Restarts servers that die just after start. ClickHouse 18.16's DDL worker can segfault
    /// (`zkutil::ZooKeeper::createImpl`) when its first ZooKeeper handshake fails, after the
    /// server already answers HTTP; `ON CLUSTER` DDL then waits for that replica forever (a CI
    /// run hung for over an hour in `verdict-auditor --migrate-only`).
    fn settle(&mut self) -> Result<()> {
        for _ in 0..SETTLE_CHECKS {
            std::thread::sleep(SETTLE_PAUSE);
            for server in &mut self.servers {
                if server.crashed() {
                    eprintln!("{}: died after start; restarting it", server.url());
                    server.resume()?;
                }
            }
        }
        Ok(())
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Every server, shard by shard, replicas in order.
    pub fn servers(&self) -> &[ClickHouse] {
        &self.servers
    }

    /// Replica `replica` (0-based) of shard `shard` (0-based).
    pub fn server_mut(&mut self, shard: usize, replica: usize) -> &mut ClickHouse {
        &mut self.servers[shard * self.layout.replicas + replica]
    }

    /// The first server's HTTP URL: where the services connect.
    pub fn url(&self) -> String {
        self.servers[0].url()
    }
}

/// `<remote_servers>` naming every server of `layout` under [`CLUSTER`]; replicas of a shard
/// replicate among themselves (`internal_replication`), so a distributed insert writes one.
fn remote_servers(layout: Layout, ports: &[(u16, u16, u16)]) -> String {
    let shards: String = ports
        .chunks(layout.replicas)
        .map(|replicas| {
            let replicas: String = replicas
                .iter()
                .map(|(_, tcp, _)| {
                    format!("<replica><host>127.0.0.1</host><port>{tcp}</port></replica>")
                })
                .collect();
            format!("<shard><internal_replication>true</internal_replication>{replicas}</shard>")
        })
        .collect();
    format!("<remote_servers><{CLUSTER}>{shards}</{CLUSTER}></remote_servers>")
}

fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| HarnessError::Io {
            what: "creating a temp dir".into(),
            source,
        })
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| HarnessError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}
