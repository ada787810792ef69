//! Table-driven tests of the policy file's validation and the matching semantics.

use crate::file::parse;
use crate::rate::RateLimiter;
use crate::*;
use serde_json::json;
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn accepts_the_common_gateway_form() {
    let policy =
        Policy::from_text(r#"{"version":"1","default":"deny","hide":["session_manager"]}"#)
            .unwrap();
    assert!(policy.hides(&["session_manager"]));
    assert!(!policy.hides(&["list_work_memories"]));
}

#[test]
fn errors_name_line_column_and_problem() {
    let cases: &[(&str, usize, &str)] = &[
        ("{\"version\":\"1\",\n \"default\":\"deny\",\n \"colour\":1}", 3, "unknown field `colour`"),
        ("{\"version\":\"1\",\"default\":\"maybe\"}", 1, "unknown variant `maybe`"),
        ("{\"version\":\"2\",\"default\":\"deny\"}", 1, "unsupported policy version"),
        ("{\"version\":\"1\",\"default\":\"deny\",\n\"rules\":[{\"action\":\"explode\"}]}", 2, "unknown variant `explode`"),
        ("{\"version\":\"1\",\"default\":\"deny\",\"rules\":[\n{\"id\":\"a\",\"action\":\"allow\"},\n{\"id\":\"a\",\"action\":\"deny\"}]}", 3, "duplicate rule id \"a\""),
        ("{\"version\":\"1\",\"default\":\"deny\",\"rules\":[\n{\"match\":{\"tool\":\"a[\"},\"action\":\"allow\"}]}", 2, "bad glob"),
        ("{\"version\":\"1\",\"default\":\"deny\",\"rules\":[\n{\"action\":\"allow\",\"rate_limit\":{\"max\":0,\"window\":5}}]}", 2, "nonzero"),
        ("{\"version\":\"1\",\"default\":\"deny\",\"rules\":[\n{\"action\":\"deny\",\"rate_limit\":{\"max\":1,\"window\":5}}]}", 2, "rate_limit applies only to allow rules"),
        ("{\"version\":\"1\",\"default\":\"deny\",\"rules\":[\n{\"action\":\"allow\",\"match\":{\"tool\":5}}]}", 2, "invalid type: integer `5`"),
        ("{\"version\":\"1\", // comment\n\"default\":\"deny\"}", 1, "comments are not allowed"),
        ("{\"version\":\"1\",\"default\":\"deny\",}", 1, "trailing comma"),
        ("{\"version\":\"1\",\"default\":\"deny\",\"rules\":[{\"action\":\"allow\",\"match\":{\"arguments\":{\"a\":{\"glob\":\"x\",\"present\":true}}}}]}", 1, "exactly one of"),
    ];
    for (text, line, needle) in cases {
        let error = parse(text).map(drop).expect_err(text);
        assert_eq!(error.line, *line, "{text}: {error}");
        assert!(
            error.message.contains(needle),
            "{text}: {error} (wanted {needle:?})"
        );
    }
}

#[test]
fn huge_and_deeply_nested_files_are_errors_not_panics() {
    let huge = format!(
        "{{\"version\":\"1\",\"default\":\"deny\",\"hide\":[{}\"x\"]}}",
        "\"a\",".repeat(300_000)
    );
    assert!(parse(&huge).unwrap_err().message.contains("limit"));
    let deep = format!("{{\"version\":\"1\",\"default\":\"deny\",\"rules\":[{{\"action\":\"allow\",\"match\":{{\"arguments\":{{\"a\":{}1{}}}}}}}]}}", "[".repeat(500), "]".repeat(500));
    assert!(parse(&deep).is_err());
}

const SEED_POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "hide": ["secret_*"],
  "risk": {"search_work_memory": "write"},
  "rules": [
    {"id": "no-delete", "match": {"tool": "session_manager", "arguments": {"action": "delete_session"}}, "action": "deny", "reason": "sessions are deleted by humans only"},
    {"id": "session-ops", "match": {"tool": "session_manager", "arguments": {"action": {"one_of": ["set_active", "clear"]}}}, "action": "allow"},
    {"id": "s-prefixed", "match": {"tool": "session_manager", "arguments": {"session_id": {"glob": "tmp-*"}, "action": {"present": true}}}, "action": "allow"},
    {"id": "bot-reads", "match": {"agent": "bot-*", "risk": "read"}, "action": "allow", "rate_limit": {"max": 3, "window": 2}},
    {"id": "approve-destructive", "match": {"risk": "destructive", "server": "memory"}, "action": "require_approval", "timeout": 60},
    {"id": "reads", "match": {"risk": ["read"]}, "action": "allow"}
  ]
}"#;

