//! Thin stdio front: `verdict-gateway --stdio --connect http://HOST:PORT/mcp`.
//!
//! Desktop clients launch one stdio server per window or conversation, and a standalone stdio
//! gateway owns a journal and a chain, of which only one process may be the writer. So copies
//! that run at the same time relay instead: each carries newline-delimited JSON-RPC between
//! stdin/stdout and a running HTTP gateway, authenticated as one agent with the key from
//! `VERDICT_API_KEY`. The relay keeps no journal and opens no upstreams; the HTTP gateway decides
//! and records everything (one journal, one policy, shared rate limits and approvals).
//!
//! It is a Streamable HTTP client: the `Mcp-Session-Id` of the `initialize` reply and the
//! negotiated `MCP-Protocol-Version` go on every later request (2026-07-28 requests carry the
//! headers that mirror their body instead), replies are JSON or an SSE stream, the session's
//! `GET` stream relays what the gateway sends on its own (where it offers one: 405 means none),
//! and the session is ended with `DELETE` when input ends. A gateway that cannot be reached, a
//! refused key or a reply that is not JSON-RPC reach the client as JSON-RPC errors for its request.

use super::pipe::{self, InFlight, PipeReader};
use crate::jsonrpc::{self, PARSE_ERROR, UNAUTHORIZED, UPSTREAM_UNAVAILABLE};
use crate::mcp;
use crate::upstream::http::{is_sse, stateless_headers};
use futures_util::StreamExt;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::Value;
use sse_stream::SseStream;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest line relayed: the gateway's default `max_body_bytes` (it enforces its own limit).
const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Pause before reopening a `GET` stream that broke.
const RECONNECT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("VERDICT_API_KEY is not usable in an HTTP header (control characters?)")]
    BadKey,
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Relays `input`/`output` to the gateway at `url` as the agent whose key is `api_key`, until
/// input ends or `stop` resolves; then waits for the calls in flight and ends the session.
pub async fn run(
    url: &str,
    api_key: &str,
    input: impl AsyncRead + Unpin,
    output: impl AsyncWrite + Unpin + Send + 'static,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RelayError> {
    let mut auth =
        HeaderValue::try_from(format!("Bearer {api_key}")).map_err(|_| RelayError::BadKey)?;
    auth.set_sensitive(true);
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(RelayError::Client)?;
    let (out, writer) = pipe::spawn_writer(output);
    let relay = Arc::new(Relay {
        url: url.to_owned(),
        client,
        auth,
        session: RwLock::default(),
        version: RwLock::default(),
        out: out.clone(),
        listening: Mutex::default(),
        ended: CancellationToken::new(),
    });
    let mut reader = PipeReader::new(input, MAX_MESSAGE_BYTES, stop);
    let mut inflight = InFlight::default();
    while let Some(line) = reader.next(&out).await {
        let message = match serde_json::from_slice::<Value>(&line) {
            Ok(message) => message,
            Err(error) => {
                let reply =
                    jsonrpc::error(Value::Null, PARSE_ERROR, &format!("Parse error: {error}"));
                let _ = out.send(reply).await;
                continue;
            }
        };
        // The handshake and notifications go in order (later requests need the session, and a
        // cancellation should not overtake its request); requests run concurrently.
        if message["method"] == "initialize" || request_id(&message).is_none() {
            relay.forward(message).await;
        } else {
            let relay = Arc::clone(&relay);
            inflight.spawn(async move { relay.forward(message).await });
        }
    }
    inflight.drain().await;
    relay.end_session().await;
    drop((relay, out));
    let _ = writer.await;
    Ok(())
}

/// The id of a request (a message with a method and an id); `None` for notifications and
/// responses, which get no reply.
fn request_id(message: &Value) -> Option<Value> {
    message.get("method")?;
    message.get("id").cloned()
}

struct Relay {
    url: String,
    client: reqwest::Client,
    auth: HeaderValue,
    session: RwLock<Option<String>>,
    /// The handshake-era revision `initialize` negotiated.
    version: RwLock<Option<String>>,
    out: mpsc::Sender<Value>,
    /// The session's `GET` stream, once opened.
    listening: Mutex<Option<tokio::task::JoinHandle<()>>>,
    ended: CancellationToken,
}

