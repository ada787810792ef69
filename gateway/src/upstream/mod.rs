//! The MCP servers behind the gateway.
//!
//! Each [`Upstream`] is a transport ([`http`] or [`stdio`]) plus the protocol mode negotiated with
//! it: the gateway first asks `server/discover` and speaks the stateless 2026-07-28 revision when
//! the server supports it, else falls back to the `initialize` handshake (newest handshake
//! revision). The handshake is redone whenever the transport reconnects (a restarted child
//! process, an expired HTTP session).
//!
//! Requests get gateway-chosen JSON-RPC ids and progress tokens; [`NotificationRouter`] maps an
//! upstream's progress notifications back to the agent's own token and reports tool changes,
//! whether they arrive inside a call or on the session's own stream ([`listen`]).

pub mod http;
mod listen;
pub mod stdio;

use crate::config::UpstreamConfig;
use crate::jsonrpc;
use crate::mcp::{self, STATELESS};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("upstream session expired")]
    SessionExpired,
    #[error("request cancelled")]
    Cancelled,
}

/// How the gateway speaks to one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 2026-07-28: `_meta` on every request, no session.
    Stateless,
    /// Handshake era, with the negotiated version.
    Handshake(String),
}

impl Mode {
    pub fn version(&self) -> &str {
        match self {
            Mode::Stateless => STATELESS,
            Mode::Handshake(v) => v,
        }
    }
}

/// Where an agent wants progress for one request: its own token and its outgoing stream.
#[derive(Debug, Clone)]
pub struct ProgressSink {
    pub token: Value,
    pub tx: mpsc::Sender<Value>,
}

/// Where an upstream's notifications go. Progress is request-scoped: it goes to the agent that
/// owns the (gateway-issued) token. `tools/list_changed` wakes the gateway, which refreshes its
/// catalog and tells every session. Anything else an upstream announces is not tied to one
/// agent (all agents share the upstream's session), so relaying it could leak between agents:
/// it is logged at debug level and dropped.
#[derive(Debug, Default)]
pub struct NotificationRouter {
    next: AtomicU64,
    sinks: Mutex<HashMap<String, ProgressSink>>,
    tools_changed: Arc<Notify>,
}

impl NotificationRouter {
    pub fn new(tools_changed: Arc<Notify>) -> Self {
        Self {
            tools_changed,
            ..Self::default()
        }
    }

    fn register(&self, sink: ProgressSink) -> String {
        let token = format!("verdict-{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.sinks
            .lock()
            .expect("progress lock")
            .insert(token.clone(), sink);
        token
    }

    fn unregister(&self, token: &str) {
        self.sinks.lock().expect("progress lock").remove(token);
    }

    /// Asks for a catalog refresh, as a `tools/list_changed` would.
    pub fn resync(&self) {
        self.tools_changed.notify_one();
    }

    /// Routes one notification from an upstream (see the type's doc).
    pub fn forward(&self, notification: Value) {
        match notification["method"].as_str() {
            Some("notifications/progress") => self.forward_progress(notification),
            Some("notifications/tools/list_changed") => self.tools_changed.notify_one(),
            method => tracing::debug!(?method, "upstream notification not relayed"),
        }
    }

    fn forward_progress(&self, mut notification: Value) {
        let Some(token) = notification["params"]["progressToken"].as_str() else {
            return;
        };
        let Some(sink) = self
            .sinks
            .lock()
            .expect("progress lock")
            .get(token)
            .cloned()
        else {
            return;
        };
        notification["params"]["progressToken"] = sink.token;
        // A slow agent misses progress updates rather than stalling the upstream reader.
        let _ = sink.tx.try_send(notification);
    }
}

enum Transport {
    Http(Arc<http::HttpTransport>),
    Stdio(Box<stdio::StdioTransport>),
}

impl Transport {
    async fn call(
        &self,
        message: Value,
        mode: Option<&Mode>,
        cancel: &CancellationToken,
    ) -> Result<Value, UpstreamError> {
        match self {
            Transport::Http(t) => t.call(message, mode, cancel).await,
            Transport::Stdio(t) => t.call(message, cancel).await,
        }
    }

