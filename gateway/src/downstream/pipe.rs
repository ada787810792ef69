//! Newline-delimited JSON-RPC over a pipe (stdin/stdout), shared by both stdio fronts: the
//! standalone gateway ([`super::stdio`]) and the relay to an HTTP gateway ([`super::relay`]).
//!
//! One reader so both treat a stopping process, an oversize line and bytes that are not UTF-8
//! alike: lines are read as bytes (a line of invalid UTF-8 is a JSON parse error for its front to
//! answer, not the end of input), and reading ends at EOF or when the stop signal arrives.
//! One writer so outgoing messages never interleave. [`InFlight`] lets a front finish the
//! requests it started before it exits.

use crate::jsonrpc::{self, INVALID_REQUEST};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Split};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// Outgoing messages buffered before request handlers wait for the writer.
const OUT_BUFFER: usize = 256;
/// How long requests still running when input ends may take to finish.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Starts the one writer of `output`; messages sent on the returned channel are written as
/// lines in order. The task ends when every sender is dropped (or the output closes).
pub fn spawn_writer(
    mut output: impl AsyncWrite + Unpin + Send + 'static,
) -> (mpsc::Sender<Value>, JoinHandle<()>) {
    let (out, mut outgoing) = mpsc::channel::<Value>(OUT_BUFFER);
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let mut line = message.to_string();
            line.push('\n');
            if output.write_all(line.as_bytes()).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    (out, writer)
}

/// Reads input lines until EOF or the stop signal.
pub struct PipeReader<R> {
    lines: Split<BufReader<R>>,
    max_bytes: usize,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<R: AsyncRead + Unpin> PipeReader<R> {
    pub fn new(
        input: R,
        max_bytes: usize,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Self {
            lines: BufReader::new(input).split(b'\n'),
            max_bytes,
            stop: Box::pin(stop),
        }
    }

    /// The next non-blank line within the size limit (a longer one is answered on `out` with
    /// `-32600` and skipped); `None` once input ended or the stop signal arrived.
    pub async fn next(&mut self, out: &mpsc::Sender<Value>) -> Option<Vec<u8>> {
        loop {
            let line = tokio::select! {
                line = self.lines.next_segment() => line,
                () = &mut self.stop => {
                    tracing::info!("stop signal: finishing the calls in flight");
                    return None;
                }
            };
            let line = match line {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, "reading stdin failed; stopping");
                    return None;
                }
            };
            if line.trim_ascii().is_empty() {
                continue;
            }
            if line.len() > self.max_bytes {
                let message = format!("Message exceeds the {}-byte limit", self.max_bytes);
                let _ = out
                    .send(jsonrpc::error(Value::Null, INVALID_REQUEST, &message))
                    .await;
                continue;
            }
            return Some(line);
        }
    }
}

/// Requests a front started and has not finished.
#[derive(Default)]
pub struct InFlight {
    tasks: JoinSet<()>,
}

impl InFlight {
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        // Finished tasks are collected as new ones start, so the set stays as small as the load.
        while self.tasks.try_join_next().is_some() {}
        self.tasks.spawn(task);
    }

    /// Waits for the running requests, at most [`DRAIN_GRACE`]; the rest are abandoned.
    pub async fn drain(mut self) {
        let running = self.tasks.len();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_GRACE, all).await.is_err() {
            tracing::warn!(
                running,
                left = self.tasks.len(),
                grace = ?DRAIN_GRACE,
                "calls still running at exit were abandoned"
            );
        }
    }
}
