//! Every policy in force is in the trail, end to end: a real gateway records the policy it
//! starts with and every reload as a signed `PolicyLoaded` event before deciding under it, without
//! the secret values a rule matches; `verdict policy explain` then finds the policy in force in
//! the stored trail (no policy files needed). And a replay over a history that spans a gateway
//! restart empties its rate-limit windows where the gateway's were emptied (and keeps them across
//! a reload, as the gateway does), so replaying the policy in force changes nothing.

use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use verdict_proto::pb::{self, DecisionKind};
use verdict_proto::SignedEvent;
use verdict_service::credentials::digest as key_digest;
use verdict_tests::auditor::{AuditorProcess, AuditorSetup};
use verdict_tests::mcp::{call_tool, connect, work_memory_bin, HttpProcess};
use verdict_tests::query::{replay_policy, verdict_cli, QueryService};
use verdict_tests::trail::{decision, journal_events};
use verdict_tests::{Broker, ClickHouse};

const CHAIN: &str = "trail-gateway";
const AGENT_KEY: &str = "trail-agent-key";
/// A secret a rule matches: it must never reach the trail.
const LEAKED: &str = "sk-live-0d1e2a3b4c5f";

/// A policy denying calls that carry the leaked token, and ruling on notes with `notes`.
fn policy(notes: &str) -> String {
    format!(
        r#"{{"version": "1", "default": "allow", "rules": [
  {{"id": "revoked-token", "match": {{"arguments": {{"api_token": "{LEAKED}"}}}},
   "action": "deny", "reason": "a revoked token"}},
  {notes}
]}}"#
    )
}

const NOTES_ALLOWED: &str =
    r#"{"id": "notes", "match": {"tool": "add_work_memory"}, "action": "allow"}"#;
const NOTES_FROZEN: &str = r#"{"id": "no-notes", "match": {"tool": "add_work_memory"}, "action": "deny", "reason": "notes are frozen"}"#;

/// At most 3 reads per agent per hour: one window across sessions, so only a restart empties it.
const READS: &str = r#"{"version": "1", "default": "allow", "rules": [
  {"id": "reads", "match": {"tool": "list_work_memories"}, "action": "allow",
   "rate_limit": {"max": 3, "window": 3600, "per": "agent"}}
]}"#;

/// A gateway recording to Kafka, the auditor storing its chain, a query service trusting it.
struct Trail {
    _broker: Broker,
    _clickhouse: ClickHouse,
    gateway: HttpProcess,
    _auditor: AuditorProcess,
    query: QueryService,
}

impl Trail {
    async fn start(policy: &Path) -> Self {
        let broker = Broker::start().unwrap();
        broker.create_topic("verdict.events", 1).await.unwrap();
        let clickhouse = ClickHouse::start().unwrap();
        let config = format!(
            "policy = {:?}\n[[agents]]\nid = \"agent-a\"\napi_key_sha256 = \"{}\"\n\
             [upstreams.memory]\ncommand = {:?}\n[audit]\nchain_id = \"{CHAIN}\"\nredaction = \"full\"\n\
             [audit.kafka]\nbrokers = \"{}\"\n",
            policy.display().to_string(),
            key_digest(AGENT_KEY),
            work_memory_bin().display().to_string(),
            broker.bootstrap()
        );
        let gateway = HttpProcess::gateway(&config).unwrap();
        let auditor = AuditorProcess::start(&AuditorSetup::for_gateway(
            broker.bootstrap(),
            clickhouse.url(),
            gateway.public_key(),
            CHAIN,
        ))
        .unwrap();
        let query =
            QueryService::start(&clickhouse.url(), Some(&gateway.public_key()), "").unwrap();
        Self {
            _broker: broker,
            _clickhouse: clickhouse,
            gateway,
            _auditor: auditor,
            query,
        }
    }

    fn events(&self) -> Vec<SignedEvent> {
        journal_events(&self.gateway.journal_dir())
    }
}

/// The policy loads of a journal, with their seqs.
fn policy_loads(events: &[SignedEvent]) -> Vec<(u64, pb::PolicyLoaded)> {
    events
        .iter()
        .filter_map(|e| match e.decode_body().ok()?.kind? {
            pb::event_body::Kind::PolicyLoaded(loaded) => Some((e.seq, loaded)),
            _ => None,
        })
        .collect()
}

/// The tool calls' first rulings in a journal: (seq, decision, rule, policy hash).
fn rulings(events: &[SignedEvent]) -> Vec<(u64, DecisionKind, String, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| {
            let d = decision(e)?;
            (d.method == "tools/call").then(|| (e.seq, d.decision(), d.rule_id, d.policy_sha256))
        })
        .collect()
}

fn sha256(text: &str) -> Vec<u8> {
    verdict_proto::hash::sha256(text.as_bytes()).to_vec()
}

