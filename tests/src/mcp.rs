//! MCP processes for tests: the sample `work-memory` server and the gateway, each listening on a
//! loopback port the OS chose (port 0, reported through `--ready-file`, so no two tests can race
//! for a port), with output in a temp dir, killed on drop.

use crate::bins::cargo_bin;
use crate::process::ServerProcess;
use crate::Result;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
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
    starts: u32,
}

impl HttpProcess {
    /// `work-memory --http` with extra arguments.
    pub fn work_memory(args: &[&str]) -> Result<Self> {
        Self::work_memory_at(0, args)
    }

    /// `work-memory --http 127.0.0.1:<port>` (0: any free port) with extra arguments.
    pub fn work_memory_at(port: u16, args: &[&str]) -> Result<Self> {
        let mut command = Command::new(work_memory_bin());
        command
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args(args);
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

    fn spawn(name: &str, command: Command, dir: tempfile::TempDir) -> Result<Self> {
        let (process, port) = Self::launch(name, command, dir.path(), 1)?;
        Ok(Self {
            port,
            dir,
            process,
            starts: 1,
        })
    }

    /// Starts the gateway again with the same config, journal and keys (after [`Self::kill`] or
    /// [`Self::terminate`]); it listens on a new port.
    pub fn restart_gateway(&mut self) -> Result<()> {
        self.process.kill();
        self.starts += 1;
        let mut command = Command::new(gateway_bin());
        command
            .arg("--config")
            .arg(self.dir.path().join("gateway.toml"))
            .env("RUST_LOG", "warn");
        let (process, port) =
            Self::launch("verdict-gateway", command, self.dir.path(), self.starts)?;
        (self.process, self.port) = (process, port);
        Ok(())
    }

    fn launch(
        name: &str,
        mut command: Command,
        dir: &Path,
        start: u32,
    ) -> Result<(ServerProcess, u16)> {
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        command.arg("--ready-file").arg(&ready);
        let log = dir.join(format!("{name}-{start}.log"));
        let mut process = ServerProcess::spawn(name, command, log)?;
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
        Ok((process, port))
    }

    /// The process id, e.g. to read its memory from `/proc/PID/status`.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The `metrics_listen` address (when its config sets one), e.g. `http://127.0.0.1:PORT`.
    pub fn metrics_url(&self) -> String {
        let address = std::fs::read_to_string(self.dir.path().join("ready.metrics"))
            .expect("the gateway wrote its metrics address");
        format!("http://{}", address.trim())
    }

    /// The value of the sample `name` (without labels) on the gateway's `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.metrics_url()))
            .await
            .expect("scraping /metrics")
            .text()
            .await
            .expect("reading /metrics");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} not in\n{text}"))
            .trim()
            .parse()
            .expect("a number")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail(50)
    }

    /// SIGHUP (the sample server toggles maintenance: `long_task` withdrawn or back).
    pub fn hang_up(&self) {
        self.process.signal("HUP");
    }

    /// SIGUSR1 (the sample server toggles a rug pull: `session_manager`'s description changes).
    pub fn rug_pull(&self) {
        self.process.signal("USR1");
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then waits for the process to exit on its own.
    pub fn terminate(&mut self) {
        self.process.terminate(Duration::from_secs(20));
    }

    /// The gateway's admin API URL (when its config sets `[admin] listen`).
    pub fn admin_url(&self) -> String {
        let address = std::fs::read_to_string(self.dir.path().join("ready.admin"))
            .expect("the gateway wrote its admin address");
        format!("http://{}", address.trim())
    }

    /// The gateway's journal directory (the default `journal` beside its config).
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    /// The gateway's public key (generated beside its config on first start).
    pub fn public_key(&self) -> PathBuf {
        self.dir.path().join("keys").join("verdict.pub")
    }
}

/// An rmcp client of `url` (Streamable HTTP) authenticated with `api_key`.
pub async fn connect(url: &str, api_key: &str) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned())
        .auth_header(api_key.to_owned());
    let client =
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .expect("connecting to the MCP endpoint");
    client
        .set_response_cache_config(rmcp::ClientCacheConfig::disabled())
        .await;
    client
}

/// `n` allowed Work Memory calls (`add_work_memory` in `project`) through `url` as the agent
/// with `api_key`; each must succeed.
pub async fn add_notes(url: &str, api_key: &str, project: &str, n: usize) {
    let agent = connect(url, api_key).await;
    for i in 0..n {
        let content = format!("{project} note {i}");
        let arguments = serde_json::json!({"project": project, "content": content});
        call_tool(&agent, "add_work_memory", arguments)
            .await
            .expect("an allowed call");
    }
}

/// Calls `tool` with object `arguments`.
pub async fn call_tool(
    client: &RunningService<RoleClient, ()>,
    tool: &str,
    arguments: serde_json::Value,
) -> std::result::Result<CallToolResult, ServiceError> {
    let arguments = arguments
        .as_object()
        .expect("arguments are an object")
        .clone();
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
}

/// Writes a gateway config file into `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("writing gateway config");
    path
}
