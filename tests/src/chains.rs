//! Real signed chains for auditor tests: `ChainWriter` with real keys and varied bodies
//! (decisions by several agents on several tools, outcomes, periodic checkpoints).

use prost::Message;
use std::path::{Path, PathBuf};
use verdict_proto::keys::write_keypair;
use verdict_proto::pb::{self, event_body::Kind};
use verdict_proto::{ChainWriter, SecretKey, SignedEvent};

const AGENTS: [&str; 3] = ["agent-a", "agent-b", "agent-c"];
const TOOLS: [(&str, i32); 3] = [
    ("list_work_memories", pb::RiskClass::Read as i32),
    ("add_work_memory", pb::RiskClass::Write as i32),
    ("session_manager", pb::RiskClass::Destructive as i32),
];
/// Every this many events, a periodic checkpoint.
const CHECKPOINT_EVERY: u64 = 100;
/// The interval the test checkpoints promise: long enough never to be silent in a test.
pub const CHECKPOINT_INTERVAL_SECS: u32 = 3600;

/// A key pair written as PEM files; returns the key and the public key file.
pub fn key_in(dir: &Path, name: &str) -> (SecretKey, PathBuf) {
    let key = SecretKey::generate();
    let (_, public) = write_keypair(&dir.join(name), &key, false).expect("writing a key pair");
    (key, public)
}

/// The body of event number `i` (1-based) of a test chain.
pub fn body(i: u64) -> Vec<u8> {
    let time_unix_nanos = 1_700_000_000_000_000_000 + i as i64 * 1_000_000;
    let kind = if i.is_multiple_of(CHECKPOINT_EVERY) {
        Kind::Checkpoint(pb::Checkpoint {
            head_seq: i - 1,
            head_hash: vec![0; 32],
            reason: "periodic".into(),
            interval_secs: CHECKPOINT_INTERVAL_SECS,
            ..Default::default()
        })
    } else if i.is_multiple_of(3) {
        Kind::Outcome(pb::Outcome {
            decision_seq: i - 1,
            kind: pb::OutcomeKind::Ok as i32,
            latency_micros: i * 7,
            ..Default::default()
        })
    } else {
        let (tool, risk) = TOOLS[(i % 3) as usize];
        Kind::Decision(pb::Decision {
            actor: Some(pb::Actor {
                agent_id: AGENTS[(i % 5 % 3) as usize].into(),
                session: format!("session-{}", i % 11),
                client_name: "test-client".into(),
                ..Default::default()
            }),
            upstream: "work-memory".into(),
            method: "tools/call".into(),
            tool: tool.into(),
            risk,
            decision: if risk == pb::RiskClass::Destructive as i32 {
                pb::DecisionKind::Deny as i32
            } else {
                pb::DecisionKind::Allow as i32
            },
            rule_id: "rule-1".into(),
            arguments_json: format!("{{\"n\":{i}}}"),
            targets: vec![pb::Target {
                name: "session_id".into(),
                value: format!("s{}", i % 13),
            }],
            ..Default::default()
        })
    };
    pb::EventBody {
        time_unix_nanos,
        kind: Some(kind),
    }
    .encode_to_vec()
}

/// Events 1..=n of chain `chain_id` signed with `key`.
pub fn chain(chain_id: &str, key: &SecretKey, n: u64) -> Vec<SignedEvent> {
    chain_checkpointed(chain_id, key, n, CHECKPOINT_EVERY)
}

/// Like [`chain`], with a checkpoint only every `every` events (a multiple of 100).
pub fn chain_checkpointed(chain_id: &str, key: &SecretKey, n: u64, every: u64) -> Vec<SignedEvent> {
    let mut writer = ChainWriter::new(chain_id, key.clone());
    (1..)
        .filter(|i| i % CHECKPOINT_EVERY != 0 || i % every == 0)
        .take(n as usize)
        .map(|i| writer.append(body(i)))
        .collect()
}

/// `events` as topic messages keyed by their chain.
pub fn messages(events: &[SignedEvent]) -> Vec<(String, Vec<u8>)> {
    events
        .iter()
        .map(|e| (e.chain_id.clone(), e.encode()))
        .collect()
}

/// `per_chain` events of each of `chains` chains `gw-1`, `gw-2`, … signed with `key`, interleaved
/// as concurrent gateways ship them, as `(key, payload)` topic messages.
pub fn interleaved_messages(
    key: &SecretKey,
    chains: usize,
    per_chain: u64,
) -> Vec<(String, Vec<u8>)> {
    let chains: Vec<Vec<SignedEvent>> = (1..=chains)
        .map(|i| chain(&format!("gw-{i}"), key, per_chain))
        .collect();
    (0..per_chain as usize)
        .flat_map(|i| chains.iter().map(move |c| &c[i]))
        .map(|e| (e.chain_id.clone(), e.encode()))
        .collect()
}
