//! Streamable HTTP upstreams: one POST per message, replies as JSON or an SSE stream, and one
//! long-lived server→gateway stream per session for what the upstream sends on its own
//! (tool-list changes, pings): `GET` in the handshake era, `subscriptions/listen` in 2026-07-28.
//!
//! Handshake era: the `Mcp-Session-Id` from the `initialize` reply is sent on every later POST;
//! a 404 means the session expired, so the generation moves on and the next request
//! re-initializes. Stateless era: `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers
//! mirror the body. Cancelling a request drops its response stream (stateless) or posts
//! `notifications/cancelled` (handshake era).

use super::{Mode, NotificationRouter, UpstreamError};
use crate::mcp;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use serde_json::{json, Value};
use sse_stream::SseStream;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SESSION_HEADER: &str = "mcp-session-id";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct HttpTransport {
    url: String,
    client: reqwest::Client,
    headers: HeaderMap,
    session: RwLock<Option<String>>,
    generation: AtomicU64,
    progress: Arc<NotificationRouter>,
    /// Stops the server→gateway stream of the current session (see [`super::listen`]).
    listening: Mutex<Option<CancellationToken>>,
}

/// How one server→gateway stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The upstream offers none (GET answered 405, or `subscriptions/listen` was refused).
    Unsupported(String),
    /// The session is gone (GET answered 404); the next request re-initializes.
    Expired,
    /// The stream closed or broke; `opened` says whether it had been established.
    Closed { opened: bool, why: String },
}

