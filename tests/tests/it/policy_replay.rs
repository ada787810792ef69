//! Policy replay against a live re-run: 10,200 calls made through two real gateways (one
//! recording arguments in full, one as a hash only) → tansu → auditor → ClickHouse, then
//! `ReplayPolicy` with a draft that differs in one deny rule, one rate limit and one approval
//! rule. The same calls, in the same order per session, then go through gateways running the
//! draft; the replay's counts per (recorded, draft, rule, agent, tool) must equal what those
//! gateways decided, exactly, and the hash-only calls an argument rule decides must be counted
//! undecidable (never guessed). Rate-limit windows are an hour, so both runs count the same calls
//! in one window whatever the machine's speed. Also `verdict policy replay` and the CI gate
//! `verdict policy check --replay` (failing, then passing with acknowledgements).

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};
use verdict_proto::pb::{self, DecisionKind};
use verdict_service::credentials::digest as key_digest;
use verdict_tests::auditor::{AuditorProcess, AuditorSetup};
use verdict_tests::mcp::{call_tool, connect, work_memory_bin, HttpProcess};
use verdict_tests::query::{replay_policy, verdict_cli as verdict, QueryService};
use verdict_tests::trail::{decision, journal_events};
use verdict_tests::{Broker, ClickHouse};

/// The policy in force while the history is recorded.
const CURRENT: &str = r#"{"version": "1", "default": "allow", "rules": [
  {"id": "no-delete", "match": {"tool": "session_manager", "arguments": {"action": {"glob": "delete_session*"}}},
   "action": "deny", "reason": "sessions are deleted by humans only"},
  {"id": "reads", "match": {"tool": "list_work_memories"}, "action": "allow",
   "rate_limit": {"max": 1000, "window": 3600}},
  {"id": "notes", "match": {"tool": "add_work_memory"}, "action": "allow"}
]}"#;

/// The draft: another deny rule, a tighter rate limit, a new approval rule.
const DRAFT: &str = r#"{"version": "1", "default": "allow", "rules": [
  {"id": "no-secret-notes", "match": {"tool": "add_work_memory", "arguments": {"project": {"glob": "secret-*"}}},
   "action": "deny", "reason": "secret projects stay out of work memory"},
  {"id": "session-changes", "match": {"tool": "session_manager", "arguments": {"action": "set_active"}},
   "action": "require_approval", "timeout": 1},
  {"id": "reads", "match": {"tool": "list_work_memories"}, "action": "allow",
   "rate_limit": {"max": 40, "window": 3600}},
  {"id": "notes", "match": {"tool": "add_work_memory"}, "action": "allow"}
]}"#;

const FULL_CHAIN: &str = "replay-full";
const HASH_CHAIN: &str = "replay-hash";
const AGENTS: [&str; 4] = ["agent-a", "agent-b", "agent-c", "agent-h"];
/// Calls per session on the full-arguments gateway and on the hash-only one.
const FULL_CALLS: usize = 1800;
const HASH_CALLS: usize = 600;

/// One agent session's script: who, through which gateway, how many calls.
struct Session {
    agent: &'static str,
    label: &'static str,
    hashed: bool,
    calls: usize,
}

const SESSIONS: [Session; 7] = [
    Session {
        agent: "agent-a",
        label: "a1",
        hashed: false,
        calls: FULL_CALLS,
    },
    Session {
        agent: "agent-a",
        label: "a2",
        hashed: false,
        calls: FULL_CALLS,
    },
    Session {
        agent: "agent-b",
        label: "b1",
        hashed: false,
        calls: FULL_CALLS,
    },
    Session {
        agent: "agent-b",
        label: "b2",
        hashed: false,
        calls: FULL_CALLS,
    },
    Session {
        agent: "agent-c",
        label: "c1",
        hashed: false,
        calls: FULL_CALLS,
    },
    Session {
        agent: "agent-h",
        label: "h1",
        hashed: true,
        calls: HASH_CALLS,
    },
    Session {
        agent: "agent-h",
        label: "h2",
        hashed: true,
        calls: HASH_CALLS,
    },
];