fn decide(
    policy: &Policy,
    agent: &str,
    server: &str,
    tool: &str,
    definition: Value,
    arguments: Value,
) -> (String, Ruling) {
    let classified = crate::risk::classify(&definition);
    let call = CallInfo {
        agent,
        session: "s",
        upstream: server,
        tool,
        exposed: tool,
        risk: classified,
        arguments: &arguments,
        fingerprint: None,
    };
    let verdict = policy.evaluate(&call, policy.risk_of([tool, tool], classified));
    (verdict.rule_id, verdict.ruling)
}

#[test]
fn first_matching_rule_wins_and_default_applies_otherwise() {
    let policy = Policy::from_text(SEED_POLICY).unwrap();
    let destructive = json!({"annotations": {"destructiveHint": true}});
    let read = json!({"annotations": {"readOnlyHint": true}});
    let approval = Ruling::RequireApproval {
        timeout: Duration::from_secs(60),
    };
    let cases = [
        (
            "agent-a",
            "memory",
            "session_manager",
            destructive.clone(),
            json!({"action": "delete_session", "session_id": "s1"}),
            "no-delete",
            Ruling::Deny,
        ),
        (
            "agent-a",
            "memory",
            "session_manager",
            destructive.clone(),
            json!({"action": "set_active", "session_id": "s1"}),
            "session-ops",
            Ruling::Allow,
        ),
        (
            "agent-a",
            "memory",
            "session_manager",
            destructive.clone(),
            json!({"action": "enable_auto_link", "session_id": "tmp-9"}),
            "s-prefixed",
            Ruling::Allow,
        ),
        (
            "agent-a",
            "memory",
            "session_manager",
            destructive.clone(),
            json!({"action": "enable_auto_link"}),
            "approve-destructive",
            approval,
        ),
        (
            "agent-a",
            "files",
            "session_manager",
            destructive.clone(),
            json!({"action": "enable_auto_link"}),
            "default",
            Ruling::Deny,
        ),
        (
            "bot-7",
            "memory",
            "list_work_memories",
            read.clone(),
            json!({"project": "k"}),
            "bot-reads",
            Ruling::Allow,
        ),
        (
            "agent-a",
            "memory",
            "list_work_memories",
            read.clone(),
            json!({"project": "k"}),
            "reads",
            Ruling::Allow,
        ),
        (
            "agent-a",
            "memory",
            "search_work_memory",
            read.clone(),
            json!({"query": "q"}),
            "default",
            Ruling::Deny,
        ),
        (
            "agent-a",
            "memory",
            "add_work_memory",
            json!({}),
            json!({"project": "k"}),
            "default",
            Ruling::Deny,
        ),
    ];
    for (agent, server, tool, definition, arguments, rule, outcome) in cases {
        let got = decide(&policy, agent, server, tool, definition, arguments.clone());
        assert_eq!(
            got,
            (rule.to_owned(), outcome),
            "{agent} {server} {tool} {arguments}"
        );
    }
    assert_eq!(
        policy.risk_of(
            ["search_work_memory", "search_work_memory"],
            crate::risk::classify(&read)
        ),
        RiskName::Write,
        "policy override beats annotations"
    );
}