impl Relay {
    /// POSTs one message and relays what comes back.
    async fn forward(self: &Arc<Self>, message: Value) {
        let id = request_id(&message);
        let response = match self.post(&message).send().await {
            Ok(response) => response,
            Err(error) => {
                let why = format!(
                    "the Verdict gateway at {} is unreachable: {error}",
                    self.url
                );
                return self.fail(id, UPSTREAM_UNAVAILABLE, why).await;
            }
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let why = format!(
                "the Verdict gateway refused the API key in VERDICT_API_KEY (HTTP {status})"
            );
            return self.fail(id, UNAUTHORIZED, why).await;
        }
        let initialize = message["method"] == "initialize";
        if initialize && status.is_success() {
            self.keep_session(&response);
        }
        if is_sse(&response) {
            let answered = self.relay_stream(response, initialize).await;
            if !answered && id.is_some() {
                let why = "the Verdict gateway's reply stream ended before the response".to_owned();
                self.fail(id, UPSTREAM_UNAVAILABLE, why).await;
            }
            return;
        }
        let body = response.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<Value>(&body) {
            Ok(reply) if reply.is_array() => self.emit(reply, false).await, // a batch's replies
            Ok(mut reply) if reply.get("result").is_some() || reply.get("error").is_some() => {
                if let (Some(id), true) = (&id, reply["id"].is_null()) {
                    reply["id"] = id.clone(); // a refusal before the body was read names no id
                }
                self.emit(reply, initialize).await;
            }
            _ if status.is_success() && id.is_none() => {
                if message["method"] == "notifications/initialized" {
                    self.listen();
                }
            }
            _ => {
                let why = format!(
                    "the Verdict gateway answered HTTP {status} without a JSON-RPC response"
                );
                self.fail(id, UPSTREAM_UNAVAILABLE, why).await;
            }
        }
    }

    fn post(&self, message: &Value) -> reqwest::RequestBuilder {
        let request = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(message.to_string());
        if mcp::meta_version(&message["params"]).is_some_and(mcp::is_stateless) {
            stateless_headers(request, message)
        } else {
            self.in_session(request)
        }
    }

    /// Adds the session id and negotiated revision, once there are.
    fn in_session(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(version) = self.version.read().expect("version lock").as_deref() {
            request = request.header(VERSION_HEADER, version);
        }
        if let Some(session) = self.session.read().expect("session lock").as_deref() {
            request = request.header(SESSION_HEADER, session);
        }
        request
    }

    fn keep_session(&self, response: &reqwest::Response) {
        let session = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        *self.session.write().expect("session lock") = session;
    }

    /// Writes every message of an SSE reply; true if it held a response (the stream's last).
    async fn relay_stream(&self, response: reqwest::Response, initialize: bool) -> bool {
        let mut events = SseStream::from_bytes_stream(response.bytes_stream());
        let mut answered = false;
        while let Some(event) = events.next().await {
            let Ok(event) = event else {
                tracing::warn!("the gateway's event stream broke");
                break;
            };
            let Some(data) = event.data.filter(|d| !d.is_empty()) else {
                continue;
            };
            match serde_json::from_str::<Value>(&data) {
                Ok(message) => {
                    answered |= message.get("method").is_none();
                    self.emit(message, initialize).await;
                }
                Err(_) => tracing::warn!("an event from the gateway is not JSON; skipped"),
            }
        }
        answered
    }

    /// Writes a message to the client, noting the revision an `initialize` reply negotiated.
    async fn emit(&self, message: Value, initialize: bool) {
        if initialize {
            if let Some(version) = message["result"]["protocolVersion"].as_str() {
                *self.version.write().expect("version lock") = Some(version.to_owned());
            }
        }
        let _ = self.out.send(message).await;
    }

    async fn fail(&self, id: Option<Value>, code: i64, why: String) {
        tracing::warn!(code, "{why}");
        if let Some(id) = id {
            let _ = self.out.send(jsonrpc::error(id, code, &why)).await;
        }
    }

    /// Opens the session's `GET` stream (once): what the gateway sends outside any request,
    /// such as `notifications/tools/list_changed`.
    fn listen(self: &Arc<Self>) {
        let mut listening = self.listening.lock().expect("listening lock");
        if listening.is_none() && self.session.read().expect("session lock").is_some() {
            let relay = Arc::clone(self);
            *listening = Some(tokio::spawn(async move {
                tokio::select! {
                    () = relay.stream_until_refused() => {}
                    () = relay.ended.cancelled() => {}
                }
            }));
        }
    }

    async fn stream_until_refused(&self) {
        loop {
            let request = self
                .in_session(self.client.get(&self.url))
                .header(AUTHORIZATION, self.auth.clone())
                .header(ACCEPT, "text/event-stream");
            match request.send().await {
                Ok(response) if response.status().is_success() && is_sse(&response) => {
                    self.relay_stream(response, false).await;
                }
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "no server stream from the gateway");
                    return;
                }
                Err(error) => tracing::warn!(%error, "the gateway's server stream is unreachable"),
            }
            tokio::time::sleep(RECONNECT).await;
        }
    }

    /// Stops the `GET` stream and ends the session at the gateway (best effort).
    async fn end_session(&self) {
        self.ended.cancel();
        let listening = self.listening.lock().expect("listening lock").take();
        if let Some(listening) = listening {
            let _ = listening.await;
        }
        if self.session.read().expect("session lock").is_some() {
            let request = self
                .in_session(self.client.delete(&self.url))
                .header(AUTHORIZATION, self.auth.clone());
            if let Err(error) = request.send().await {
                tracing::debug!(%error, "could not end the gateway session");
            }
        }
    }
}