/// The `k`-th call of a session: a tool and arguments unique to (session, k), so a call's
/// argument hash identifies it in both runs.
fn script(label: &str, k: usize) -> (&'static str, Value) {
    let id = format!("{label}-{k}");
    match k % 10 {
        0..=4 => {
            let project = if k % 20 == 3 { "secret-plans" } else { "notes" };
            (
                "add_work_memory",
                json!({"project": project, "content": format!("note {id}")}),
            )
        }
        5..=7 => ("list_work_memories", json!({"project": format!("p-{id}")})),
        8 if k % 300 == 8 => (
            "session_manager",
            json!({"action": "set_active", "session_id": id}),
        ),
        8 => (
            "session_manager",
            json!({"action": "list_sessions", "session_id": id}),
        ),
        _ => (
            "session_manager",
            json!({"action": "delete_session", "session_id": id, "confirm": true}),
        ),
    }
}

fn api_key(agent: &str) -> String {
    format!("replay-key-{agent}")
}

fn gateway_config(policy: &Path, chain: &str, redaction: &str, brokers: Option<&str>) -> String {
    let mut text = format!("policy = {:?}\n", policy.display().to_string());
    for agent in AGENTS {
        text += &format!(
            "[[agents]]\nid = \"{agent}\"\napi_key_sha256 = \"{}\"\n",
            key_digest(&api_key(agent))
        );
    }
    text += &format!(
        "[upstreams.memory]\ncommand = {:?}\n[audit]\nchain_id = \"{chain}\"\nredaction = \"{redaction}\"\n",
        work_memory_bin().display().to_string()
    );
    match brokers {
        Some(brokers) => text + &format!("[audit.kafka]\nbrokers = \"{brokers}\"\n"),
        None => text,
    }
}

/// A gateway recording in full and one recording hashes only, both under `policy`.
fn gateways(dir: &Path, name: &str, policy: &str, brokers: Option<&str>) -> [HttpProcess; 2] {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, policy).unwrap();
    [(FULL_CHAIN, "full"), (HASH_CHAIN, "hash")].map(|(chain, redaction)| {
        HttpProcess::gateway(&gateway_config(&path, chain, redaction, brokers)).unwrap()
    })
}

