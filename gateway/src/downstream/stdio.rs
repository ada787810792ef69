//! Stdio front end, for clients that launch the gateway as a command (`--stdio --agent NAME`).
//!
//! One process is one agent session: the agent id comes from the command line (whoever can
//! launch the process is trusted as that agent, as with any local stdio server). Requests run
//! concurrently; every outgoing line goes through one writer so messages never interleave.

use crate::downstream::answer_batch;
use crate::jsonrpc::{self, Body, Message};
use crate::mcp::{self, ClientInfo};
use crate::session::Session;
use crate::Gateway;
use serde_json::Value;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Outgoing messages buffered before request handlers wait for the writer.
const OUT_BUFFER: usize = 256;

/// Serves one agent over `input`/`output` until `input` ends.
pub async fn serve(
    gateway: Arc<Gateway>,
    agent: String,
    input: impl AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin + Send + 'static,
) {
    // Registered like an HTTP session so gateway-wide notifications (tools/list_changed) reach it.
    let session = gateway.sessions.insert(Session::new(
        uuid::Uuid::new_v4().to_string(),
        agent,
        "stdio",
        "stdio".into(),
        ClientInfo::default(),
    ));
    let (out, mut outgoing) = mpsc::channel::<Value>(OUT_BUFFER);
    let mut notices = session.subscribe();
    let notices_out = out.clone();
    let relay = tokio::spawn(async move {
        while let Ok(notice) = notices.recv().await {
            if notices_out.send(notice).await.is_err() {
                break;
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let mut line = message.to_string();
            line.push('\n');
            if output.write_all(line.as_bytes()).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(input).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > gateway.max_body_bytes {
            let message = format!("Message exceeds the {}-byte limit", gateway.max_body_bytes);
            let _ = out
                .send(jsonrpc::error(
                    Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    &message,
                ))
                .await;
            continue;
        }
        match jsonrpc::parse_body(line.as_bytes()) {
            Err(error) => {
                let _ = out.send(error).await;
            }
            Ok(Body::Batch(items)) => match answer_batch(&gateway, &session, items).await {
                Err(refusal) => {
                    let _ = out.send(refusal).await;
                }
                Ok(replies) if replies.is_empty() => {}
                Ok(replies) => {
                    let _ = out.send(Value::Array(replies)).await;
                }
            },
            Ok(Body::Single(message)) => dispatch(&gateway, &session, message, &out),
        }
    }
    relay.abort();
    gateway.sessions.remove(&session.id, &session.agent);
    drop(out);
    let _ = writer.await;
}

fn dispatch(
    gateway: &Arc<Gateway>,
    session: &Arc<Session>,
    message: Message,
    out: &mpsc::Sender<Value>,
) {
    match message {
        Message::Response(_) => {}
        Message::Notification { method, params } => {
            gateway.handle_notification(session, &method, &params)
        }
        Message::Request { id, method, params } => {
            if mcp::meta_version(&params).is_some_and(mcp::is_stateless) {
                session.set_client(ClientInfo::from_meta(&params));
            }
            let (gateway, session, out) = (Arc::clone(gateway), Arc::clone(session), out.clone());
            // Registered before the next line is read, so a cancel right behind it finds it.
            let inflight = session.track(&id);
            tokio::spawn(async move {
                if let Some(reply) = gateway
                    .handle_request(&session, id, &method, params, &out, &inflight.token)
                    .await
                {
                    let _ = out.send(reply).await;
                }
            });
        }
    }
}
