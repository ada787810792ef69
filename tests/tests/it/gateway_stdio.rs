//! The standalone stdio gateway (`--stdio --agent`) as desktop clients run it: one writer per
//! journal (a second process on the same config is refused and records nothing), stopped by
//! SIGTERM/SIGINT/SIGHUP or the end of stdin with a shutdown checkpoint and no orphaned upstream,
//! approvals through the admin API (standalone, and behind a `--connect` relay), a parse error
//! (not an exit) for bytes that are not UTF-8, and the 2024-11-05 revision for older clients,
//! over stdio and Streamable HTTP.

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use verdict_proto::pb::{event_body::Kind, DecisionKind};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::bins::cargo_bin;
use verdict_tests::mcp::{gateway_bin, work_memory_bin, write_config, HttpProcess};
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::stdio::{proc_stat, processes, StdioProcess};
use verdict_tests::trail::{self, journal_events};

const AGENT_KEY: &str = "stdio-agent-key";
const ADMIN_TOKEN: &str = "stdio-admin-token";

const POLICY: &str = r#"{
  "version": "1",
  "default": "allow",
  "rules": [
    {"id": "no-delete", "match": {"tool": "session_manager", "arguments": {"action": "delete_session", "session_id": "s-denied"}},
     "action": "deny", "reason": "sessions are deleted by humans only"},
    {"id": "human-deletes", "match": {"tool": "session_manager", "arguments": {"action": "delete_session"}},
     "action": "require_approval", "timeout": 60}
  ]
}"#;

/// A gateway config in `dir` (policy beside it) whose stdio upstream is the sample server with
/// `upstream_args`; `extra` is appended.
fn config(dir: &Path, upstream_args: &[&str], extra: &str) -> String {
    let policy = dir.join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    format!(
        "policy = {:?}\n[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n\
         [upstreams.memory]\ncommand = {:?}\nargs = {:?}\n{extra}",
        policy.display().to_string(),
        key_digest(AGENT_KEY),
        work_memory_bin().display().to_string(),
        upstream_args,
    )
}

/// `verdict-gateway --config CONFIG --stdio --agent agent-a [args]`, logging to `dir`.
fn stdio_gateway(dir: &Path, config: &Path, args: &[&str]) -> StdioProcess {
    let mut command = tokio::process::Command::new(gateway_bin());
    command
        .arg("--config")
        .arg(config)
        .args(["--stdio", "--agent", "agent-a"])
        .args(args)
        .env("RUST_LOG", "info");
    StdioProcess::spawn(command, &dir.join("stdio-gateway.log"))
}

fn delete_session(session_id: &str) -> Value {
    json!({"name": "session_manager",
        "arguments": {"action": "delete_session", "session_id": session_id, "confirm": true}})
}

fn text(reply: &Value) -> &str {
    reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_journal_is_refused_and_records_nothing() {
    let setup = tempfile::tempdir().unwrap();
    let first = HttpProcess::gateway(&config(setup.path(), &[], "")).unwrap();
    let config_path = first.dir.path().join("gateway.toml");
    let before = journal_events(&first.journal_dir()).len();

    // The way a desktop client would launch a second copy, and a second HTTP gateway.
    let second_stdio = Command::new(gateway_bin())
        .arg("--config")
        .arg(&config_path)
        .args(["--stdio", "--agent", "agent-a"])
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    let second_http = Command::new(gateway_bin())
        .arg("--config")
        .arg(&config_path)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    for second in [&second_stdio, &second_http] {
        assert!(!second.status.success(), "a second writer must not start");
        let message = stderr(second);
        assert!(
            message.contains("is locked by another writer (pid ")
                && message.contains(", mode http)")
                && message.contains("--stdio --connect"),
            "the refusal names the holder and the way out: {message}"
        );
    }
    let lock = first.journal_dir().join(verdict_journal::LOCK_FILE);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&lock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        journal_events(&first.journal_dir()).len(),
        before,
        "nothing recorded by the refused processes"
    );

    // The first keeps deciding and recording.
    let client = verdict_tests::mcp::connect(&first.url(), AGENT_KEY).await;
    let denied = verdict_tests::mcp::call_tool(
        &client,
        "session_manager",
        json!({"action": "delete_session", "session_id": "s-denied", "confirm": true}),
    )
    .await
    .unwrap();
    assert!(denied.is_error.unwrap_or(false));
    client.cancel().await.unwrap();
    let mut first = first;
    first.terminate();
    let verify = Command::new(cargo_bin("verdict"))
        .arg("verify")
        .arg("--journal")
        .arg(first.journal_dir())
        .arg("--public-key")
        .arg(first.public_key())
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    assert!(
        verify.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        stderr(&verify)
    );
    let events = journal_events(&first.journal_dir());
    assert!(trail::findings(&events, &first.public_key()).is_empty());
    assert!(events
        .iter()
        .filter_map(trail::decision)
        .any(|d| d.rule_id == "no-delete"));
}