/// Every session's calls through `gateways`, sessions concurrently, each session in order.
async fn run_calls(gateways: &[HttpProcess; 2]) {
    let tasks: Vec<_> = SESSIONS
        .iter()
        .map(|session| {
            let url = gateways[usize::from(session.hashed)].url();
            let (agent, label, calls) = (session.agent, session.label, session.calls);
            tokio::spawn(async move {
                let client = connect(&url, &api_key(agent)).await;
                for k in 0..calls {
                    let (tool, arguments) = script(label, k);
                    call_tool(&client, tool, arguments).await.unwrap();
                }
                let _ = client.cancel().await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// A call's first ruling as a gateway recorded it.
#[derive(Debug, Clone)]
struct Ruled {
    kind: DecisionKind,
    rule_id: String,
    agent: String,
    tool: String,
    hashed: bool,
}

/// The first rulings of the calls in the gateways' journals, by argument hash.
fn rulings(gateways: &[HttpProcess; 2]) -> HashMap<Vec<u8>, Ruled> {
    let first = [
        DecisionKind::Allow,
        DecisionKind::Deny,
        DecisionKind::Hide,
        DecisionKind::RateLimited,
        DecisionKind::ApprovalRequested,
    ];
    let mut rulings = HashMap::new();
    for (gateway, hashed) in gateways.iter().zip([false, true]) {
        for event in journal_events(&gateway.journal_dir()) {
            let Some(d) = decision(&event) else { continue };
            if d.method != "tools/call" || !first.contains(&d.decision()) {
                continue;
            }
            let ruled = Ruled {
                kind: d.decision(),
                rule_id: d.rule_id.clone(),
                agent: d.actor.clone().unwrap_or_default().agent_id,
                tool: d.tool.clone(),
                hashed,
            };
            assert!(
                rulings.insert(d.arguments_sha256.clone(), ruled).is_none(),
                "each call is ruled once"
            );
        }
    }
    rulings
}

/// The replay's messages: changes and summary.
async fn replay(query: &QueryService, policy: &str) -> (Vec<pb::ReplayChange>, pb::ReplaySummary) {
    let request = pb::ReplayPolicyRequest {
        policy_json: policy.into(),
        filter: None,
        samples: 3,
        ..Default::default()
    };
    replay_policy(&mut query.client().await, request).await
}

type Key = (i32, i32, String, String, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_counts_equal_a_live_run_of_the_draft_and_hashed_arguments_are_undecidable() {
    let broker = Broker::start().unwrap();
    broker.create_topic("verdict.events", 2).await.unwrap();
    let clickhouse = ClickHouse::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let recorded = gateways(dir.path(), "current", CURRENT, Some(&broker.bootstrap()));
    let mut setup = AuditorSetup::for_gateway(
        broker.bootstrap(),
        clickhouse.url(),
        recorded[0].public_key(),
        FULL_CHAIN,
    );
    setup
        .keys
        .push((recorded[1].public_key(), Some(vec![HASH_CHAIN.into()])));
    let _auditor = AuditorProcess::start(&setup).unwrap();
    let keys = format!(
        "trusted_keys = [{:?}, {:?}]\n",
        recorded[0].public_key().display().to_string(),
        recorded[1].public_key().display().to_string()
    );
    let query = QueryService::start(&clickhouse.url(), None, &keys).unwrap();

    let started = Instant::now();
    run_calls(&recorded).await;
    let recording = started.elapsed();
    let live_current = rulings(&recorded);
    let total = SESSIONS.iter().map(|s| s.calls).sum::<usize>();
    assert_eq!(live_current.len(), total);

    // The current policy replayed against its own history changes nothing; waiting for it also
    // waits until the auditor has stored every call.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (changes, summary) = loop {
        let (changes, summary) = replay(&query, CURRENT).await;
        if summary.calls == total as u64 || Instant::now() > deadline {
            break (changes, summary);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(summary.calls, total as u64, "every call stored");
    assert_eq!(summary.changed, 0, "{changes:?}");
    assert_eq!(summary.untrusted, 0);

    let started = Instant::now();
    let (changes, summary) = replay(&query, DRAFT).await;
    let replaying = started.elapsed();

    // The same calls through gateways running the draft.
    let drafted = gateways(dir.path(), "draft", DRAFT, None);
    let started = Instant::now();
    run_calls(&drafted).await;
    let rerun = started.elapsed();
    let live_draft = rulings(&drafted);
    assert_eq!(live_draft.len(), total);

    // What the replay must find: each call's live change, except the hash-only calls an argument
    // rule decides (the draft's argument rules are on add_work_memory and session_manager).
    let undecidable_tools = ["add_work_memory", "session_manager"];
    let mut expected: BTreeMap<Key, u64> = BTreeMap::new();
    let (mut unchanged, mut undecidable) = (0, 0);
    for (hash, before) in &live_current {
        let after = &live_draft[hash];
        if before.hashed && undecidable_tools.contains(&before.tool.as_str()) {
            undecidable += 1;
        } else if before.kind == after.kind {
            unchanged += 1;
        } else {
            let key = (
                before.kind as i32,
                after.kind as i32,
                after.rule_id.clone(),
                before.agent.clone(),
                before.tool.clone(),
            );
            *expected.entry(key).or_default() += 1;
        }
    }
    let mut got: BTreeMap<Key, u64> = BTreeMap::new();
    for c in changes.iter().filter(|c| !c.undecidable) {
        let key = (
            c.recorded,
            c.draft,
            c.rule_id.clone(),
            c.agent_id.clone(),
            c.tool.clone(),
        );
        got.insert(key, c.count);
        assert!(!c.samples.is_empty() && c.samples.len() <= 3, "{c:?}");
    }
    assert_eq!(
        got, expected,
        "the replay decides as the draft gateways did"
    );
    for ((from, to, rule, agent, tool), count) in &got {
        eprintln!("{from} -> {to} {rule} {agent} {tool}: {count}");
    }
    for kind in [
        DecisionKind::Deny,
        DecisionKind::ApprovalRequested,
        DecisionKind::RateLimited,
    ] {
        assert!(
            expected.keys().any(|k| k.1 == kind as i32),
            "the run exercises {kind:?}"
        );
    }
    assert!(expected
        .keys()
        .any(|k| k.0 == DecisionKind::Deny as i32 && k.1 == DecisionKind::Allow as i32));
    assert_eq!(
        (
            summary.calls,
            summary.unchanged,
            summary.undecidable,
            summary.untrusted
        ),
        (total as u64, unchanged, undecidable, 0)
    );
    assert!(undecidable > 0);
    for c in changes.iter().filter(|c| c.undecidable) {
        assert_eq!(c.agent_id, "agent-h");
        assert_eq!(c.detail, "arguments stored as a hash only");
        assert!(c.samples.iter().all(|s| s.starts_with(HASH_CHAIN)), "{c:?}");
    }

    // The CLI over the same stream, and the CI gate.
    let out = verdict(
        &[
            "policy",
            "replay",
            "--policy",
            &dir.path().join("draft.json").display().to_string(),
            "--json",
        ],
        &query,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: Value = serde_json::from_slice(
        out.stdout
            .split(|&b| b == b'\n')
            .rev()
            .find(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["summary"]["undecidable"], json!(undecidable));
    assert_eq!(last["summary"]["calls"], json!(total));
    let draft = dir.path().join("draft.json").display().to_string();
    let gate = verdict(
        &["policy", "check", &draft, "--replay", "--since", "1d"],
        &query,
    );
    let stderr = String::from_utf8_lossy(&gate.stderr);
    assert!(!gate.status.success(), "{stderr}");
    assert!(
        stderr.contains("rule no-secret-notes would deny"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rule session-changes would hold"),
        "{stderr}"
    );
    assert!(stderr.contains("rule reads would rate-limit"), "{stderr}");
    let acks = dir.path().join("acks");
    std::fs::write(
        &acks,
        "# reviewed\nno-secret-notes\nsession-changes # ticket 7\n",
    )
    .unwrap();
    let acked = verdict(
        &[
            "policy",
            "check",
            &draft,
            "--replay",
            "--since",
            "1d",
            "--ack",
            "reads",
            "--ack-file",
            &acks.display().to_string(),
        ],
        &query,
    );
    assert!(
        acked.status.success(),
        "{}",
        String::from_utf8_lossy(&acked.stderr)
    );

    // One changed call and one undecidable call explained, under the policy in force (found by
    // its hash among the policy files) and the draft.
    let sample = |undecidable: bool, rule: &str| {
        changes
            .iter()
            .find(|c| c.undecidable == undecidable && c.rule_id.starts_with(rule))
            .map(|c| c.samples[0].clone())
            .unwrap()
    };
    let dir_arg = dir.path().display().to_string();
    let explain = |event: &str| {
        let out = verdict(
            &[
                "policy",
                "explain",
                "--event",
                event,
                "--policy",
                &draft,
                "--policies",
                &dir_arg,
            ],
            &query,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = explain(&sample(false, "no-secret-notes"));
    for line in [
        "recorded: allow by rule notes",
        "under the policy in force (",
        "  allow by rule notes: allowed by rule",
        "under the draft (",
        "  deny by rule no-secret-notes: secret projects stay out of work memory",
        "rules that can apply to this tool, in order: no-secret-notes, notes",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    let text = explain(&sample(true, "no-secret-notes"));
    assert!(text.contains("arguments (stored as a hash only)"), "{text}");
    assert!(
        text.contains(
            "undecidable (arguments stored as a hash only): rules no-secret-notes | notes"
        ),
        "{text}"
    );
    eprintln!(
        "{total} calls recorded in {recording:.1?}, replayed in {replaying:.1?}, re-run live under the draft in {rerun:.1?}"
    );
}
