//! Bad input at the gateway's HTTP front end, as raw HTTP: each gets a clear HTTP status and
//! JSON-RPC error, and the gateway keeps serving. Also the session lifecycle a raw client sees:
//! reuse a session id from a new connection, end it with DELETE, and find it gone.

use reqwest::StatusCode;
use serde_json::{json, Value};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::mcp::{work_memory_bin, HttpProcess};

const KEY: &str = "key-agent-a";
const OTHER_KEY: &str = "key-agent-b";

struct Raw {
    http: reqwest::Client,
    url: String,
}

struct Reply {
    status: StatusCode,
    session: Option<String>,
    body: Value,
}

impl Raw {
    async fn post(
        &self,
        key: Option<&str>,
        session: Option<&str>,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("gateway answers");
        let status = response.status();
        let session = response
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            session,
            body,
        }
    }

    async fn rpc(&self, session: Option<&str>, body: Value) -> Reply {
        self.post(Some(KEY), session, body.to_string(), &[]).await
    }

    async fn initialize(&self, version: &str) -> String {
        let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":version,"capabilities":{},"clientInfo":{"name":"raw","version":"1"}}});
        let reply = self.rpc(None, init).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.body["result"]["protocolVersion"], version);
        reply.session.expect("initialize issues Mcp-Session-Id")
    }
}

fn code(reply: &Reply) -> i64 {
    reply.body["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not a JSON-RPC error: {:?}", reply.body))
}

