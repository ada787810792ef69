//! Golden vectors: a fixed key (RFC 8032 test 1 seed), six events of one chain (including Korean
//! and Japanese text), their body bytes, hash pre-images, hashes, signatures and envelopes, checked
//! into `testdata/golden.json` so any other implementation can check itself against them.
//!
//! The test regenerates the vectors and compares them with the file; set
//! `VERDICT_WRITE_GOLDEN=1` to rewrite the file after an intended contract change.

use prost::Message;
use serde::{Deserialize, Serialize};
use verdict_proto::pb::{self, event_body::Kind};
use verdict_proto::verify::EventStatus;
use verdict_proto::{ChainVerifier, ChainWriter, PublicKey, SecretKey, SignedEvent, TrustedKeys};

const SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const CHAIN_ID: &str = "golden-gateway";
const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/golden.json");

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Golden {
    about: String,
    secret_seed_hex: String,
    public_key_hex: String,
    public_key_pem: String,
    key_id: String,
    chain_id: String,
    events: Vec<GoldenEvent>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct GoldenEvent {
    note: String,
    seq: u64,
    prev_hash_hex: String,
    body_hex: String,
    hash_preimage_hex: String,
    hash_hex: String,
    signature_hex: String,
    envelope_hex: String,
}

fn decision(tool: &str, args: &str, kind: pb::DecisionKind, rule: &str, reason: &str) -> Kind {
    Kind::Decision(pb::Decision {
        actor: Some(pb::Actor {
            agent_id: "agent-a".into(),
            session: "mcp-session-1".into(),
            client_name: "claude-code".into(),
            client_version: "2.1.0".into(),
            protocol_version: "2025-11-25".into(),
            transport: "http".into(),
            remote_addr: "127.0.0.1:50000".into(),
        }),
        upstream: "work-memory".into(),
        method: "tools/call".into(),
        tool: tool.into(),
        risk: pb::RiskClass::Destructive as i32,
        redaction: pb::Redaction::Full as i32,
        arguments_json: args.into(),
        arguments_sha256: verdict_proto::hash::sha256(args.as_bytes()).to_vec(),
        targets: vec![pb::Target {
            name: "session_id".into(),
            value: "s-1".into(),
        }],
        decision: kind as i32,
        rule_id: rule.into(),
        policy_sha256: vec![0xab; 32],
        reason: reason.into(),
        request_id: "7".into(),
        approval_id: String::new(),
        approver: String::new(),
        refusals: Vec::new(),
    })
}

fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let args = r#"{"action":"delete","session_id":"s-1"}"#;
    let kinds = vec![
        (
            "startup checkpoint",
            Kind::Checkpoint(pb::Checkpoint {
                head_seq: 0,
                head_hash: vec![0; 32],
                reason: "startup".into(),
                interval_secs: 30,
                ..Default::default()
            }),
        ),
        (
            "deny with a Korean reason",
            decision(
                "session_manager",
                args,
                pb::DecisionKind::Deny,
                "no-delete",
                "세션 삭제는 사람만 할 수 있습니다",
            ),
        ),
        (
            "approval requested, Japanese reason",
            decision(
                "session_manager",
                args,
                pb::DecisionKind::ApprovalRequested,
                "approve-delete",
                "削除には承認が必要です",
            ),
        ),
        (
            "approved",
            decision(
                "session_manager",
                args,
                pb::DecisionKind::Approved,
                "approve-delete",
                "approved by alice@example.com",
            ),
        ),
        (
            "outcome of seq 4",
            Kind::Outcome(pb::Outcome {
                decision_seq: 4,
                kind: pb::OutcomeKind::Ok as i32,
                jsonrpc_error_code: 0,
                message: String::new(),
                latency_micros: 1234,
            }),
        ),
        (
            "shutdown checkpoint",
            Kind::Checkpoint(pb::Checkpoint {
                head_seq: 5,
                head_hash: vec![],
                reason: "shutdown".into(),
                interval_secs: 30,
                ..Default::default()
            }),
        ),
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, (note, kind))| {
            let body = pb::EventBody {
                time_unix_nanos: 1_767_225_600_000_000_000 + i as i64 * 1_000_000,
                kind: Some(kind),
            };
            (note, body.encode_to_vec())
        })
        .collect()
}

fn preimage(event: &SignedEvent) -> Vec<u8> {
    let mut out = b"verdict.v1".to_vec();
    out.extend((event.chain_id.len() as u32).to_be_bytes());
    out.extend(event.chain_id.as_bytes());
    out.extend(event.seq.to_be_bytes());
    out.extend(event.prev_hash);
    out.extend((event.body.len() as u32).to_be_bytes());
    out.extend(&event.body);
    out
}

fn generate() -> Golden {
    let seed: [u8; 32] = hex::decode(SEED_HEX).unwrap().try_into().unwrap();
    let key = SecretKey::from_seed(&seed);
    let mut writer = ChainWriter::new(CHAIN_ID, key.clone());
    let events = bodies()
        .into_iter()
        .map(|(note, body)| {
            let event = writer.append(body);
            GoldenEvent {
                note: note.into(),
                seq: event.seq,
                prev_hash_hex: hex::encode(event.prev_hash),
                body_hex: hex::encode(&event.body),
                hash_preimage_hex: hex::encode(preimage(&event)),
                hash_hex: hex::encode(event.hash),
                signature_hex: hex::encode(event.signature),
                envelope_hex: hex::encode(event.encode()),
            }
        })
        .collect();
    Golden {
        about: "Verdict event contract v1 golden vectors; layout in proto/verdict/v1/event.proto. hash = SHA-256(preimage); signature = Ed25519(seed, hash).".into(),
        secret_seed_hex: SEED_HEX.into(),
        public_key_hex: hex::encode(key.public().as_bytes()),
        public_key_pem: key.public().to_pem(),
        key_id: key.public().key_id().into(),
        chain_id: CHAIN_ID.into(),
        events,
    }
}

fn load() -> Golden {
    serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap()
}

#[test]
fn regenerated_vectors_match_the_checked_in_file() {
    let generated = generate();
    if std::env::var_os("VERDICT_WRITE_GOLDEN").is_some() {
        std::fs::write(
            PATH,
            serde_json::to_string_pretty(&generated).unwrap() + "\n",
        )
        .unwrap();
    }
    assert_eq!(
        generated,
        load(),
        "golden vectors changed: the signed contract is not stable"
    );
}

#[test]
fn checked_in_envelopes_verify_with_the_public_key_alone() {
    let golden = load();
    let public = PublicKey::from_pem(&golden.public_key_pem).unwrap();
    assert_eq!(public.key_id(), golden.key_id);
    let mut keys = TrustedKeys::default();
    keys.add(public, None);
    let mut verifier = ChainVerifier::new(keys);
    for event in &golden.events {
        let envelope = SignedEvent::decode(&hex::decode(&event.envelope_hex).unwrap()).unwrap();
        assert_eq!(
            hex::encode(verdict_proto::hash::sha256(
                &hex::decode(&event.hash_preimage_hex).unwrap()
            )),
            event.hash_hex
        );
        let verdict = verifier.verify(&envelope);
        assert_eq!(
            verdict.status,
            EventStatus::Verified,
            "{}: {verdict:?}",
            event.note
        );
    }
    let korean =
        pb::EventBody::decode(hex::decode(&golden.events[1].body_hex).unwrap().as_slice()).unwrap();
    let Some(Kind::Decision(d)) = korean.kind else {
        panic!("event 2 is a decision")
    };
    assert_eq!(d.reason, "세션 삭제는 사람만 할 수 있습니다");
}
