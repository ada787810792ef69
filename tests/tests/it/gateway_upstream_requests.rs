//! An HTTP upstream that, in the middle of a tools/call, sends the gateway a `ping` request on the
//! call's SSE stream and finishes the call only once the gateway has answered it. Without an
//! answer the call would hang; with one, the agent gets the tool result.

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::{stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use verdict_service::credentials::digest as key_digest;
use verdict_tests::mcp::HttpProcess;

#[derive(Default)]
struct Fake {
    answered: Notify,
    answer: Mutex<Option<Value>>,
}

async fn fake_mcp(State(fake): State<Arc<Fake>>, Json(message): Json<Value>) -> Response {
    let id = message["id"].clone();
    match message["method"].as_str() {
        Some("server/discover") => Json(json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":"Method not found"}})).into_response(),
        Some("initialize") => (
            [("mcp-session-id", "fake-session")],
            Json(json!({"jsonrpc":"2.0","id":id,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"fake","version":"1"}}})),
        )
            .into_response(),
        Some("tools/list") => Json(json!({"jsonrpc":"2.0","id":id,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}})).into_response(),
        Some("tools/call") => {
            let ping = json!({"jsonrpc":"2.0","id":"srv-1","method":"ping"});
            let waiting = Arc::clone(&fake);
            let events = stream::iter([Ok::<_, Infallible>(Event::default().data(ping.to_string()))]).chain(stream::once(async move {
                waiting.answered.notified().await;
                let result = json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":"pong answered"}]}});
                Ok(Event::default().data(result.to_string()))
            }));
            Sse::new(events).into_response()
        }
        None if message.get("result").is_some() || message.get("error").is_some() => {
            *fake.answer.lock().unwrap() = Some(message);
            fake.answered.notify_one();
            StatusCode::ACCEPTED.into_response()
        }
        _ => StatusCode::ACCEPTED.into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_request_mid_call_is_answered_and_the_call_completes() {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/mcp", post(fake_mcp))
        .with_state(Arc::clone(&fake));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = format!(
        "[[agents]]\nid = \"a\"\napi_key_sha256 = \"{}\"\n[upstreams.fake]\nurl = \"{url}\"\n",
        key_digest("k")
    );
    let gateway = HttpProcess::gateway(&config).unwrap();
    let http = reqwest::Client::new();
    let post = |body: Value, session: Option<String>| {
        let mut request = http
            .post(gateway.url())
            .bearer_auth("k")
            .header("accept", "application/json")
            .json(&body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send()
    };
    let init = post(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}), None).await.unwrap();
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    post(
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
        Some(session.clone()),
    )
    .await
    .unwrap();
    let call = post(
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{}}}),
        Some(session),
    );
    let reply: Value = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("call completed")
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        reply["result"]["content"][0]["text"], "pong answered",
        "{reply}"
    );
    assert_eq!(
        fake.answer.lock().unwrap().clone().unwrap(),
        json!({"jsonrpc":"2.0","id":"srv-1","result":{}})
    );
}
