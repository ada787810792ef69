//! Streamable HTTP upstreams: one POST per message, replies as JSON or an SSE stream.
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
use std::sync::{Arc, RwLock};
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
        }
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
            Some(Mode::Stateless) => {
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
            }
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
            *self.session.write().expect("session lock") = None;
            self.generation.fetch_add(1, Ordering::SeqCst);
            return Err(UpstreamError::SessionExpired);
        }
        if let Some(session) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            *self.session.write().expect("session lock") = Some(session.to_owned());
        }
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if is_sse {
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
            match (message.get("id"), message["method"].as_str()) {
                (None, Some(_)) => self.progress.forward(message),
                // A server request in the middle of a call: answer it (POSTed back in the
                // session) rather than leave the upstream waiting.
                (Some(request_id), Some(method)) => {
                    let reply = super::answer_server_request(request_id.clone(), method);
                    if let Err(error) = self.notify(reply, mode).await {
                        tracing::warn!(%error, method, "could not answer an upstream's request");
                    }
                }
                _ => {}
            }
        }
        Err(UpstreamError::Unreachable(
            "SSE stream ended without a response".into(),
        ))
    }
}

fn unreachable(error: reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable(error.to_string())
}