    async fn notify(&self, message: Value, mode: Option<&Mode>) -> Result<(), UpstreamError> {
        match self {
            Transport::Http(t) => t.notify(message, mode).await,
            Transport::Stdio(t) => t.notify(message).await,
        }
    }

    /// Stops what the gateway launched (stdio children); HTTP upstreams outlive the gateway.
    async fn stop(&self) {
        if let Transport::Stdio(t) = self {
            t.stop().await
        }
    }

    fn generation(&self) -> u64 {
        match self {
            Transport::Http(t) => t.generation(),
            Transport::Stdio(t) => t.generation(),
        }
    }
}

/// The gateway's answer to a request an upstream makes of it: `ping` is answered, anything else
/// (sampling, elicitation, roots) is refused, since all agents share the upstream's session and
/// no single agent could rightly answer.
fn answer_server_request(id: Value, method: &str) -> Value {
    match method {
        "ping" => jsonrpc::result(id, json!({})),
        _ => jsonrpc::error(
            id,
            jsonrpc::METHOD_NOT_FOUND,
            "the Verdict gateway does not relay server requests",
        ),
    }
}

pub struct Upstream {
    pub name: String,
    /// Result texts that mean failure (see [`UpstreamConfig::failure_text_prefixes`]).
    pub failure_text_prefixes: Vec<String>,
    transport: Transport,
    progress: Arc<NotificationRouter>,
    next_id: AtomicU64,
    /// Negotiated mode and the transport generation it was negotiated on.
    mode: tokio::sync::Mutex<Option<(Mode, u64)>>,
}

impl Upstream {
    /// `tools_changed` is notified when this upstream announces `tools/list_changed`.
    pub fn new(name: &str, config: &UpstreamConfig, tools_changed: Arc<Notify>) -> Self {
        let progress = Arc::new(NotificationRouter::new(tools_changed));
        let transport = match config {
            UpstreamConfig::Http { url, headers, .. } => Transport::Http(Arc::new(
                http::HttpTransport::new(url, headers, Arc::clone(&progress)),
            )),
            UpstreamConfig::Stdio {
                command,
                args,
                env,
                cwd,
                ..
            } => Transport::Stdio(Box::new(stdio::StdioTransport::new(
                name,
                stdio::Launch {
                    command,
                    args,
                    env,
                    cwd: cwd.as_deref(),
                },
                Arc::clone(&progress),
            ))),
        };
        Self {
            name: name.to_owned(),
            failure_text_prefixes: config.failure_text_prefixes().to_vec(),
            transport,
            progress,
            next_id: AtomicU64::new(1),
            mode: tokio::sync::Mutex::new(None),
        }
    }

    fn next_id(&self) -> Value {
        json!(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The negotiated mode, negotiating first if the transport (re)connected since.
    pub async fn mode(&self) -> Result<Mode, UpstreamError> {
        let mut guard = self.mode.lock().await;
        if let Some((mode, generation)) = guard.as_ref() {
            if *generation == self.transport.generation() {
                return Ok(mode.clone());
            }
        }
        let mode = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake())
            .await
            .map_err(|_| UpstreamError::Unreachable("handshake timed out".into()))??;
        tracing::info!(upstream = %self.name, version = mode.version(), "upstream connected");
        let renegotiated = guard.replace((mode.clone(), self.transport.generation()));
        if let Transport::Http(http) = &self.transport {
            http.listen(&mode);
        }
        if renegotiated.is_some() {
            // A new session (a restarted upstream, say): what it announced before we listened
            // again is lost, so the catalog is refreshed and the agents told.
            self.progress.resync();
        }
        Ok(mode)
    }

    async fn handshake(&self) -> Result<Mode, UpstreamError> {
        let never = CancellationToken::new();
        let discover = jsonrpc::request(
            self.next_id(),
            "server/discover",
            json!({"_meta": mcp::client_meta()}),
        );
        if let Ok(reply) = self
            .transport
            .call(discover, Some(&Mode::Stateless), &never)
            .await
        {
            let versions = &reply["result"]["supportedVersions"];
            if versions
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v == STATELESS))
            {
                return Ok(Mode::Stateless);
            }
        }
        let init = jsonrpc::request(
            self.next_id(),
            "initialize",
            json!({
                "protocolVersion": mcp::LATEST_HANDSHAKE,
                "capabilities": {},
                "clientInfo": {"name": mcp::GATEWAY_NAME, "version": mcp::GATEWAY_VERSION},
            }),
        );
        let reply = self.transport.call(init, None, &never).await?;
        let version = reply["result"]["protocolVersion"]
            .as_str()
            .ok_or_else(|| {
                UpstreamError::Protocol(format!(
                    "initialize failed: {}",
                    reply.get("error").unwrap_or(&reply)
                ))
            })?
            .to_owned();
        let mode = Mode::Handshake(version);
        self.transport
            .notify(
                jsonrpc::notification("notifications/initialized", json!({})),
                Some(&mode),
            )
            .await?;
        Ok(mode)
    }

