//! Stdio upstreams: a child process speaking newline-delimited JSON-RPC.
//!
//! The child is launched on first use and relaunched on the next request after it dies (each
//! launch is a new generation, so the upstream handshakes again). Replies are matched to
//! requests by id; progress notifications go to the [`NotificationRouter`]; requests the server makes
//! of the gateway are answered (`ping`) or refused (`-32601`), never left hanging.
//!
//! Each child runs in a process group of its own, so the gateway can stop it and anything it
//! started: [`StdioTransport::stop`] sends the group SIGTERM and, after a grace period, SIGKILL.
//! Closing stdin is not enough (the real Work Memory server keeps running after stdin EOF), and
//! its own group also keeps a terminal's Ctrl-C meant for the gateway from killing it mid-drain.

use super::{NotificationRouter, UpstreamError};
use crate::jsonrpc;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Lines queued for the child's stdin.
const WRITE_QUEUE: usize = 256;
/// How long a stopped child's process group has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

struct Connection {
    writer: mpsc::Sender<String>,
    dead: CancellationToken,
    child: Child,
}

/// How to launch a stdio upstream.
pub struct Launch<'a> {
    pub command: &'a Path,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a Path>,
}

pub struct StdioTransport {
    name: String,
    command: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    progress: Arc<NotificationRouter>,
    pending: Pending,
    connection: tokio::sync::Mutex<Option<Connection>>,
    generation: AtomicU64,
    /// Set by [`Self::stop`]: the child is not relaunched.
    stopped: AtomicBool,
}

impl StdioTransport {
    pub fn new(name: &str, launch: Launch<'_>, progress: Arc<NotificationRouter>) -> Self {
        Self {
            name: name.to_owned(),
            command: launch.command.to_owned(),
            args: launch.args.to_vec(),
            env: launch.env.clone(),
            cwd: launch.cwd.map(Path::to_owned),
            progress,
            pending: Pending::default(),
            connection: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The live connection's writer and death signal, launching the child if needed.
    async fn connection(&self) -> Result<(mpsc::Sender<String>, CancellationToken), UpstreamError> {
        let mut guard = self.connection.lock().await;
        if self.stopped.load(Ordering::SeqCst) {
            return Err(UpstreamError::Unreachable(
                "the gateway is shutting down".into(),
            ));
        }
        if let Some(conn) = guard.as_ref().filter(|c| !c.dead.is_cancelled()) {
            return Ok((conn.writer.clone(), conn.dead.clone()));
        }
        let conn = self.spawn()?;
        let handles = (conn.writer.clone(), conn.dead.clone());
        *guard = Some(conn);
        Ok(handles)
    }

    fn spawn(&self) -> Result<Connection, UpstreamError> {
        let mut command = Command::new(&self.command);
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let mut child = command
            .args(&self.args)
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                UpstreamError::Unreachable(format!("launching {}: {e}", self.command.display()))
            })?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        tracing::info!(upstream = %self.name, pid = child.id(), "launched stdio upstream");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let dead = CancellationToken::new();
        let (writer, mut lines) = mpsc::channel::<String>(WRITE_QUEUE);
        let write_dead = dead.clone();
        tokio::spawn(async move {
            while let Some(line) = lines.recv().await {
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            write_dead.cancel();
        });
        let reader = Reader {
            name: self.name.clone(),
            pending: Arc::clone(&self.pending),
            progress: Arc::clone(&self.progress),
            writer: writer.clone(),
        };
        tokio::spawn(reader.run(stdout, dead.clone()));
        Ok(Connection {
            writer,
            dead,
            child,
        })
    }

    /// Stops the child for good: SIGTERM to its process group, SIGKILL to the group if the child
    /// has not exited within [`STOP_GRACE`] (and to whatever of the group outlived it).
    pub async fn stop(&self) {
        let mut guard = self.connection.lock().await;
        self.stopped.store(true, Ordering::SeqCst);
        let Some(mut conn) = guard.take() else {
            return;
        };
        let Some(pid) = conn.child.id() else {
            return; // already reaped
        };
        let group = Pid::from_raw(pid as i32);
        signal_group(group, Signal::SIGTERM);
        match tokio::time::timeout(STOP_GRACE, conn.child.wait()).await {
            Ok(_) => tracing::info!(upstream = %self.name, pid, "stdio upstream stopped"),
            Err(_) => {
                tracing::warn!(upstream = %self.name, pid, grace = ?STOP_GRACE, "stdio upstream ignored SIGTERM; killing its process group");
            }
        }
        signal_group(group, Signal::SIGKILL);
        let _ = conn.child.wait().await;
        conn.dead.cancel();
    }

    pub async fn notify(&self, message: Value) -> Result<(), UpstreamError> {
        let (writer, _) = self.connection().await?;
        writer
            .send(line(&message))
            .await
            .map_err(|_| UpstreamError::Unreachable("stdio upstream exited".into()))
    }

    pub async fn call(
        &self,
        message: Value,
        cancel: &CancellationToken,
    ) -> Result<Value, UpstreamError> {
        let (writer, dead) = self.connection().await?;
        let key = message["id"].to_string();
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending lock")
            .insert(key.clone(), tx);
        let gone = || UpstreamError::Unreachable("stdio upstream exited".into());
        if writer.send(line(&message)).await.is_err() {
            self.pending.lock().expect("pending lock").remove(&key);
            return Err(gone());
        }
        tokio::select! {
            reply = rx => reply.map_err(|_| gone()),
            _ = dead.cancelled() => Err(gone()),
            _ = cancel.cancelled() => {
                self.pending.lock().expect("pending lock").remove(&key);
                let note = jsonrpc::notification("notifications/cancelled", json!({"requestId": message["id"], "reason": "cancelled by client"}));
                let _ = writer.send(line(&note)).await;
                Err(UpstreamError::Cancelled)
            }
        }
    }
}

/// Signals a process group; one that is already gone (ESRCH) is not an error.
fn signal_group(group: Pid, signal: Signal) {
    match killpg(group, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(%error, ?signal, "could not signal a stdio upstream's process group")
        }
    }
}

fn line(message: &Value) -> String {
    let mut text = message.to_string();
    text.push('\n');
    text
}

struct Reader {
    name: String,
    pending: Pending,
    progress: Arc<NotificationRouter>,
    writer: mpsc::Sender<String>,
}

impl Reader {
    async fn run(self, stdout: ChildStdout, dead: CancellationToken) {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(text)) = lines.next_line().await {
            match serde_json::from_str::<Value>(&text) {
                Ok(message) => self.handle(message).await,
                Err(_) => {
                    tracing::warn!(upstream = %self.name, "ignoring a non-JSON line from a stdio upstream")
                }
            }
        }
        tracing::warn!(upstream = %self.name, "stdio upstream exited; it is relaunched on the next request");
        dead.cancel();
        self.pending.lock().expect("pending lock").clear();
    }

    async fn handle(&self, message: Value) {
        let is_response = message.get("result").is_some() || message.get("error").is_some();
        match (message.get("id"), message["method"].as_str()) {
            (Some(id), None) if is_response => {
                if let Some(tx) = self
                    .pending
                    .lock()
                    .expect("pending lock")
                    .remove(&id.to_string())
                {
                    let _ = tx.send(message);
                }
            }
            (None, Some(_)) => self.progress.forward(message),
            (Some(id), Some(method)) => {
                let reply = super::answer_server_request(id.clone(), method);
                let _ = self.writer.send(line(&reply)).await;
            }
            _ => {}
        }
    }
}
