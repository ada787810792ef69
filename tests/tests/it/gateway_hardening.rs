//! The gateway under attack by strangers and greedy agents: it closes for no one and leaks
//! nothing. Each test is an attack that worked on the gateway before (issue 15 items 6, 7, 8, 10,
//! 12 and issue 14 item 6), run against the real gateway binary and the sample MCP server:
//! - a flood of unauthenticated requests costs a bounded number of journal bytes (aggregated
//!   refusal events), a source over its limit is throttled, and the journal's disk reserve keeps
//!   strangers' refusals out of the space decisions need;
//! - 150 calls with 3.9 MB session names leave the gateway's memory bounded;
//! - stalled connections are closed, the connection limit holds, a normal client is served;
//! - secrets in arguments never reach the journal, files are the owner's alone;
//! - `/metrics` is not served to agents, refused admin calls are recorded.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use verdict_proto::pb::{self, DecisionKind};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::bins::cargo_bin;
use verdict_tests::mcp::{call_tool, connect, work_memory_bin, HttpProcess};
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::trail::{self, journal_events};
use verdict_tests::wait_until;

const KEY: &str = "hardening-agent-key";
const ADMIN_TOKEN: &str = "hardening-admin-token";

/// A gateway over the sample server; `top` goes before any table, `tables` after.
fn gateway(top: &str, tables: &str) -> HttpProcess {
    let config = format!(
        "metrics_listen = \"127.0.0.1:0\"\n{top}\n[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n[upstreams.memory]\ncommand = \"{}\"\n{tables}\n",
        key_digest(KEY),
        work_memory_bin().display()
    );
    HttpProcess::gateway(&config).unwrap()
}

/// Bytes in the journal's segment files.
fn journal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// The aggregate refusal events in the journal.
fn refusal_events(dir: &Path) -> Vec<pb::Decision> {
    journal_events(dir)
        .iter()
        .filter_map(trail::decision)
        .filter(|d| d.decision == DecisionKind::Refused as i32)
        .collect()
}

/// Refusals counted in the journal's aggregate events, for `rule`.
fn refused_count(dir: &Path, rule: &str) -> u64 {
    refusal_events(dir)
        .iter()
        .flat_map(|d| &d.refusals)
        .filter(|r| r.rule_id == rule)
        .map(|r| r.count)
        .sum()
}

fn list_tools() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string()
}

async fn post(http: &reqwest::Client, gateway: &HttpProcess, key: Option<&str>) -> StatusCode {
    let mut request = http
        .post(gateway.url())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(list_tools());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status()
}