    /// Sends one request and returns the upstream's response object (`result` or `error`).
    /// Progress notifications go to `progress`; `cancel` abandons the request upstream too.
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        progress: Option<ProgressSink>,
        cancel: &CancellationToken,
    ) -> Result<Value, UpstreamError> {
        match self
            .request_once(method, params.clone(), progress.clone(), cancel)
            .await
        {
            Err(UpstreamError::SessionExpired) => {
                self.request_once(method, params, progress, cancel).await
            }
            other => other,
        }
    }

    async fn request_once(
        &self,
        method: &str,
        mut params: Value,
        progress: Option<ProgressSink>,
        cancel: &CancellationToken,
    ) -> Result<Value, UpstreamError> {
        let mode = self.mode().await?;
        if !params.is_object() {
            params = json!({});
        }
        let meta = params
            .as_object_mut()
            .expect("object")
            .entry("_meta")
            .or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        if mode == Mode::Stateless {
            for (key, value) in mcp::client_meta().as_object().expect("object") {
                meta[key] = value.clone();
            }
        }
        let token = progress.map(|sink| self.progress.register(sink));
        match &token {
            Some(t) => meta["progressToken"] = json!(t),
            None => {
                meta.as_object_mut()
                    .expect("object")
                    .remove("progressToken");
            }
        }
        let result = self
            .transport
            .call(
                jsonrpc::request(self.next_id(), method, params),
                Some(&mode),
                cancel,
            )
            .await;
        if let Some(token) = token {
            self.progress.unregister(&token);
        }
        result
    }

    /// Stops this upstream's child process, if the gateway launched one (at shutdown).
    pub async fn stop(&self) {
        self.transport.stop().await
    }

    /// Every tool of this upstream, following `nextCursor` (bounded, against a looping server).
    pub async fn list_tools(&self) -> Result<Vec<Value>, UpstreamError> {
        let never = CancellationToken::new();
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let reply = self.request("tools/list", params, None, &never).await?;
            let result = reply
                .get("result")
                .ok_or_else(|| UpstreamError::Protocol(format!("tools/list failed: {reply}")))?;
            tools.extend(result["tools"].as_array().cloned().unwrap_or_default());
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(tools),
            }
        }
        Err(UpstreamError::Protocol(
            "tools/list paging did not end after 1000 pages".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routes_progress_to_its_agent_and_reports_tool_changes() {
        let changed = Arc::new(Notify::new());
        let router = NotificationRouter::new(Arc::clone(&changed));
        let (tx, mut rx) = mpsc::channel(4);
        let token = router.register(ProgressSink {
            token: json!("agent-token-7"),
            tx,
        });
        router.forward(json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1}}));
        let relayed = rx.recv().await.unwrap();
        assert_eq!(relayed["params"]["progressToken"], "agent-token-7");

        router.forward(json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "secret"}}));
        assert!(
            rx.try_recv().is_err(),
            "unscoped notifications are not relayed to agents"
        );

        router.forward(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
        tokio::time::timeout(std::time::Duration::from_secs(1), changed.notified())
            .await
            .expect("gateway woken");
    }
}
