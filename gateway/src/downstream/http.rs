//! Streamable HTTP front end: `POST|GET|DELETE /mcp` and `/healthz` (503 while decisions cannot be
//! recorded, `degraded` while the journal's disk is low). Prometheus `/metrics` is served only on
//! the separate `metrics_listen` address ([`serve_metrics`]), never to agents.
//!
//! The listener ([`serve`]) closes what would otherwise hold it open: a connection that has not
//! sent a whole request header within `header_read_timeout_secs` (which is also how long a kept-
//! alive connection may sit idle between requests), a body not received within
//! `body_read_timeout_secs` (408), and at most `max_connections` connections are served at once
//! (further ones wait in the kernel's accept queue). HTTP/1.1 only.
//!
//! Order of checks on a POST, each with its own clear refusal: Origin (403), bearer API key
//! (401; 429 and the connection closed for a source over its refusal limit), body size (413),
//! body time (408), JSON (400, -32700), JSON-RPC shape (400, -32600), then the protocol
//! era: `initialize` opens a session; a request whose `_meta` names 2026-07-28 is stateless and
//! its `MCP-Protocol-Version` / `Mcp-Method` / `Mcp-Name` headers must match the body (400,
//! -32020); anything else needs a known `Mcp-Session-Id` (400 without, 404 unknown).
//! Requests are answered as SSE when the client accepts it (so progress can stream), else JSON.
//! Closing an SSE response cancels its request.
//!
//! Refusals before authentication (Origin, API key) are not journaled one by one: they are
//! counted per source and reason and journaled as one aggregate event per interval
//! ([`crate::audit::refusals`]), so a stranger cannot fill the journal.

// Refusals travel as `Err(Response)`: large, but only on the cold path, and it keeps each check
// a plain function that returns exactly what the client gets.
#![allow(clippy::result_large_err)]

use crate::audit::{Admission, DecisionFacts, RefusalReason};
use crate::downstream::answer_batch;
use crate::jsonrpc::{
    self, Body as RpcBody, Message, HEADER_MISMATCH, INVALID_REQUEST, UNAUTHORIZED,
};
use crate::mcp::{self, ClientInfo};
use crate::session::Session;
use crate::Gateway;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use verdict_proto::pb;

const SESSION_HEADER: &str = "mcp-session-id";
/// Notifications buffered per streamed request before progress updates are dropped.
const STREAM_BUFFER: usize = 64;

/// How long open connections may take to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

type Shared = Arc<Gateway>;

/// What the HTTP listener allows a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// To send a whole request header, and to sit idle between kept-alive requests.
    pub header_read_timeout: Duration,
    /// To send a whole request body.
    pub body_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

fn router(gateway: Shared) -> Router {
    Router::new()
        .route("/mcp", post(post_mcp).get(get_mcp).delete(delete_mcp))
        .route("/healthz", get(healthz))
        .with_state(gateway)
}

/// Serves `/mcp` and `/healthz` on `listener` within `limits` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    gateway: Shared,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let app = router(Arc::clone(&gateway)).layer(Extension(limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Replies are small writes (SSE events): without TCP_NODELAY, Nagle and delayed ACKs add
        // 40 ms.
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().layer(Extension(ConnectInfo(peer))));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
        let open = gateway.metrics.connection_opened();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop((permit, open));
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period; closing them");
    }
}

/// Binds `address` and serves `/metrics` (Prometheus) and `/healthz` there, for operators only;
/// with a `ready_file`, writes the bound address to it with the extension `.metrics`.
pub async fn serve_metrics(
    address: SocketAddr,
    gateway: Shared,
    ready_file: Option<&Path>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "serving /metrics and /healthz");
    if let Some(path) = ready_file {
        std::fs::write(path.with_extension("metrics"), address.to_string())?;
    }
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(gateway): State<Shared>| async move {
                gateway.metrics.render(&gateway.audit.recorder)
            }),
        )
        .route("/healthz", get(healthz))
        .with_state(gateway);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics listener stopped");
        }
    });
    Ok(())
}

