//! Policy replay end to end over a history made through the real gateway:
//! `cargo run --release -p verdict-tests --example replay_bench [CALLS]` (default 1,000,000).
//!
//! Real tansu, ClickHouse, gateway (stdio sample server upstream), auditor and query service.
//! CALLS `tools/call`s go through the gateway from 16 rmcp clients (4 agents × 4 sessions, each
//! in a closed loop), under a policy with an argument deny rule and a per-session rate limit; then
//! the bench waits until the auditor has stored every decision, and times three `verdict policy replay
//! --policy DRAFT --json` (the CLI over gRPC against the real query service), whose summary says
//! where the service's time went: waiting for ClickHouse rows, verifying envelopes, re-deciding.
//! A measurement, not a test: it asserts only that every call was replayed.

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::auditor::{count, AuditorProcess, AuditorSetup};
use verdict_tests::mcp::{call_tool, connect, work_memory_bin, HttpProcess};
use verdict_tests::query::{verdict_cli, QueryService};
use verdict_tests::{Broker, ClickHouse};

const AGENTS: [&str; 4] = ["bench-a", "bench-b", "bench-c", "bench-d"];
const SESSIONS_PER_AGENT: u64 = 4;
/// Replays of the same history, one after another.
const RUNS: usize = 3;

const RECORDED: &str = r#"{"version": "1", "default": "allow", "rules": [
  {"id": "no-secret-notes", "match": {"tool": "add_work_memory", "arguments": {"project": {"glob": "secret-*"}}},
   "action": "deny", "reason": "secret projects stay out of work memory"},
  {"id": "reads", "match": {"tool": "session_manager"}, "action": "allow",
   "rate_limit": {"max": 100000, "window": 3600}}
]}"#;

/// The draft: a tighter rate limit and another deny rule.
const DRAFT: &str = r#"{"version": "1", "default": "allow", "rules": [
  {"id": "no-secret-notes", "match": {"tool": "add_work_memory", "arguments": {"project": {"glob": "secret-*"}}},
   "action": "deny", "reason": "secret projects stay out of work memory"},
  {"id": "no-plans", "match": {"tool": "add_work_memory", "arguments": {"project": "plans"}},
   "action": "deny", "reason": "plans are reviewed first"},
  {"id": "reads", "match": {"tool": "session_manager"}, "action": "allow",
   "rate_limit": {"max": 5000, "window": 3600}}
]}"#;

/// The `k`-th call of a session.
fn script(k: u64) -> (&'static str, Value) {
    match k % 4 {
        // The sample server scans every memory to list a project's, so the read is a tool whose
        // cost does not grow with the history.
        0 => ("session_manager", json!({"action": "list_sessions"})),
        1 => (
            "add_work_memory",
            json!({"project": "notes", "content": "n"}),
        ),
        2 => (
            "add_work_memory",
            json!({"project": "plans", "content": "p"}),
        ),
        _ => (
            "add_work_memory",
            json!({"project": "secret-x", "content": "s"}),
        ),
    }
}

#[tokio::main]
async fn main() {
    let calls: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("CALLS: a number"));
    let broker = Broker::start().unwrap();
    broker.create_topic("verdict.events", 1).await.unwrap();
    let clickhouse = ClickHouse::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (recorded, draft) = (
        dir.path().join("policy.json"),
        dir.path().join("draft.json"),
    );
    std::fs::write(&recorded, RECORDED).unwrap();
    std::fs::write(&draft, DRAFT).unwrap();
    let mut config = format!("policy = {:?}\n", recorded.display().to_string());
    for agent in AGENTS {
        config += &format!(
            "[[agents]]\nid = \"{agent}\"\napi_key_sha256 = \"{}\"\n",
            key_digest(agent)
        );
    }
    config += &format!(
        "[upstreams.memory]\ncommand = {:?}\n[audit]\nchain_id = \"bench\"\nredaction = \"full\"\n\
         fsync = \"batch\"\n[audit.kafka]\nbrokers = \"{}\"\n",
        work_memory_bin().display().to_string(),
        broker.bootstrap()
    );
    let gateway = HttpProcess::gateway(&config).unwrap();
    let _auditor = AuditorProcess::start(&AuditorSetup {
        max_events: 5000,
        ..AuditorSetup::for_gateway(
            broker.bootstrap(),
            clickhouse.url(),
            gateway.public_key(),
            "bench",
        )
    })
    .unwrap();
    let query = QueryService::start(&clickhouse.url(), Some(&gateway.public_key()), "").unwrap();

    let started = Instant::now();
    let clients = AGENTS.len() as u64 * SESSIONS_PER_AGENT;
    let url = Arc::new(gateway.url());
    let load: Vec<_> = (0..clients)
        .map(|c| {
            let url = Arc::clone(&url);
            let agent = AGENTS[(c / SESSIONS_PER_AGENT) as usize];
            let share = calls / clients + u64::from(c < calls % clients);
            tokio::spawn(async move {
                let client = connect(&url, agent).await;
                for k in 0..share {
                    let (tool, arguments) = script(k);
                    call_tool(&client, tool, arguments).await.expect("a call");
                }
            })
        })
        .collect();
    for task in load {
        task.await.unwrap();
    }
    let recording = started.elapsed();
    let ch = clickhouse.client();
    let stored_sql =
        "SELECT uniqExact(seq) FROM events WHERE kind = 'decision' AND method = 'tools/call'";
    while count(&ch, stored_sql).await < calls {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ingested = started.elapsed();

    let draft_arg = draft.display().to_string();
    let runs: Vec<(f64, Value)> = (0..RUNS)
        .map(|_| replay(&query, &draft_arg, calls))
        .collect();
    let rate = |seconds: f64| calls as f64 / seconds;
    println!("| step, {calls} calls | time | calls/s |");
    println!("|---|---|---|");
    let recording = recording.as_secs_f64();
    println!(
        "| made through the gateway (16 clients) | {recording:.1} s | {:.0} |",
        rate(recording)
    );
    let ingested = ingested.as_secs_f64();
    println!(
        "| ... and stored by the auditor | {ingested:.1} s | {:.0} |",
        rate(ingested)
    );
    for (run, (total, summary)) in runs.iter().enumerate() {
        let secs = |key: &str| summary[key].as_f64().unwrap_or_default();
        let run = run + 1;
        println!(
            "| **run {run}: `verdict policy replay` end to end (gRPC)** | {total:.2} s | **{:.0}** |",
            rate(*total)
        );
        for (label, key) in [
            ("service: waiting for ClickHouse rows", "read_wait_secs"),
            ("service: verifying envelopes", "verify_secs"),
            ("service: re-deciding (engine)", "decide_secs"),
        ] {
            println!(
                "| run {run}, {label} | {:.2} s | {:.0} |",
                secs(key),
                rate(secs(key))
            );
        }
    }
    let summary = &runs[0].1;
    println!(
        "\nchanged {}, unchanged {}, undecidable {}",
        summary["changed"], summary["unchanged"], summary["undecidable"]
    );
}

/// One `verdict policy replay --json` of the draft: its wall time and its summary.
fn replay(query: &QueryService, draft: &str, calls: u64) -> (f64, Value) {
    let replayed = Instant::now();
    let out = verdict_cli(&["policy", "replay", "--policy", draft, "--json"], query);
    let end_to_end = replayed.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|line| line.get("summary").cloned())
        .expect("a summary line");
    assert_eq!(summary["calls"], calls, "{summary}");
    (end_to_end, summary)
}
