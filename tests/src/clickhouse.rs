//! A real ClickHouse server for one test.
//!
//! Debian's `clickhouse-server` (18.16) locally, any current release elsewhere: the config in
//! `deploy/clickhouse/` works on both. The data directory survives [`ClickHouse::stop`] so fault
//! tests can restart the same server on the same ports.

use crate::process::{find_program, free_port, ServerProcess};
use crate::{HarnessError, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SERVER_XML: &str = include_str!("../../deploy/clickhouse/server.xml");
const USERS_XML: &str = include_str!("../../deploy/clickhouse/users.xml");
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct ClickHouse {
    dir: tempfile::TempDir,
    http_port: u16,
    tcp_port: u16,
    process: Option<ServerProcess>,
}

impl ClickHouse {
    pub fn start() -> Result<Self> {
        Self::start_with(free_port(), free_port(), "")
    }

    /// A server on the given ports with `extra` XML added to its config (cluster settings: see
    /// `crate::cluster`).
    pub fn start_with(http_port: u16, tcp_port: u16, extra: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("verdict-clickhouse-")
            .tempdir()
            .map_err(|source| HarnessError::Io {
                what: "creating a temp dir".into(),
                source,
            })?;
        let data = dir.path().display().to_string();
        let config = SERVER_XML
            .replace("DATA_DIR", &data)
            .replace("HTTP_PORT", &http_port.to_string())
            .replace("TCP_PORT", &tcp_port.to_string())
            .replace("</yandex>", &format!("{extra}</yandex>"));
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).map_err(|source| HarnessError::Io {
                what: format!("writing {name}"),
                source,
            })
        };
        write("config.xml", &config)?;
        write("users.xml", USERS_XML)?;
        let mut server = Self {
            dir,
            http_port,
            tcp_port,
            process: None,
        };
        server.resume()?;
        Ok(server)
    }

    /// True when the server was started and its process has since exited on its own.
    pub fn crashed(&mut self) -> bool {
        self.process.as_mut().is_some_and(ServerProcess::exited)
    }

    /// Starts (or restarts) the server process on the same ports and data.
    pub fn resume(&mut self) -> Result<()> {
        let program = find_program("clickhouse-server", "apt-get install clickhouse-server")?;
        let mut command = Command::new(program);
        command
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .current_dir(self.dir.path());
        let log = self.dir.path().join("server.log");
        let mut process = ServerProcess::spawn("clickhouse-server", command, log)?;
        let port = self.http_port;
        process.wait_ready(START_TIMEOUT, || {
            http_get(port, "/").is_some_and(|body| body.starts_with("Ok."))
        })?;
        self.process = Some(process);
        Ok(())
    }

    /// Kills the server; the data stays for [`ClickHouse::resume`].
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Base URL of the HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The server's process id (`None` while it is stopped).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    /// `host:port` of the native protocol, as `remote()` on another server names this one.
    pub fn tcp_address(&self) -> String {
        format!("127.0.0.1:{}", self.tcp_port)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `clickhouse` crate client for the default database (validation off: 18.16 does not
    /// speak the newer RowBinary-with-types format).
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(self.url())
            .with_validation(false)
    }
}

/// A minimal HTTP/1.0 GET for readiness checks; `None` on any failure.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}