#[test]
fn rate_limit_and_hide_through_decide() {
    let policy = Policy::from_text(SEED_POLICY).unwrap();
    let (rates, now) = (RateLimiter::default(), Instant::now());
    let arguments = json!({});
    let call = |tool| CallInfo {
        agent: "bot-1",
        session: "s",
        upstream: "memory",
        tool,
        exposed: tool,
        risk: RiskName::Read,
        arguments: &arguments,
        fingerprint: None,
    };
    for _ in 0..3 {
        assert_eq!(
            policy
                .decide(&call("list_work_memories"), &rates, now)
                .ruling,
            Ruling::Allow
        );
    }
    let limited = policy.decide(&call("list_work_memories"), &rates, now);
    assert!(
        matches!(limited.ruling, Ruling::RateLimited { .. }),
        "{limited:?}"
    );
    assert!(limited.reason.contains("retry in"), "{}", limited.reason);
    assert_eq!(
        policy.decide(&call("secret_keys"), &rates, now).ruling,
        Ruling::Hide
    );
    assert!(policy.hides(&["secret_keys"]));
}

#[test]
fn candidate_cache_keeps_first_match_order_with_many_rules() {
    let mut rules: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"match":{{"tool":"tool_{i}_*"}},"action":"deny","reason":"r{i}"}}"#))
        .collect();
    rules.push(r#"{"id":"last","match":{"tool":"tool_5*"},"action":"allow"}"#.into());
    let text = format!(
        r#"{{"version":"1","default":"deny","rules":[{}]}}"#,
        rules.join(",")
    );
    let policy = Policy::from_text(&text).unwrap();
    assert_eq!(
        decide(&policy, "a", "s", "tool_5_x", json!({}), json!({})).0,
        "rule-6"
    );
    assert_eq!(
        decide(&policy, "a", "s", "tool_5", json!({}), json!({})).0,
        "last"
    );
    assert_eq!(
        decide(&policy, "a", "s", "other", json!({}), json!({})).0,
        "default"
    );
}

proptest::proptest! {
    /// The stable-toolchain twin of the `policy` fuzz target: arbitrary text is an error or a
    /// policy, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in r#"[\[\]{}",:0-9a-z_*?. ]{0,96}"#) {
        let _ = Policy::from_text(&text);
    }

    #[test]
    fn mutated_valid_policies_never_panic(cut in 0usize..SEED_POLICY.len(), byte in proptest::prelude::any::<u8>()) {
        let mut bytes = SEED_POLICY.as_bytes().to_vec();
        bytes[cut] = byte;
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = Policy::from_text(text);
        }
    }
}

#[test]
fn rules_match_the_name_agents_see_and_globs_do_not_cross_slashes() {
    let policy = Policy::from_text(
        r#"{"version":"1","default":"allow","risk":{"mem__wipe":"destructive"},"rules":[
            {"id":"no-prefixed","match":{"tool":"mem__delete"},"action":"deny"},
            {"id":"tmp-only","match":{"arguments":{"path":{"glob":"/tmp/*"}}},"action":"allow"},
            {"id":"other-paths","match":{"arguments":{"path":{"present":true}}},"action":"deny"}]}"#,
    )
    .unwrap();
    let args = json!({});
    let call = CallInfo {
        agent: "a",
        session: "s",
        upstream: "mem",
        tool: "delete",
        exposed: "mem__delete",
        risk: RiskName::Write,
        arguments: &args,
        fingerprint: None,
    };
    assert_eq!(
        policy.evaluate(&call, RiskName::Write).rule_id,
        "no-prefixed"
    );
    assert_eq!(
        policy.risk_of(["wipe", "mem__wipe"], RiskName::Write),
        RiskName::Destructive
    );
    let path = |p: &str| {
        decide(
            &policy,
            "a",
            "fs",
            "read_file",
            json!({}),
            json!({"path": p}),
        )
        .0
    };
    assert_eq!(path("/tmp/notes.txt"), "tmp-only");
    assert_eq!(path("/tmp/../etc/passwd"), "other-paths");
    assert_eq!(path("/tmp/a/b"), "other-paths");
}