/// The TypeScript SDK 2.x way: launch, `server/discover`, then stop (by `how`). The upstream
/// ignores stdin EOF, like the real Work Memory server.
async fn stops_cleanly(how: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config(dir.path(), &["--stay-after-eof"], ""));
    let mut gateway = stdio_gateway(dir.path(), &config, &[]);
    let discover = gateway
        .request(
            1,
            "server/discover",
            json!({"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "ts-sdk", "version": "2.0.0"},
            "io.modelcontextprotocol/clientCapabilities": {}}}),
        )
        .await;
    assert!(
        discover["result"]["supportedVersions"].is_array(),
        "{discover}"
    );
    let gateway_pid = gateway.pid();
    let children: Vec<_> = processes()
        .into_iter()
        .filter(|p| p.1 == gateway_pid)
        .collect();
    let [(child, _, group)] = children.as_slice() else {
        panic!("expected one upstream child, found {children:?}");
    };
    assert_eq!(
        child, group,
        "the upstream runs in a process group of its own"
    );

    match how {
        "EOF" => gateway.close_stdin(),
        signal => gateway.signal(signal),
    }
    let status = gateway.wait().await;
    assert!(
        status.success(),
        "exit status after {how}: {status:?}; log:\n{}",
        gateway.log()
    );
    assert_eq!(
        proc_stat(*child),
        None,
        "the upstream (pid {child}) outlived the gateway"
    );
    let left: Vec<_> = processes().into_iter().filter(|p| p.2 == *group).collect();
    assert!(
        left.is_empty(),
        "processes left in the upstream's group: {left:?}"
    );

    let events = journal_events(&dir.path().join("journal"));
    let last = events.last().unwrap().decode_body().unwrap();
    match last.kind {
        Some(Kind::Checkpoint(checkpoint)) => assert_eq!(checkpoint.reason, "shutdown"),
        other => panic!("the last event is not the shutdown checkpoint: {other:?}"),
    }
    assert!(trail::findings(&events, &dir.path().join("keys/verdict.pub")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_discover_stops_the_upstream_and_checkpoints() {
    stops_cleanly("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_cleanly() {
    stops_cleanly("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_stops_cleanly() {
    stops_cleanly("HUP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_eof_stops_cleanly() {
    stops_cleanly("EOF").await;
}

fn approvals(admin_url: &str, args: &[&str]) -> std::process::Output {
    verdict_tests::approvals::approvals(admin_url, ADMIN_TOKEN, args)
}

/// The approval id of the one pending call on `session_id`.
fn pending(admin_url: &str, session_id: &str) -> String {
    let one = verdict_tests::approvals::pending(admin_url, ADMIN_TOKEN, session_id);
    assert_eq!(one["agent"], "agent-a");
    one["approval_id"].as_str().unwrap().to_owned()
}

fn admin_config() -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nid = \"alice\"\napi_key_sha256 = \"{}\"\n",
        key_digest(ADMIN_TOKEN)
    )
}

/// Over `client` (initialized), two deletes are held; a human approves the first and rejects
/// the second with `verdict approvals`; the client reads each outcome, and `journal` records
/// both steps of each, bound to their approval ids. Input ends and the client exits 0.
async fn approve_one_reject_one(mut client: StdioProcess, admin_url: &str, journal: &Path) {
    for (id, session) in [(1, "s1"), (2, "s2")] {
        client
            .send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": delete_session(session)}))
            .await;
    }
    let s1 = tokio::task::block_in_place(|| pending(admin_url, "s1"));
    let s2 = tokio::task::block_in_place(|| pending(admin_url, "s2"));
    let approved = tokio::task::block_in_place(|| approvals(admin_url, &["approve", &s1]));
    assert!(approved.status.success(), "{}", stderr(&approved));
    let rejected = tokio::task::block_in_place(|| {
        approvals(
            admin_url,
            &["reject", &s2, "--reason", "세션은 사람이 삭제합니다"],
        )
    });
    assert!(rejected.status.success(), "{}", stderr(&rejected));
    let (reply1, reply2) = (
        client.reply_to(&json!(1)).await,
        client.reply_to(&json!(2)).await,
    );
    assert!(
        !text(&reply1).starts_with("[approval"),
        "approved: the call went on: {reply1}"
    );
    assert!(
        text(&reply2).starts_with(
            "[approval rejected] rule human-deletes by alice: 세션은 사람이 삭제합니다"
        ),
        "{reply2}"
    );
    client.close_stdin();
    assert!(client.wait().await.success());

    let mut steps: Vec<_> = journal_events(journal)
        .iter()
        .filter_map(trail::decision)
        .filter(|d| d.tool == "session_manager")
        .map(|d| {
            (
                d.approval_id,
                DecisionKind::try_from(d.decision).unwrap(),
                d.approver,
            )
        })
        .collect();
    steps.sort();
    let mut expected = vec![
        (s1.clone(), DecisionKind::ApprovalRequested, String::new()),
        (s1, DecisionKind::Approved, "alice".to_owned()),
        (s2.clone(), DecisionKind::ApprovalRequested, String::new()),
        (s2, DecisionKind::Rejected, "alice".to_owned()),
    ];
    expected.sort();
    assert_eq!(steps, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_work_for_a_standalone_stdio_agent() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config(dir.path(), &[], &admin_config()));
    let ready = dir.path().join("ready");
    let mut gateway = stdio_gateway(
        dir.path(),
        &config,
        &["--ready-file", ready.to_str().unwrap()],
    );
    gateway.initialize("2025-06-18").await;
    let admin = std::fs::read_to_string(ready.with_extension("admin")).unwrap();
    let admin_url = format!("http://{}", admin.trim());
    approve_one_reject_one(gateway, &admin_url, &dir.path().join("journal")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_work_for_an_agent_behind_a_stdio_relay() {
    let setup = tempfile::tempdir().unwrap();
    let gateway = HttpProcess::gateway(&config(setup.path(), &[], &admin_config())).unwrap();
    let mut command = tokio::process::Command::new(gateway_bin());
    command
        .args(["--stdio", "--connect", &gateway.url()])
        .env("VERDICT_API_KEY", AGENT_KEY);
    let mut relay = StdioProcess::spawn(command, &setup.path().join("relay.log"));
    relay.initialize("2025-06-18").await;
    approve_one_reject_one(relay, &gateway.admin_url(), &gateway.journal_dir()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_that_is_not_utf8_gets_a_parse_error_and_serving_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config(dir.path(), &[], ""));
    let mut gateway = stdio_gateway(dir.path(), &config, &[]);
    gateway.send_raw(&[0xff, 0xfe]).await;
    let error = gateway.recv().await;
    assert_eq!(error["error"]["code"], -32700, "{error}");
    assert_eq!(error["id"], Value::Null);
    let reply = gateway.initialize("2025-06-18").await;
    assert_eq!(
        reply["result"]["protocolVersion"], "2025-06-18",
        "still serving: {reply}"
    );
    let pong = gateway.request(1, "ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));
    gateway.close_stdin();
    assert!(gateway.wait().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2024_11_05_client_is_answered_in_2024_11_05_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config(dir.path(), &[], ""));
    let mut gateway = stdio_gateway(dir.path(), &config, &[]);
    let reply = gateway.initialize("2024-11-05").await;
    assert_eq!(reply["result"]["protocolVersion"], "2024-11-05", "{reply}");
    let tools = gateway.request(1, "tools/list", json!({})).await;
    let names: Vec<_> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert!(names.contains(&json!("session_manager")), "{tools}");
    let denied = gateway
        .request(2, "tools/call", delete_session("s-denied"))
        .await;
    assert!(
        text(&denied).starts_with("[policy denied] rule no-delete"),
        "{denied}"
    );
    gateway.close_stdin();
    assert!(gateway.wait().await.success());
}

/// The JSON-RPC message of an HTTP reply, JSON or a one-message SSE stream.
async fn http_reply(response: reqwest::Response) -> Value {
    let sse = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream");
    let body = response.text().await.unwrap();
    let json = match sse {
        true => body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .rfind(|d| !d.is_empty())
            .unwrap()
            .to_owned(),
        false => body,
    };
    serde_json::from_str(&json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2024_11_05_client_is_answered_in_2024_11_05_over_http() {
    let setup = tempfile::tempdir().unwrap();
    let gateway = HttpProcess::gateway(&config(setup.path(), &[], "")).unwrap();
    let http = reqwest::Client::new();
    let post = |body: Value, session: Option<&str>| {
        let mut request = http
            .post(gateway.url())
            .bearer_auth(AGENT_KEY)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send()
    };
    let init = post(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "old-host", "version": "1"}}}), None)
        .await
        .unwrap();
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let reply = http_reply(init).await;
    assert_eq!(reply["result"]["protocolVersion"], "2024-11-05", "{reply}");
    let initialized = post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(&session),
    )
    .await
    .unwrap();
    assert!(initialized.status().is_success());
    // 2024-11-05 clients send no MCP-Protocol-Version header.
    let denied = http_reply(post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": delete_session("s-denied")}), Some(&session)).await.unwrap()).await;
    assert!(
        text(&denied).starts_with("[policy denied] rule no-delete"),
        "{denied}"
    );
}