impl HttpTransport {
    pub fn new(
        url: &str,
        headers: &BTreeMap<String, String>,
        progress: Arc<NotificationRouter>,
    ) -> Self {
        let headers = headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::try_from(k.as_str()).ok()?,
                    HeaderValue::try_from(v.as_str()).ok()?,
                ))
            })
            .collect();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .expect("building an HTTP client");
        Self {
            url: url.to_owned(),
            client,
            headers,
            session: RwLock::new(None),
            generation: AtomicU64::new(0),
            progress,
            listening: Mutex::new(None),
        }
    }

    /// Starts the server→gateway stream for the session just negotiated in `mode`, stopping the
    /// previous session's.
    pub fn listen(self: &Arc<Self>, mode: &Mode) {
        let stop = CancellationToken::new();
        if let Some(previous) = self
            .listening
            .lock()
            .expect("listening lock")
            .replace(stop.clone())
        {
            previous.cancel();
        }
        tokio::spawn(super::listen::run(Arc::clone(self), mode.clone(), stop));
    }

    /// Asks the gateway to refresh its catalog from every upstream.
    pub fn resync(&self) {
        self.progress.resync();
    }

    /// Forgets an expired session: the next request re-initializes.
    fn expire_session(&self) {
        *self.session.write().expect("session lock") = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn post(&self, message: &Value, mode: Option<&Mode>) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(message.to_string());
        match mode {
            Some(Mode::Stateless) => request = stateless_headers(request, message),
            Some(Mode::Handshake(version)) => {
                request = request.header("mcp-protocol-version", version.as_str())
            }
            None => {}
        }
        if mode != Some(&Mode::Stateless) {
            if let Some(session) = self.session.read().expect("session lock").as_deref() {
                request = request.header(SESSION_HEADER, session);
            }
        }
        request
    }

    pub async fn notify(&self, message: Value, mode: Option<&Mode>) -> Result<(), UpstreamError> {
        let response = self
            .post(&message, mode)
            .send()
            .await
            .map_err(unreachable)?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(UpstreamError::Protocol(format!(
                "notification answered with HTTP {status}"
            ))),
        }
    }

    pub async fn call(
        &self,
        message: Value,
        mode: Option<&Mode>,
        cancel: &CancellationToken,
    ) -> Result<Value, UpstreamError> {
        let id = message["id"].clone();
        let exchange = self.exchange(&message, &id, mode);
        tokio::select! {
            reply = exchange => reply,
            _ = cancel.cancelled() => {
                if let Some(mode @ Mode::Handshake(_)) = mode {
                    let cancelled = crate::jsonrpc::notification("notifications/cancelled", json!({"requestId": id, "reason": "cancelled by client"}));
                    let _ = self.notify(cancelled, Some(mode)).await;
                }
                Err(UpstreamError::Cancelled)
            }
        }
    }

    async fn exchange(
        &self,
        message: &Value,
        id: &Value,
        mode: Option<&Mode>,
    ) -> Result<Value, UpstreamError> {
        let had_session = self.session.read().expect("session lock").is_some();
        let response = self.post(message, mode).send().await.map_err(unreachable)?;
        let status = response.status();
        if status.as_u16() == 404 && had_session && mode != Some(&Mode::Stateless) {
            self.expire_session();
            return Err(UpstreamError::SessionExpired);
        }
        if let Some(session) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            *self.session.write().expect("session lock") = Some(session.to_owned());
        }
        if is_sse(&response) {
            return self.read_sse(response, id, mode).await;
        }
        let body = response.bytes().await.map_err(unreachable)?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(reply) if reply.get("result").is_some() || reply.get("error").is_some() => Ok(reply),
            _ => Err(UpstreamError::Protocol(format!(
                "HTTP {status} with a body that is not a JSON-RPC response ({} bytes)",
                body.len()
            ))),
        }
    }

    async fn read_sse(
        &self,
        response: reqwest::Response,
        id: &Value,
        mode: Option<&Mode>,
    ) -> Result<Value, UpstreamError> {
        let mut events = SseStream::from_bytes_stream(response.bytes_stream());
        while let Some(event) = events.next().await {
            let event =
                event.map_err(|e| UpstreamError::Unreachable(format!("SSE stream broke: {e}")))?;
            let Some(data) = event.data.filter(|d| !d.is_empty()) else {
                continue;
            };
            let Ok(message) = serde_json::from_str::<Value>(&data) else {
                return Err(UpstreamError::Protocol("SSE event is not JSON".into()));
            };
            if &message["id"] == id
                && (message.get("result").is_some() || message.get("error").is_some())
            {
                return Ok(message);
            }
            self.handle_unsolicited(message, mode).await;
        }
        Err(UpstreamError::Unreachable(
            "SSE stream ended without a response".into(),
        ))
    }

    /// Handles a message the upstream sent on its own: notifications go to the router, and a
    /// server request is answered (POSTed back in the session) rather than left waiting.
    async fn handle_unsolicited(&self, message: Value, mode: Option<&Mode>) {
        match (message.get("id"), message["method"].as_str()) {
            (None, Some(_)) => self.progress.forward(message),
            (Some(request_id), Some(method)) => {
                let reply = super::answer_server_request(request_id.clone(), method);
                if let Err(error) = self.notify(reply, mode).await {
                    tracing::warn!(%error, method, "could not answer an upstream's request");
                }
            }
            _ => {}
        }
    }

    /// Opens the session's server→gateway stream once and relays what arrives until it ends:
    /// `GET` in the handshake era, a `subscriptions/listen` request (tool-list changes) in the
    /// stateless revision. `resync` (a reopened stream) asks for a catalog refresh once it is
    /// open, since changes announced while it was down are not replayed.
    pub async fn stream_once(&self, mode: &Mode, resync: bool) -> StreamEnd {
        let request = self.stream_request(mode);
        let closed = |opened, why: String| StreamEnd::Closed { opened, why };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return closed(false, error.to_string()),
        };
        match (response.status().as_u16(), mode) {
            (405, _) => return StreamEnd::Unsupported("GET answered 405".into()),
            (404, Mode::Handshake(_)) => {
                self.expire_session();
                return StreamEnd::Expired;
            }
            (200..=299, _) => {}
            (status, _) => return closed(false, format!("HTTP {status}")),
        }
        if !is_sse(&response) {
            let body = response.text().await.unwrap_or_default();
            return StreamEnd::Unsupported(format!("answered without a stream: {body:.200}"));
        }
        if resync {
            self.progress.resync();
        }
        let mut events = SseStream::from_bytes_stream(response.bytes_stream());
        while let Some(event) = events.next().await {
            let data = match event {
                Ok(event) => event.data.unwrap_or_default(),
                Err(error) => return closed(true, error.to_string()),
            };
            match serde_json::from_str::<Value>(&data) {
                // A response ends a `subscriptions/listen` stream.
                Ok(message) if message.get("method").is_none() => {
                    return closed(true, "the upstream ended the subscription".into())
                }
                Ok(message) => self.handle_unsolicited(message, Some(mode)).await,
                Err(_) if data.is_empty() => {}
                Err(_) => tracing::warn!("upstream stream event is not JSON; skipped"),
            }
        }
        closed(true, "the stream ended".into())
    }
    /// The request that opens the session's server→gateway stream in `mode`.
    fn stream_request(&self, mode: &Mode) -> reqwest::RequestBuilder {
        match mode {
            Mode::Handshake(version) => {
                let mut request = self
                    .client
                    .get(&self.url)
                    .headers(self.headers.clone())
                    .header(ACCEPT, "text/event-stream")
                    .header("mcp-protocol-version", version.as_str());
                if let Some(session) = self.session.read().expect("session lock").as_deref() {
                    request = request.header(SESSION_HEADER, session);
                }
                request
            }
            Mode::Stateless => {
                let mut params = json!({"notifications": {"toolsListChanged": true}});
                params["_meta"] = mcp::client_meta();
                let listen = crate::jsonrpc::request(
                    json!("verdict-listen"),
                    "subscriptions/listen",
                    params,
                );
                self.post(&listen, Some(mode))
            }
        }
    }
}

/// The headers a 2026-07-28 POST carries besides its body, mirroring it: protocol version,
/// `Mcp-Method`, and `Mcp-Name` (the tool's name or the resource's URI).
pub(crate) fn stateless_headers(
    mut request: reqwest::RequestBuilder,
    message: &Value,
) -> reqwest::RequestBuilder {
    request = request.header("mcp-protocol-version", mcp::STATELESS);
    if let Some(method) = message["method"].as_str() {
        request = request.header("mcp-method", method);
    }
    if let Some(name) = message["params"]["name"]
        .as_str()
        .or(message["params"]["uri"].as_str())
    {
        request = request.header("mcp-name", mcp::encode_header_value(name));
    }
    request
}

pub(crate) fn is_sse(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

fn unreachable(error: reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable(error.to_string())
}