/// An authenticated call that goes through and is recorded.
async fn authenticated_call_works(gateway: &HttpProcess, key: &str) {
    let client = connect(&gateway.url(), KEY).await;
    let result = call_tool(
        &client,
        "add_work_memory",
        json!({"project": key, "content": "v"}),
    )
    .await
    .unwrap();
    assert!(!result.is_error.unwrap_or(false), "{result:?}");
    let _ = client.cancel().await;
    let allowed = journal_events(&gateway.journal_dir())
        .iter()
        .filter_map(trail::decision)
        .any(|d| d.tool == "add_work_memory" && d.arguments_json.contains(key));
    assert!(allowed, "the authenticated call is journaled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_flood_costs_a_bounded_number_of_journal_bytes() {
    let gateway = gateway("", "[audit]\nrefusal_interval_secs = 1");
    let journal = gateway.journal_dir();
    let http = reqwest::Client::new();
    let before = journal_bytes(&journal);
    const FLOOD: u64 = 600;
    for i in 0..FLOOD {
        let mut request = http
            .post(gateway.url())
            .header("content-type", "application/json")
            .body(list_tools());
        request = match i % 3 {
            0 => request,
            1 => request.bearer_auth("not-a-key"),
            _ => request
                .bearer_auth(KEY)
                .header("origin", "http://evil.example"),
        };
        let status = request.send().await.unwrap().status();
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status),
            "{status}"
        );
    }
    wait_until("the aggregate refusal events name every refusal", || {
        refused_count(&journal, "gateway.auth") + refused_count(&journal, "gateway.origin") == FLOOD
    })
    .await;
    let added = journal_bytes(&journal) - before;
    eprintln!(
        "{FLOOD} refused requests added {added} journal bytes: {:.2} bytes per refused request",
        added as f64 / FLOOD as f64
    );
    assert!(added < 4096, "{added} bytes for {FLOOD} refusals");

    let events = refusal_events(&journal);
    assert!(
        events.len() <= 5,
        "one event per interval: {}",
        events.len()
    );
    let counts: Vec<_> = events.iter().flat_map(|d| &d.refusals).collect();
    assert!(counts.iter().all(|r| r.source == "127.0.0.1"));
    assert!(counts
        .iter()
        .all(|r| r.first_unix_nanos <= r.last_unix_nanos));
    assert_eq!(refused_count(&journal, "gateway.origin"), FLOOD / 3);
    assert!(events
        .iter()
        .all(|d| d.targets.iter().any(|t| t.value == "127.0.0.1")));
    assert_eq!(
        gateway
            .metric("verdict_gateway_refusals_total{reason=\"no_key\"}")
            .await,
        200.0
    );

    authenticated_call_works(&gateway, "after-the-flood").await;
    let all = journal_events(&journal);
    assert!(trail::findings(&all, &gateway.public_key()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_its_refusal_limit_is_throttled_but_agents_are_served() {
    let gateway = gateway("", "[audit]\nrefusals_per_source = 5");
    let http = reqwest::Client::new();
    for _ in 0..5 {
        assert_eq!(post(&http, &gateway, None).await, StatusCode::UNAUTHORIZED);
    }
    let response = http
        .post(gateway.url())
        .header("content-type", "application/json")
        .body(list_tools())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["connection"], "close");
    authenticated_call_works(&gateway, "throttled-neighbour").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_disk_reserve_strangers_are_only_counted_and_health_is_degraded() {
    let gateway = gateway(
        "",
        "[audit]\nrefusal_interval_secs = 1\nmin_free_bytes = 1000000000000000000",
    );
    let http = reqwest::Client::new();
    for _ in 0..50 {
        assert_eq!(post(&http, &gateway, None).await, StatusCode::UNAUTHORIZED);
    }
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", gateway.port))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "calls are still served");
    let body = health.text().await.unwrap();
    assert!(
        body.starts_with("degraded: journal disk space below the reserve"),
        "{body}"
    );
    assert!(
        !body.contains(&*gateway.dir.path().to_string_lossy()),
        "{body}"
    );
    assert_eq!(gateway.metric("verdict_gateway_journal_space").await, 2.0);
    assert!(gateway.metric("verdict_gateway_journal_free_bytes").await > 0.0);
    authenticated_call_works(&gateway, "inside-the-reserve").await;
    // Several aggregation intervals pass: the refusals stay counted, not journaled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(refusal_events(&gateway.journal_dir()).is_empty());
    assert!(gateway.log_tail().contains("below the reserve"));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_session_names_leave_memory_bounded() {
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"version": "1", "default": "deny", "rules": [
             {"id": "reads", "match": {"tool": "list_work_memories"}, "action": "allow",
              "rate_limit": {"max": 1000, "window": 3600}}]}"#,
    )
    .unwrap();
    let gateway = gateway(&format!("policy = \"{}\"", policy.display()), "");
    let http = reqwest::Client::new();
    let call = |i: usize| {
        let name = format!("{i:04}{}", "n".repeat(3_900_000));
        let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {},
                          "io.modelcontextprotocol/clientInfo": {"name": name, "version": "1"}});
        json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
               "params": {"name": "list_work_memories", "arguments": {}, "_meta": meta}})
        .to_string()
    };
    let send = |i: usize| {
        http.post(gateway.url())
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "list_work_memories")
            .body(call(i))
            .send()
    };
    for i in 0..5 {
        assert_eq!(send(i).await.unwrap().status(), StatusCode::OK);
    }
    let before = rss_kib(gateway.pid());
    for i in 5..155 {
        let response = send(i).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let reply: Value = response.json().await.unwrap();
        // Allowed and forwarded: the sample server's own answer, no policy refusal.
        let text = reply["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or("[none]");
        assert!(
            reply["result"]["isError"] != true && !text.starts_with('['),
            "{reply}"
        );
    }
    let after = rss_kib(gateway.pid());
    eprintln!(
        "gateway VmRSS {before} kB before, {after} kB after 150 calls with 3.9 MB session names"
    );
    assert!(
        after < before + 100 * 1024,
        "RSS grew from {before} kB to {after} kB"
    );
}

