//! Policy evaluation cost with 1,000 rules: the per-call price of deciding.

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use verdict_gateway::decision::{CallInfo, Decider};
use verdict_gateway::policy::PolicyDecider;

fn bench(c: &mut Criterion) {
    let mut rules: Vec<String> = (0..999)
        .map(|i| match i % 3 {
            0 => format!(r#"{{"match":{{"tool":"tool_{i}"}},"action":"deny","reason":"r{i}"}}"#),
            1 => format!(r#"{{"match":{{"tool":"ns_{i}_*","agent":"bot-*"}},"action":"allow"}}"#),
            _ => format!(r#"{{"match":{{"server":"srv_{i}","arguments":{{"action":{{"one_of":["a","b"]}}}}}},"action":"deny"}}"#),
        })
        .collect();
    rules.push(r#"{"id":"no-delete","match":{"tool":"session_*","arguments":{"action":"delete_session"}},"action":"deny","reason":"humans only"}"#.into());
    let text = format!(
        r#"{{"version":"1","default":"allow","rules":[{}]}}"#,
        rules.join(",")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, text).unwrap();
    let decider = PolicyDecider::load(&path).unwrap();
    let definition = json!({"name": "session_manager", "description": "세션을 관리합니다. 세션 삭제", "annotations": {"destructiveHint": true}});
    let arguments = json!({"action": "delete_session", "session_id": "s1"});
    let call = CallInfo {
        agent: "agent-a",
        session: "sess",
        upstream: "memory",
        tool: "session_manager",
        exposed: "session_manager",
        risk: verdict_gateway::policy::risk::classify(&definition),
        arguments: &arguments,
        fingerprint: None,
    };
    assert_eq!(decider.decide(&call).rule_id, "no-delete");
    c.bench_function("policy_decide_1000_rules", |b| {
        b.iter(|| decider.decide(&call))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