/// Healthy while decisions can be recorded: a gateway that fails closed says so here, and one
/// whose journal disk runs low says `degraded` (still 200: calls are served). No paths.
async fn healthz(State(gateway): State<Shared>) -> Response {
    let recorder = &gateway.audit.recorder;
    match recorder.last_error() {
        None if recorder.healthy() => match recorder.space().describe() {
            None => "ok".into_response(),
            Some(low) => format!("degraded: {low}").into_response(),
        },
        error => {
            let reason = error.unwrap_or_else(|| "audit journal unavailable".into());
            let body =
                format!("unhealthy: audit journal cannot be written ({reason}); calls are refused");
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
    }
}

fn refuse(status: StatusCode, code: i64, message: &str) -> Response {
    (status, Json(jsonrpc::error(Value::Null, code, message))).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Origin check against DNS rebinding: a browser origin must be a loopback one.
fn origin_allowed(headers: &HeaderMap) -> bool {
    let Some(origin) = header(headers, "origin") else {
        return true;
    };
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split([':', '/']).next().unwrap_or(""),
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// The agent behind the request, or the refusal to send. Refusals are counted into the next
/// aggregate refusal event (without the presented key).
fn authenticate(
    gateway: &Gateway,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<String, Response> {
    let reason = if !origin_allowed(headers) {
        RefusalReason::Origin
    } else if let Some(agent) = gateway.keys.authenticate(header(headers, "authorization")) {
        return Ok(agent.to_owned());
    } else if headers.contains_key("authorization") {
        RefusalReason::UnknownKey
    } else {
        RefusalReason::NoKey
    };
    tracing::debug!(%peer, reason = reason.label(), "refused before authentication");
    gateway.metrics.refused(reason);
    if gateway.audit.refusals.note(peer.ip(), reason) == Admission::Throttled {
        let mut response = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            UNAUTHORIZED,
            "Too many refused requests from this address; retry later",
        );
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return Err(response);
    }
    Err(match reason {
        RefusalReason::Origin => refuse(
            StatusCode::FORBIDDEN,
            INVALID_REQUEST,
            "Forbidden: origin not allowed",
        ),
        _ => {
            let mut response = refuse(
                StatusCode::UNAUTHORIZED,
                UNAUTHORIZED,
                "Unauthorized: missing or invalid API key",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"verdict\""),
            );
            response
        }
    })
}

async fn post_mcp(
    State(gateway): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(limits): Extension<Limits>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let agent = match authenticate(&gateway, &headers, peer) {
        Ok(agent) => agent,
        Err(refusal) => return refusal,
    };
    let bytes = match read_body(&gateway, limits.body_read_timeout, body).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    let message = match jsonrpc::parse_body(&bytes) {
        Ok(RpcBody::Single(message)) => message,
        Ok(RpcBody::Batch(items)) => {
            let session = match existing_session(&gateway, &headers, &agent) {
                Ok(session) => session,
                Err(refusal) => return refusal,
            };
            return match answer_batch(&gateway, &session, items).await {
                Err(refusal) => (StatusCode::BAD_REQUEST, Json(refusal)).into_response(),
                Ok(replies) if replies.is_empty() => StatusCode::ACCEPTED.into_response(),
                Ok(replies) => Json(replies).into_response(),
            };
        }
        Err(error) => return (StatusCode::BAD_REQUEST, Json(error)).into_response(),
    };
    let session = match session_for(&gateway, &headers, &agent, &message, peer).await {
        Ok(session) => session,
        Err(refusal) => return refusal,
    };
    match message {
        Message::Response(_) => StatusCode::ACCEPTED.into_response(),
        Message::Notification { method, params } => {
            gateway.handle_notification(&session, &method, &params);
            StatusCode::ACCEPTED.into_response()
        }
        Message::Request { id, method, params } => {
            let new_session = (method == "initialize").then(|| session.id.clone());
            let wants_sse =
                header(&headers, "accept").is_some_and(|a| a.contains("text/event-stream"));
            let mut response = answer(gateway, session, id, method, params, wants_sse).await;
            if let Some(id) = new_session {
                response
                    .headers_mut()
                    .insert(SESSION_HEADER, id.parse().expect("uuid is a valid header"));
            }
            response
        }
    }
}

/// The whole request body, within the size and time limits.
async fn read_body(
    gateway: &Gateway,
    timeout: Duration,
    body: Body,
) -> Result<bytes::Bytes, Response> {
    let read = axum::body::to_bytes(body, gateway.max_body_bytes);
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => {
            let message = format!(
                "Request body exceeds the {}-byte limit",
                gateway.max_body_bytes
            );
            Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID_REQUEST,
                &message,
            ))
        }
        Err(_) => {
            let mut response = refuse(
                StatusCode::REQUEST_TIMEOUT,
                INVALID_REQUEST,
                "Request body not received in time",
            );
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            Err(response)
        }
    }
}

