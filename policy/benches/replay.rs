//! Replay speed of the engine: 1,000,000 recorded calls re-decided in time order under a draft
//! (argument rules, a rate limit counted per session, an approval rule), a share of them with
//! hash-only arguments. The reading and verifying of the envelopes are measured elsewhere
//! (BENCHMARKS.md, "Policy replay").

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use verdict_policy::rate::RateLimiter;
use verdict_policy::{CallInfo, Policy, RiskName};

const CALLS: usize = 1_000_000;

const DRAFT: &str = r#"{"version": "1", "default": "allow", "rules": [
  {"id": "no-secret-notes", "match": {"tool": "add_work_memory", "arguments": {"project": {"glob": "secret-*"}}}, "action": "deny"},
  {"id": "session-changes", "match": {"tool": "session_manager", "arguments": {"action": "set_active"}}, "action": "require_approval", "timeout": 1},
  {"id": "reads", "match": {"tool": "list_work_memories"}, "action": "allow", "rate_limit": {"max": 40, "window": 3600}},
  {"id": "notes", "match": {"tool": "add_work_memory"}, "action": "allow"}
]}"#;

/// A recorded call: agent, session, tool, arguments (`Null`: hash only), offset in ms.
type Recorded = (String, String, &'static str, Value, u64);

fn history() -> Vec<Recorded> {
    (0..CALLS)
        .map(|k| {
            let tool = ["add_work_memory", "list_work_memories", "session_manager"][k % 3];
            let arguments = match (k % 10, tool) {
                (0, _) => Value::Null,
                (_, "add_work_memory") => json!({"project": if k % 20 == 3 { "secret-x" } else { "notes" }, "content": format!("note {k}")}),
                (_, "session_manager") => json!({"action": "delete_session", "session_id": format!("s{k}")}),
                _ => json!({"project": format!("p{k}")}),
            };
            let agent = format!("agent-{}", k % 8);
            (agent, format!("session-{}", k % 256), tool, arguments, k as u64)
        })
        .collect()
}

fn replay(draft: &Policy, history: &[Recorded]) -> usize {
    let (rates, base) = (RateLimiter::default(), Instant::now());
    let mut undecidable = 0;
    for (agent, session, tool, arguments, offset) in history {
        let call = CallInfo {
            agent,
            session,
            upstream: "memory",
            tool,
            exposed: tool,
            risk: RiskName::Write,
            arguments,
            fingerprint: None,
        };
        let hashed = arguments.is_null();
        let now = base + Duration::from_millis(*offset);
        undecidable += usize::from(draft.decide_partly(&call, |_| hashed, &rates, now).is_err());
    }
    undecidable
}

fn bench(c: &mut Criterion) {
    let draft = Policy::from_text(DRAFT).unwrap();
    let history = history();
    assert!(replay(&draft, &history) > 0, "some calls are undecidable");
    let mut group = c.benchmark_group("replay");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(CALLS as u64));
    group.bench_function("decide_1m_recorded_calls", |b| {
        b.iter(|| replay(&draft, &history))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
