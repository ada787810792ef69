//! Stdio front end, for clients that launch the gateway as a command (`--stdio --agent NAME`).
//!
//! One process is one agent session: the agent id comes from the command line (whoever can
//! launch the process is trusted as that agent, as with any local stdio server). Requests run
//! concurrently; every outgoing line goes through one writer so messages never interleave.
//! Input ends at EOF or on the stop signal; the calls in flight then finish (see [`pipe`]) before
//! [`serve`] returns, so the caller can append the shutdown checkpoint after the last decision.

use crate::downstream::answer_batch;
use crate::downstream::pipe::{self, InFlight, PipeReader};
use crate::jsonrpc::{self, Body, Message};
use crate::mcp::{self, ClientInfo};
use crate::session::Session;
use crate::Gateway;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Serves one agent over `input`/`output` until `input` ends or `stop` resolves, then waits for
/// the calls in flight.
pub async fn serve(
    gateway: Arc<Gateway>,
    agent: String,
    input: impl AsyncRead + Unpin,
    output: impl AsyncWrite + Unpin + Send + 'static,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    // Registered like an HTTP session so gateway-wide notifications (tools/list_changed) reach it.
    let session = gateway.sessions.insert(Session::new(
        uuid::Uuid::new_v4().to_string(),
        agent,
        "stdio",
        "stdio".into(),
        ClientInfo::default(),
    ));
    let (out, writer) = pipe::spawn_writer(output);
    let mut notices = session.subscribe();
    let notices_out = out.clone();
    let relay = tokio::spawn(async move {
        while let Ok(notice) = notices.recv().await {
            if notices_out.send(notice).await.is_err() {
                break;
            }
        }
    });
    let mut reader = PipeReader::new(input, gateway.max_body_bytes, stop);
    let mut inflight = InFlight::default();
    while let Some(line) = reader.next(&out).await {
        match jsonrpc::parse_body(&line) {
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
            Ok(Body::Single(message)) => dispatch(&gateway, &session, message, &out, &mut inflight),
        }
    }
    inflight.drain().await;
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
    inflight: &mut InFlight,
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
            let tracked = session.track(&id);
            inflight.spawn(async move {
                if let Some(reply) = gateway
                    .handle_request(&session, id, &method, params, &out, &tracked.token)
                    .await
                {
                    let _ = out.send(reply).await;
                }
            });
        }
    }
}