/// Finds or creates the session a single message belongs to.
async fn session_for(
    gateway: &Gateway,
    headers: &HeaderMap,
    agent: &str,
    message: &Message,
    peer: SocketAddr,
) -> Result<Arc<Session>, Response> {
    let params = message.params().cloned().unwrap_or(Value::Null);
    if message.method() == Some("initialize") && matches!(message, Message::Request { .. }) {
        if gateway.sessions.count_for(agent) >= gateway.max_sessions_per_agent {
            gateway.sessions.reap_idle();
            if gateway.sessions.count_for(agent) >= gateway.max_sessions_per_agent {
                tracing::warn!(agent, "refused initialize: session limit reached");
                return Err(refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    INVALID_REQUEST,
                    "Too many sessions for this agent: end one (DELETE) first",
                ));
            }
        }
        let session = Session::new(
            uuid::Uuid::new_v4().to_string(),
            agent.to_owned(),
            "http",
            peer.to_string(),
            ClientInfo::default(),
        );
        return Ok(gateway.sessions.insert(session));
    }
    match mcp::meta_version(&params) {
        Some(version) if mcp::is_stateless(version) && version != mcp::STATELESS => {
            let data = serde_json::json!({"supported": [mcp::STATELESS], "requested": version});
            let error = jsonrpc::error_with_data(
                Value::Null,
                jsonrpc::UNSUPPORTED_VERSION,
                "Unsupported protocol version",
                data,
            );
            Err((StatusCode::BAD_REQUEST, Json(error)).into_response())
        }
        Some(version) if mcp::is_stateless(version) => {
            let client = ClientInfo::from_meta(&params);
            if let Err((refusal, what)) = check_stateless_headers(headers, message, version) {
                let actor = pb::Actor {
                    agent_id: agent.to_owned(),
                    client_name: client.name,
                    client_version: client.version,
                    protocol_version: client.protocol_version,
                    transport: "http".into(),
                    remote_addr: peer.to_string(),
                    ..Default::default()
                };
                let facts = DecisionFacts {
                    method: message.method().unwrap_or_default(),
                    tool: params
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    decision: pb::DecisionKind::Deny,
                    rule_id: "gateway.protocol",
                    reason: &format!("header mismatch: {what}"),
                    ..Default::default()
                };
                gateway.record_refusal(actor, &facts).await;
                return Err(refusal);
            }
            let key = header(headers, "x-verdict-session")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{agent}/{}", client.name));
            Ok(Arc::new(Session::new(
                key,
                agent.to_owned(),
                "http",
                peer.to_string(),
                client,
            )))
        }
        _ => existing_session(gateway, headers, agent),
    }
}

fn existing_session(
    gateway: &Gateway,
    headers: &HeaderMap,
    agent: &str,
) -> Result<Arc<Session>, Response> {
    let Some(id) = header(headers, SESSION_HEADER) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required (initialize first)",
        ));
    };
    gateway.sessions.get(id, agent).ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            "Session not found: initialize a new session",
        )
    })
}

