//! A stdio MCP process driven the way a desktop client drives one: launched as a command, spoken
//! to in newline-delimited JSON-RPC on its stdin/stdout, and stopped by closing stdin or by a
//! signal. Raw lines rather than an SDK client, so tests can send what clients send (bytes that
//! are not UTF-8, old protocol versions) and signal the process at a chosen point.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running stdio process; killed on drop.
pub struct StdioProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    log: PathBuf,
}

impl StdioProcess {
    /// Starts `command` with piped stdin/stdout and stderr in `log`.
    pub fn spawn(mut command: Command, log: &Path) -> Self {
        let stderr = std::fs::File::create(log).expect("creating the log file");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("starting the stdio process");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Self {
            child,
            stdin,
            stdout,
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process runs")
    }

    /// Writes `bytes` followed by a newline.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(bytes).await.expect("writing stdin");
        stdin.write_all(b"\n").await.expect("writing stdin");
        stdin.flush().await.expect("flushing stdin");
    }

    pub async fn send(&mut self, message: &Value) {
        self.send_raw(message.to_string().as_bytes()).await;
    }

    /// The next message on stdout.
    pub async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(REPLY_TIMEOUT, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("no message within 30 s; log:\n{}", self.log()))
            .expect("reading stdout")
            .unwrap_or_else(|| panic!("stdout closed; log:\n{}", self.log()));
        serde_json::from_str(&line).expect("stdout lines are JSON")
    }

    /// The reply to request `id`, skipping what comes before it (notifications).
    pub async fn reply_to(&mut self, id: &Value) -> Value {
        loop {
            let message = self.recv().await;
            if &message["id"] == id && message.get("method").is_none() {
                return message;
            }
        }
    }

    /// Sends request `id` and returns its reply.
    pub async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        let id = json!(id);
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.reply_to(&id).await
    }

    /// The handshake-era opening: `initialize` with `version`, then `notifications/initialized`.
    pub async fn initialize(&mut self, version: &str) -> Value {
        let params = json!({"protocolVersion": version, "capabilities": {},
            "clientInfo": {"name": "stdio-test", "version": "1"}});
        let reply = self.request(0, "initialize", params).await;
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        reply
    }

    /// Closes stdin: the end of input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `signal` (a `kill` name such as `TERM`).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit on its own.
    pub async fn wait(&mut self) -> ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("did not exit within 30 s; log:\n{}", self.log()))
            .expect("waiting for the process")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What `/proc/<pid>/stat` says about a live process: (parent pid, process group).
pub fn proc_stat(pid: u32) -> Option<(u32, u32)> {
    let fields = crate::process::stat_fields(pid)?;
    Some((fields.get(1)?.parse().ok()?, fields.get(2)?.parse().ok()?))
}

/// Every live process: (pid, parent pid, process group).
pub fn processes() -> Vec<(u32, u32, u32)> {
    std::fs::read_dir("/proc")
        .expect("reading /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| proc_stat(pid).map(|(ppid, pgrp)| (pid, ppid, pgrp)))
        .collect()
}