fn start(extra: &str) -> (HttpProcess, Raw) {
    let config = format!(
        "max_body_bytes = 65536\n{extra}\n[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n[[agents]]\nid = \"agent-b\"\napi_key_sha256 = \"{}\"\n[upstreams.memory]\ncommand = \"{}\"\n",
        key_digest(KEY),
        key_digest(OTHER_KEY),
        work_memory_bin().display()
    );
    let gateway = HttpProcess::gateway(&config).unwrap();
    let raw = Raw {
        http: reqwest::Client::new(),
        url: gateway.url(),
    };
    (gateway, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_and_the_gateway_keeps_serving() {
    let (_gateway, raw) = start("");
    let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"});

    let no_key = raw.post(None, None, list.to_string(), &[]).await;
    assert_eq!(
        (no_key.status, code(&no_key)),
        (StatusCode::UNAUTHORIZED, -32001)
    );
    let bad_key = raw.post(Some("wrong"), None, list.to_string(), &[]).await;
    assert_eq!(bad_key.status, StatusCode::UNAUTHORIZED);
    let evil_origin = raw
        .post(
            Some(KEY),
            None,
            list.to_string(),
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(evil_origin.status, StatusCode::FORBIDDEN);

    let malformed = raw.post(Some(KEY), None, "{\"jsonrpc\":", &[]).await;
    assert_eq!(
        (malformed.status, code(&malformed)),
        (StatusCode::BAD_REQUEST, -32700)
    );
    let not_rpc = raw
        .post(Some(KEY), None, "{\"hello\":\"world\"}", &[])
        .await;
    assert_eq!(
        (not_rpc.status, code(&not_rpc)),
        (StatusCode::BAD_REQUEST, -32600)
    );
    let huge = raw.post(Some(KEY), None, vec![b' '; 70_000], &[]).await;
    assert_eq!(
        (huge.status, code(&huge)),
        (StatusCode::PAYLOAD_TOO_LARGE, -32600)
    );

    let no_session = raw.rpc(None, list.clone()).await;
    assert_eq!(no_session.status, StatusCode::BAD_REQUEST);
    let unknown_session = raw.rpc(Some("no-such-session"), list.clone()).await;
    assert_eq!(unknown_session.status, StatusCode::NOT_FOUND);

    let session = raw.initialize("2025-11-25").await;
    let unknown_method = raw
        .rpc(
            Some(&session),
            json!({"jsonrpc":"2.0","id":3,"method":"no/such"}),
        )
        .await;
    assert_eq!(code(&unknown_method), -32601);
    let unknown_tool = raw.rpc(Some(&session), json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"nope","arguments":{}}})).await;
    assert_eq!(
        (
            code(&unknown_tool),
            unknown_tool.body["error"]["message"].as_str()
        ),
        (-32602, Some("Unknown tool: nope"))
    );
    let batch = raw
        .rpc(Some(&session), json!([list.clone(), list.clone()]))
        .await;
    assert_eq!(
        (batch.status, code(&batch)),
        (StatusCode::BAD_REQUEST, -32600),
        "batches are not part of 2025-11-25"
    );

    let other_agent = raw
        .post(Some(OTHER_KEY), Some(&session), list.to_string(), &[])
        .await;
    assert_eq!(
        other_agent.status,
        StatusCode::NOT_FOUND,
        "a session belongs to the agent that opened it"
    );

    let listed = raw.rpc(Some(&session), list).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(
        listed.body["result"]["tools"].as_array().unwrap().len(),
        6,
        "still serving after all of the above"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_answered_in_2025_03_26_sessions() {
    let (_gateway, raw) = start("");
    let session = raw.initialize("2025-03-26").await;
    let batch = json!([
        {"jsonrpc":"2.0","id":"a","method":"ping"},
        {"jsonrpc":"2.0","method":"notifications/initialized"},
        {"jsonrpc":"2.0","id":"b","method":"tools/list"},
        7
    ]);
    let reply = raw.rpc(Some(&session), batch).await;
    assert_eq!(reply.status, StatusCode::OK);
    let replies = reply.body.as_array().expect("array reply");
    assert_eq!(
        replies.len(),
        3,
        "one reply per request plus one error for the invalid element: {replies:?}"
    );
    assert_eq!(replies[0]["id"], "a");
    assert_eq!(replies[1]["id"], "b");
    assert_eq!(replies[2]["error"]["code"], -32600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_reconnects_and_ends_with_delete() {
    let (gateway, raw) = start("");
    let session = raw.initialize("2025-06-18").await;
    // A brand-new HTTP client (new connection) reuses the session id.
    let other_connection = Raw {
        http: reqwest::Client::new(),
        url: gateway.url(),
    };
    let reply = other_connection
        .rpc(
            Some(&session),
            json!({"jsonrpc":"2.0","id":5,"method":"ping"}),
        )
        .await;
    assert_eq!(reply.body["result"], json!({}));
    let deleted = raw
        .http
        .delete(gateway.url())
        .bearer_auth(KEY)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let gone = raw
        .rpc(
            Some(&session),
            json!({"jsonrpc":"2.0","id":6,"method":"ping"}),
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_headers_must_match_the_body() {
    let (_gateway, raw) = start("");
    let meta = json!({"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"}});
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_work_memories","arguments":{"project":"k"},"_meta":meta}});
    let headers = |method: &'static str, name: &'static str| {
        vec![
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", method),
            ("mcp-name", name),
        ]
    };
    let ok = raw
        .post(
            Some(KEY),
            None,
            call.to_string(),
            &headers("tools/call", "list_work_memories"),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_eq!(ok.body["result"]["resultType"], "complete");
    let wrong_name = raw
        .post(
            Some(KEY),
            None,
            call.to_string(),
            &headers("tools/call", "add_work_memory"),
        )
        .await;
    assert_eq!(
        (wrong_name.status, code(&wrong_name)),
        (StatusCode::BAD_REQUEST, -32020)
    );
    let wrong_method = raw
        .post(
            Some(KEY),
            None,
            call.to_string(),
            &headers("tools/list", "list_work_memories"),
        )
        .await;
    assert_eq!(
        (wrong_method.status, code(&wrong_method)),
        (StatusCode::BAD_REQUEST, -32020)
    );
    let no_headers = raw.post(Some(KEY), None, call.to_string(), &[]).await;
    assert_eq!(code(&no_headers), -32020);
    let future = call.to_string().replace("2026-07-28", "2099-01-01");
    let unsupported = raw
        .post(
            Some(KEY),
            None,
            future,
            &[
                ("mcp-protocol-version", "2099-01-01"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "list_work_memories"),
            ],
        )
        .await;
    assert_eq!(
        (unsupported.status, code(&unsupported)),
        (StatusCode::BAD_REQUEST, -32022)
    );
    assert_eq!(
        unsupported.body["error"]["data"]["supported"],
        json!(["2026-07-28"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_garbage_upstream_fails_only_its_own_calls() {
    // An HTTP "upstream" that answers every request with garbage, and one that is not there.
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_url = format!("http://{}/mcp", garbage.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = garbage.accept().await.unwrap();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\nnot json!").await;
            });
        }
    });
    let dead_port = verdict_tests::process::free_port();
    // And one that works until it is killed.
    let mut dying = HttpProcess::work_memory(&["--only", "search_work_memory"]).unwrap();
    let extra = format!(
        "[upstreams.garbage]\nurl = \"{garbage_url}\"\n[upstreams.dead]\nurl = \"http://127.0.0.1:{dead_port}/mcp\"\n[upstreams.dying]\nurl = \"{}\"\n",
        dying.url()
    );
    let (_gateway, raw) = start(&extra);
    let session = raw.initialize("2025-11-25").await;
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    let listed = raw.rpc(Some(&session), list.clone()).await;
    let names: Vec<&str> = listed.body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        7,
        "the healthy upstreams' tools are listed, the broken ones' absent: {names:?}"
    );
    // A tool the gateway does not know may be one of the unreachable upstreams': -32000 naming
    // them, as for any call to an upstream that is down (not -32602 "Unknown tool").
    let unknown = json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"no_such_tool","arguments":{}}});
    let unknown = raw.rpc(Some(&session), unknown).await;
    assert_eq!(code(&unknown), -32000, "{:?}", unknown.body);
    assert_eq!(
        unknown.body["error"]["message"],
        "upstream dead, garbage unreachable; tool no_such_tool is not available"
    );
    assert!(
        names.contains(&"memory__search_work_memory")
            && names.contains(&"dying__search_work_memory"),
        "{names:?}"
    );

    dying.kill();
    let search = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"dying__search_work_memory","arguments":{"query":"x"}}});
    let failed = raw.rpc(Some(&session), search).await;
    assert_eq!(code(&failed), -32000);
    assert!(
        failed.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream dying"),
        "{:?}",
        failed.body
    );

    let read = raw.rpc(Some(&session), json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_work_memories","arguments":{"project":"x"}}})).await;
    assert!(
        read.body["result"].is_object(),
        "other upstreams keep serving: {:?}",
        read.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_upstream_that_dies_is_relaunched() {
    // A distinctive argument lets the test find (and kill) exactly this gateway's child.
    let marker = format!("{}", 40_000 + std::process::id() % 20_000);
    let config = format!(
        "[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n[upstreams.memory]\ncommand = \"{}\"\nargs = [\"--page-size\", \"{marker}\"]\n",
        key_digest(KEY),
        work_memory_bin().display()
    );
    let gateway = HttpProcess::gateway(&config).unwrap();
    let raw = Raw {
        http: reqwest::Client::new(),
        url: gateway.url(),
    };
    let session = raw.initialize("2025-11-25").await;
    let call = |id: u64, tool: &str, arguments: Value| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":arguments}});
    let stored = raw
        .rpc(
            Some(&session),
            call(
                1,
                "add_work_memory",
                json!({"project": "k", "content": "v"}),
            ),
        )
        .await;
    assert_eq!(
        stored.body["result"]["content"][0]["text"],
        "✅ 새로운 메모리가 저장되었습니다.\nID: mem_1",
        "{:?}",
        stored.body
    );

    let killed = std::process::Command::new("pkill")
        .args(["-9", "-f", &format!("work-memory --page-size {marker}")])
        .status()
        .unwrap();
    assert!(killed.success(), "the stdio upstream was running");

    let mut reply = Value::Null;
    for attempt in 0..20 {
        reply = raw
            .rpc(
                Some(&session),
                call(10 + attempt, "list_work_memories", json!({"project": "k"})),
            )
            .await
            .body;
        if reply.get("result").is_some() {
            break;
        }
        assert_eq!(
            reply["error"]["code"], -32000,
            "the call in flight when it died fails clearly: {reply:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A new process: the call went through, and the old process's memory is gone.
    assert_eq!(reply["result"]["content"][0]["text"], "", "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_agent_are_capped() {
    let (gateway, raw) = start("max_sessions_per_agent = 2");
    let first = raw.initialize("2025-11-25").await;
    raw.initialize("2025-11-25").await;
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}});
    let third = raw.rpc(None, init.clone()).await;
    assert_eq!(
        third.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        third.body
    );
    let other_agent = raw.post(Some(OTHER_KEY), None, init.to_string(), &[]).await;
    assert_eq!(other_agent.status, StatusCode::OK, "the cap is per agent");
    let deleted = raw
        .http
        .delete(gateway.url())
        .bearer_auth(KEY)
        .header("mcp-session-id", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(
        raw.rpc(None, init).await.status,
        StatusCode::OK,
        "room again after ending a session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_timeout_is_cancelled_upstream_and_answered() {
    let (_gateway, raw) = start("call_timeout_secs = 1");
    let session = raw.initialize("2025-11-25").await;
    let call = |id: u64, tool: &str, arguments: Value| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":arguments}});
    let started = std::time::Instant::now();
    let slow = raw
        .rpc(
            Some(&session),
            call(1, "long_task", json!({"steps": 100, "delay_ms": 50})),
        )
        .await;
    assert_eq!(code(&slow), -32000);
    assert!(
        slow.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no answer within 1 s"),
        "{:?}",
        slow.body
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "answered at the deadline, not when the task ended"
    );
    let mut last = String::new();
    for id in 2..40 {
        let read = raw
            .rpc(
                Some(&session),
                call(id, "list_work_memories", json!({"project": "long_task"})),
            )
            .await;
        last = read.body["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if last.starts_with("cancelled") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        last.starts_with("cancelled at step"),
        "the upstream saw the cancellation: {last:?}"
    );
}