#[test]
fn per_agent_rate_limits_span_sessions() {
    let policy = Policy::from_text(r#"{"version":"1","default":"deny","rules":[{"id":"r","action":"allow","rate_limit":{"max":2,"window":60,"per":"agent"}}]}"#).unwrap();
    let (rates, now) = (RateLimiter::default(), Instant::now());
    let args = json!({});
    let outcomes: Vec<bool> = ["s1", "s2", "s3"]
        .iter()
        .map(|session| {
            let call = CallInfo {
                agent: "a",
                session,
                upstream: "m",
                tool: "t",
                exposed: "t",
                risk: RiskName::Read,
                arguments: &args,
                fingerprint: None,
            };
            policy.decide(&call, &rates, now).ruling == Ruling::Allow
        })
        .collect();
    assert_eq!(
        outcomes,
        [true, true, false],
        "a new session does not reset a per-agent limit"
    );
}

/// Issue 15 item 11: `"DELETE"`, `"delete "` and `["delete"]` once passed a rule on `"delete"`.
#[test]
fn argument_values_match_normalised_and_inside_arrays() {
    let policy = Policy::from_text(
        r#"{"version":"1","default":"deny","rules":[
        {"id":"no-delete","match":{"arguments":{"action":"delete_session"}},"action":"deny"},
        {"id":"no-deletes","match":{"arguments":{"action":{"glob":"DELETE_*"}}},"action":"deny"},
        {"id":"exact","match":{"arguments":{"action":{"exact":"Clear"}}},"action":"deny"},
        {"id":"listing","match":{"arguments":{"action":{"one_of":["list_sessions"]}}},"action":"allow"}]}"#,
    )
    .unwrap();
    let rule = |action: Value| {
        decide(
            &policy,
            "a",
            "memory",
            "session_manager",
            json!({}),
            json!({"action": action}),
        )
        .0
    };
    for spelling in [
        json!("DELETE_SESSION"),
        json!("delete_session "),
        json!("\tDelete_Session"),
        json!(["delete_session"]),
        json!(["x", "delete_session"]),
    ] {
        assert_eq!(rule(spelling.clone()), "no-delete", "{spelling}");
    }
    assert_eq!(rule(json!("delete_session_cascade")), "no-deletes");
    assert_eq!(rule(json!(["Delete_Session_Cascade"])), "no-deletes");
    assert_eq!(rule(json!("Clear")), "exact");
    assert_eq!(rule(json!("clear")), "default", "exact means exact");
    assert_eq!(rule(json!(" LIST_SESSIONS")), "listing");
    assert_eq!(rule(json!(["list_sessions", "list_sessions"])), "listing");
    assert_eq!(
        rule(json!(["list_sessions", "set_active"])),
        "default",
        "an allow rule needs every element to match"
    );
    assert_eq!(rule(json!([])), "default");
}

/// A replay without the arguments: decided where no argument rule could change the outcome,
/// undecidable (naming the candidate rules) where one could, and never guessed.
#[test]
fn unknown_arguments_decide_only_when_no_argument_rule_could_change_the_outcome() {
    let policy = Policy::from_text(SEED_POLICY).unwrap();
    let (rates, now) = (RateLimiter::default(), Instant::now());
    let arguments = json!({"action": "delete_session", "session_id": "[redacted]"});
    let call = |tool, risk, arguments| CallInfo {
        agent: "agent-a",
        session: "s",
        upstream: "memory",
        tool,
        exposed: tool,
        risk,
        arguments,
        fingerprint: None,
    };
    let null = Value::Null;
    let reads = call("list_work_memories", RiskName::Read, &null);
    let decided = policy.decide_partly(&reads, |_| true, &rates, now).unwrap();
    assert_eq!(
        (decided.ruling, decided.rule_id.as_str()),
        (Ruling::Allow, "reads")
    );

    let deletes = call("session_manager", RiskName::Destructive, &null);
    let undecidable = policy
        .decide_partly(&deletes, |_| true, &rates, now)
        .unwrap_err();
    assert_eq!(
        undecidable.rule_ids,
        [
            "no-delete",
            "session-ops",
            "s-prefixed",
            "approve-destructive"
        ]
    );

    let redacted = call("session_manager", RiskName::Destructive, &arguments);
    let unknown = |key: &str| key == "session_id";
    let decided = policy
        .decide_partly(&redacted, unknown, &rates, now)
        .unwrap();
    assert_eq!(
        (decided.ruling, decided.rule_id.as_str()),
        (Ruling::Deny, "no-delete"),
        "the known action decides before the redacted session id matters"
    );
    assert_eq!(
        policy.decide_partly(&redacted, |_| false, &rates, now),
        Ok(policy.decide(&redacted, &rates, now)),
        "with every argument known it is the gateway's decision"
    );
}
