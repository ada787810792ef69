//! How agents reach the gateway: Streamable HTTP ([`http`]) and stdio ([`stdio`]). Both hand
//! parsed messages to [`crate::Gateway`]; neither decides anything itself. [`relay`] is a stdio
//! front for another process's HTTP gateway; [`pipe`] is the line framing both stdio fronts share.

pub mod http;
pub mod pipe;
pub mod relay;
pub mod stdio;

use crate::jsonrpc::{self, Message, INVALID_REQUEST};
use crate::mcp;
use crate::session::Session;
use crate::Gateway;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Answers a batch (JSON-RPC arrays are valid only in revision 2025-03-26): each request in
/// turn, without streaming; the responses in one array. `Err` refuses the whole batch.
pub(crate) async fn answer_batch(
    gateway: &Gateway,
    session: &Arc<Session>,
    items: Vec<Result<Message, Value>>,
) -> Result<Vec<Value>, Value> {
    if session.client().protocol_version != mcp::BATCH_VERSION {
        return Err(jsonrpc::error(
            Value::Null,
            INVALID_REQUEST,
            "Invalid Request: batch requests are not supported in this protocol revision",
        ));
    }
    let mut replies = Vec::new();
    for item in items {
        match item {
            Err(error) => replies.push(error),
            Ok(Message::Request { id, method, params }) => {
                let (out, _) = mpsc::channel(1);
                let inflight = session.track(&id);
                if let Some(reply) = gateway
                    .handle_request(session, id, &method, params, &out, &inflight.token)
                    .await
                {
                    replies.push(reply);
                }
            }
            Ok(Message::Notification { method, params }) => {
                gateway.handle_notification(session, &method, &params)
            }
            Ok(Message::Response(_)) => {}
        }
    }
    Ok(replies)
}