/// 2026-07-28: the routing headers must agree with the body the gateway decides on.
fn check_stateless_headers(
    headers: &HeaderMap,
    message: &Message,
    version: &str,
) -> Result<(), (Response, &'static str)> {
    let mismatch = |what: &'static str| {
        let refusal = refuse(
            StatusCode::BAD_REQUEST,
            HEADER_MISMATCH,
            &format!("Header mismatch: {what}"),
        );
        Err((refusal, what))
    };
    if header(headers, "mcp-protocol-version") != Some(version) {
        return mismatch("MCP-Protocol-Version differs from _meta protocolVersion");
    }
    let method = message.method().unwrap_or_default();
    if message.method().is_some()
        && matches!(message, Message::Request { .. })
        && header(headers, "mcp-method") != Some(method)
    {
        return mismatch("Mcp-Method differs from the body's method");
    }
    if matches!(method, "tools/call" | "resources/read" | "prompts/get") {
        let body_name = message
            .params()
            .and_then(|p| p.get("name").or(p.get("uri")))
            .and_then(Value::as_str);
        let header_name = header(headers, "mcp-name").and_then(mcp::decode_header_value);
        if body_name.is_none() || header_name.as_deref() != body_name {
            return mismatch("Mcp-Name differs from the body's name");
        }
    }
    Ok(())
}

async fn answer(
    gateway: Shared,
    session: Arc<Session>,
    id: Value,
    method: String,
    params: Value,
    wants_sse: bool,
) -> Response {
    let (out, notes) = mpsc::channel(STREAM_BUFFER);
    let inflight = session.track(&id);
    let cancel = inflight.token.clone();
    let task = tokio::spawn(async move {
        let _inflight = inflight;
        if let Some(reply) = gateway
            .handle_request(&session, id, &method, params, &out, &_inflight.token)
            .await
        {
            let _ = out.send(reply).await;
        }
    });
    // Whichever way the reply goes, a client that goes away cancels the request upstream.
    let guard = cancel.drop_guard();
    if wants_sse {
        let events = stream::unfold((notes, guard), |(mut notes, guard)| async move {
            let message = notes.recv().await?;
            Some((
                Ok::<_, Infallible>(Event::default().data(message.to_string())),
                (notes, guard),
            ))
        });
        return Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response();
    }
    let _cancel_on_disconnect = guard;
    let mut last = None;
    let mut notes = notes;
    while let Some(message) = notes.recv().await {
        last = Some(message);
    }
    let _ = task.await;
    match last.filter(|m| m.get("id").is_some()) {
        Some(reply) => Json(reply).into_response(),
        None => StatusCode::ACCEPTED.into_response(),
    }
}

async fn get_mcp(
    State(gateway): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let agent = match authenticate(&gateway, &headers, peer) {
        Ok(agent) => agent,
        Err(refusal) => return refusal,
    };
    if header(&headers, SESSION_HEADER).is_none() {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response();
    }
    match existing_session(&gateway, &headers, &agent) {
        Ok(session) => Sse::new(notices(session))
            .keep_alive(KeepAlive::default())
            .into_response(),
        Err(refusal) => refusal,
    }
}

/// The session's server→client notifications, for as long as the client keeps the GET open.
fn notices(session: Arc<Session>) -> impl Stream<Item = Result<Event, Infallible>> {
    let receiver = session.subscribe();
    stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(message) => {
                    return Some((Ok(Event::default().data(message.to_string())), receiver))
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}

async fn delete_mcp(
    State(gateway): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let agent = match authenticate(&gateway, &headers, peer) {
        Ok(agent) => agent,
        Err(refusal) => return refusal,
    };
    match header(&headers, SESSION_HEADER) {
        Some(id) if gateway.sessions.remove(id, &agent) => StatusCode::OK.into_response(),
        Some(_) => refuse(StatusCode::NOT_FOUND, INVALID_REQUEST, "Session not found"),
        None => refuse(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        ),
    }
}