/// Reads until the server closes the connection; what it sent before.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Err(_) => panic!("the connection was not closed by the server"),
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_and_the_connection_limit_holds() {
    let gateway = gateway(
        "",
        "[http]\nheader_read_timeout_secs = 1\nbody_read_timeout_secs = 1\nmax_connections = 8",
    );
    let address = format!("127.0.0.1:{}", gateway.port);
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"POST /mcp HTTP/1.1\r\nHost: gateway\r\nContent-Ty")
            .await
            .unwrap();
        stalled.push(stream);
    }
    let mut most = 0.0f64;
    for _ in 0..20 {
        let open = gateway.metric("verdict_gateway_http_connections").await;
        assert!(open <= 8.0, "{open} connections served at once");
        most = most.max(open);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(most >= 1.0, "the stalled connections were accepted");

    // A body that never completes, on a kept-alive connection that then sits idle.
    let mut slow_body = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\""
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();

    for stream in &mut stalled {
        read_until_closed(stream).await;
    }
    let answer = read_until_closed(&mut slow_body).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let answer = read_until_closed(&mut idle).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "served, then closed when idle: {answer}"
    );

    let health = reqwest::get(format!("http://{address}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "a normal client is served");
    authenticated_call_works(&gateway, "after-the-slow-ones").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_journal_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let gateway = gateway("", "");
    let client = connect(&gateway.url(), KEY).await;
    let arguments = json!({"project": "k-secret-test", "content": "v",
                           "password": "hunter2-password-value",
                           "api_key": "sk-live-api-key-value",
                           "options": {"auth": [{"token": "nested-token-value"}]}});
    let _ = call_tool(&client, "add_work_memory", arguments.clone()).await;
    let _ = client.cancel().await;
    let journal = gateway.journal_dir();
    let decision = journal_events(&journal)
        .iter()
        .filter_map(trail::decision)
        .find(|d| d.tool == "add_work_memory")
        .expect("the call is journaled");
    assert_eq!(decision.redaction, pb::Redaction::Redacted as i32);
    let digest = verdict_proto::hash::sha256(
        verdict_gateway::audit::canonical::canonical_json(&arguments).as_bytes(),
    );
    assert_eq!(
        decision.arguments_sha256,
        digest.to_vec(),
        "digest of the original"
    );
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&journal).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("k-secret-test"),
        "the journal is readable as bytes"
    );
    for secret in [
        "hunter2-password-value",
        "sk-live-api-key-value",
        "nested-token-value",
    ] {
        assert!(!text.contains(secret), "{secret} is in the journal");
    }

    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&journal), 0o700);
    for entry in std::fs::read_dir(&journal).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert_eq!(
        mode(&gateway.dir.path().join("keys").join("verdict.key")),
        0o600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_for_operators_and_refused_admin_calls_are_recorded() {
    let gateway = gateway(
        "",
        &format!(
            "[audit]\nrefusal_interval_secs = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.tokens]]\nid = \"lead\"\napi_key_sha256 = \"{}\"",
            key_digest(ADMIN_TOKEN)
        ),
    );
    let on_agents_port = reqwest::get(format!("http://127.0.0.1:{}/metrics", gateway.port))
        .await
        .unwrap();
    assert_eq!(on_agents_port.status(), StatusCode::NOT_FOUND);
    assert!(gateway.metric("verdict_gateway_journal_seq").await >= 1.0);

    for token in ["wrong-token", "another-wrong-token", "x"] {
        let output = Command::new(cargo_bin("verdict"))
            .args(["approvals", "list"])
            .env("VERDICT_ADMIN_URL", gateway.admin_url())
            .env("VERDICT_ADMIN_TOKEN", token)
            .output_within(COMMAND_TIMEOUT)
            .unwrap();
        assert!(!output.status.success());
    }
    let journal = gateway.journal_dir();
    wait_until("refused admin calls are recorded", || {
        refused_count(&journal, "admin.auth") == 3
    })
    .await;
    let ok = Command::new(cargo_bin("verdict"))
        .args(["approvals", "list"])
        .env("VERDICT_ADMIN_URL", gateway.admin_url())
        .env("VERDICT_ADMIN_TOKEN", ADMIN_TOKEN)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
}

/// Partitions of `topic` as the broker reports them.
fn partitions(bootstrap: &str, topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_kafka_topic_is_created_and_shipped_to() {
    let broker = verdict_tests::Broker::start().unwrap();
    let topic = "hardening.created-by-the-gateway";
    let gateway = gateway(
        "",
        &format!(
            "[audit.kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\ntopic_partitions = 2\ntopic_replication = 1",
            broker.bootstrap()
        ),
    );
    authenticated_call_works(&gateway, "shipped-to-a-new-topic").await;
    let messages = trail::consume(&broker.bootstrap(), topic, Duration::from_secs(60), |m| {
        m.iter().any(|m| {
            trail::decision(&m.event)
                .is_some_and(|d| d.arguments_json.contains("shipped-to-a-new-topic"))
        })
    })
    .await;
    assert!(
        messages.iter().any(|m| trail::decision(&m.event)
            .is_some_and(|d| d.arguments_json.contains("shipped-to-a-new-topic"))),
        "{}",
        gateway.log_tail()
    );
    assert_eq!(partitions(&broker.bootstrap(), topic), 2);
    assert!(!gateway.log_tail().contains("UnknownTopicOrPartition"));
}