/// Waits until `done` holds, checking every 200 ms for at most a minute.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `verdict policy explain --event EVENT` (no policy files), retried until the auditor has
/// stored it.
async fn explain(query: &QueryService, event: &str) -> String {
    let start = Instant::now();
    loop {
        let out = verdict_cli(&["policy", "explain", "--event", event], query);
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
        let error = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(start.elapsed() < Duration::from_secs(120), "{error}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_in_force_is_recorded_without_its_secrets_and_explains_its_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    let (first, second) = (policy(NOTES_ALLOWED), policy(NOTES_FROZEN));
    std::fs::write(&path, &first).unwrap();
    let trail = Trail::start(&path).await;
    let client = connect(&trail.gateway.url(), AGENT_KEY).await;
    let note = json!({"project": "notes", "content": "a note"});
    let allowed = call_tool(&client, "add_work_memory", note.clone())
        .await
        .unwrap();
    assert!(!allowed.is_error.unwrap_or(false));

    // A reload: later calls are decided under the new policy, recorded first.
    std::fs::write(&path, &second).unwrap();
    let start = Instant::now();
    loop {
        let result = call_tool(&client, "add_work_memory", note.clone())
            .await
            .unwrap();
        if result.is_error.unwrap_or(false) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let events = trail.events();
    let loads = policy_loads(&events);
    let reasons: Vec<&str> = loads.iter().map(|(_, l)| l.reason.as_str()).collect();
    assert_eq!(reasons, ["start", "reload"], "{loads:?}");
    let (start_seq, start) = &loads[0];
    let (reload_seq, reload) = &loads[1];
    assert_eq!(start.policy_sha256, sha256(&first));
    assert_eq!(reload.policy_sha256, sha256(&second));
    assert_eq!(start.source, path.display().to_string());
    for (_, loaded) in &loads {
        assert_eq!(loaded.redacted_arguments, ["api_token"]);
        assert!(
            !loaded.policy_text.contains(LEAKED),
            "{}",
            loaded.policy_text
        );
        assert!(loaded.policy_text.contains("[redacted sha256:"));
    }
    // Every call is decided after the policy it carries was recorded.
    let calls = rulings(&events);
    let denied = calls.last().unwrap();
    assert_eq!(
        (denied.1, denied.2.as_str()),
        (DecisionKind::Deny, "no-notes")
    );
    for (seq, _, _, policy_sha256) in &calls {
        let recorded_before = loads
            .iter()
            .any(|(at, l)| at < seq && &l.policy_sha256 == policy_sha256);
        assert!(
            recorded_before,
            "call {seq} decided under an unrecorded policy"
        );
    }
    assert!(start_seq < &calls[0].0 && reload_seq < &denied.0);
    // The secret is nowhere in the journal's bytes, which are what is shipped and stored.
    for file in std::fs::read_dir(trail.gateway.journal_dir()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(!bytes.windows(LEAKED.len()).any(|w| w == LEAKED.as_bytes()));
    }

    // Explained from the stored trail alone, under the policy each call was decided under.
    let text = explain(&trail.query, &format!("{CHAIN}:{}", denied.0)).await;
    for line in [
        format!("under the policy in force (recorded at {CHAIN}:{reload_seq}, reload "),
        "  deny by rule no-notes: notes are frozen".to_owned(),
        "rules that can apply to this tool, in order: revoked-token, no-notes".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} in\n{text}");
    }
    assert!(!text.contains("differs from the record"), "{text}");
    let text = explain(&trail.query, &format!("{CHAIN}:{}", calls[0].0)).await;
    let line = format!("under the policy in force (recorded at {CHAIN}:{start_seq}, start ");
    assert!(text.contains(&line), "{line:?} in\n{text}");
    assert!(text.contains("  allow by rule notes"), "{text}");
}

/// `ReplayPolicy` of `policy` over the chain, once the auditor has stored `calls` calls.
async fn replay(
    query: &QueryService,
    policy: &str,
    calls: u64,
) -> (Vec<pb::ReplayChange>, pb::ReplaySummary) {
    let mut client = query.client().await;
    let start = Instant::now();
    loop {
        let request = pb::ReplayPolicyRequest {
            policy_json: policy.into(),
            ..Default::default()
        };
        let (changes, summary) = replay_policy(&mut client, request).await;
        if summary.calls == calls {
            return (changes, summary);
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "calls not stored"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_empties_rate_windows_where_the_gateway_restarted_and_keeps_them_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, READS).unwrap();
    let mut trail = Trail::start(&path).await;
    let read = || json!({"project": "notes"});
    let client = connect(&trail.gateway.url(), AGENT_KEY).await;
    for _ in 0..5 {
        call_tool(&client, "list_work_memories", read())
            .await
            .unwrap();
    }
    drop(client);
    trail.gateway.restart_gateway().unwrap();
    let client = connect(&trail.gateway.url(), AGENT_KEY).await;
    for _ in 0..2 {
        call_tool(&client, "list_work_memories", read())
            .await
            .unwrap();
    }
    // A reload (the same rules, another text) keeps the gateway's windows.
    std::fs::write(&path, format!("{READS}\n")).unwrap();
    wait_for("the reload is recorded", || {
        policy_loads(&trail.events())
            .iter()
            .any(|(_, l)| l.reason == "reload")
    })
    .await;
    for _ in 0..3 {
        call_tool(&client, "list_work_memories", read())
            .await
            .unwrap();
    }

    // Live: three reads per window, the window emptied by the restart only.
    let (allow, limited) = (DecisionKind::Allow, DecisionKind::RateLimited);
    let live: Vec<DecisionKind> = rulings(&trail.events()).iter().map(|r| r.1).collect();
    let expected = [allow, allow, allow, limited, limited];
    assert_eq!(live, [expected, expected].concat());

    // The policy in force replayed over that history decides every call as the gateway did.
    let (changes, summary) = replay(&trail.query, READS, 10).await;
    assert_eq!(
        (summary.changed, summary.undecidable),
        (0, 0),
        "{changes:?}"
    );
    assert_eq!(summary.restarts, 1);

    // A draft allowing four reads: one more call allowed per window, as a gateway running it
    // would have allowed.
    let draft = READS.replace("\"max\": 3", "\"max\": 4");
    let (changes, summary) = replay(&trail.query, &draft, 10).await;
    let got: Vec<(i32, i32, u64)> = changes
        .iter()
        .map(|c| (c.recorded, c.draft, c.count))
        .collect();
    assert_eq!(got, [(limited as i32, allow as i32, 2)]);
    assert_eq!(summary.changed, 2);
}
