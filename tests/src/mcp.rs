//! MCP processes for tests: the sample `work-memory` server and the gateway, each listening on a
//! loopback port the OS chose (port 0, reported through `--ready-file`, so no two tests can race
//! for a port), with output in a temp dir, killed on drop.

use crate::bins::cargo_bin;
use crate::process::ServerProcess;
use crate::Result;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the sample server binary.
pub fn work_memory_bin() -> PathBuf {
    cargo_bin("work-memory")
}

/// Path of the gateway binary.
pub fn gateway_bin() -> PathBuf {
    cargo_bin("verdict-gateway")
}

/// A process listening on a loopback HTTP port.
#[derive(Debug)]
pub struct HttpProcess {
    pub port: u16,
    pub dir: tempfile::TempDir,
    process: ServerProcess,
}

impl HttpProcess {
    /// `work-memory --http` with extra arguments.
    pub fn work_memory(args: &[&str]) -> Result<Self> {
        let mut command = Command::new(work_memory_bin());
        command.args(["--http", "127.0.0.1:0"]).args(args);
        Self::spawn(
            "work-memory",
            command,
            tempfile::tempdir().expect("temp dir"),
        )
    }

    /// `verdict-gateway --config <dir>/gateway.toml`; `config` gets `listen` prepended.
    pub fn gateway(config: &str) -> Result<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(dir.path(), &format!("listen = \"127.0.0.1:0\"\n{config}"));
        let mut command = Command::new(gateway_bin());
        command.arg("--config").arg(&path).env("RUST_LOG", "warn");
        Self::spawn("verdict-gateway", command, dir)
    }

    fn spawn(name: &str, mut command: Command, dir: tempfile::TempDir) -> Result<Self> {
        let ready = dir.path().join("ready");
        command.arg("--ready-file").arg(&ready);
        let mut process =
            ServerProcess::spawn(name, command, dir.path().join(format!("{name}.log")))?;
        let mut port = 0;
        process.wait_ready(START_TIMEOUT, || {
            let address = std::fs::read_to_string(&ready).unwrap_or_default();
            port = address
                .rsplit(':')
                .next()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            port != 0
        })?;
        Ok(Self { port, dir, process })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail(50)
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// Writes a gateway config file into `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("writing gateway config");
    path
}
