//! Rows for query tests, stored the way the auditor stores them: the stored contract's
//! migrations, with `events` rows built by its one mapping ([`EventRow::from_event`]) from real
//! `ChainWriter`-signed events, so the query service reads exactly what the auditor writes.

use clickhouse::Client;
use prost::Message;
use verdict_proto::pb::{self, event_body::Kind};
use verdict_proto::verify::EventStatus;
use verdict_proto::{ChainWriter, Label, SignedEvent};
use verdict_schema::{EventRow, MigrationError, SourcePosition};

/// Creates the tables, as the auditor does at start-up.
pub async fn migrate(client: &Client) -> Result<(), MigrationError> {
    verdict_schema::migrate(client).await
}

/// Inserts events as the auditor stores verified events (not from Kafka: position -1).
pub async fn store_events(
    client: &Client,
    events: &[SignedEvent],
) -> Result<(), clickhouse::error::Error> {
    store_events_ingested_at(client, events, 1_700_000_000).await
}

/// [`store_events`] with the auditor's storing time `ingested_at` (Unix seconds).
pub async fn store_events_ingested_at(
    client: &Client,
    events: &[SignedEvent],
    ingested_at: u32,
) -> Result<(), clickhouse::error::Error> {
    let unplaced = SourcePosition {
        partition: -1,
        offset: -1,
    };
    let rows: Vec<EventRow> = events
        .iter()
        .map(|event| {
            EventRow::from_event(event, EventStatus::Verified, unplaced, ingested_at)
                .expect("test events have decodable bodies")
        })
        .collect();
    let mut insert = client.insert::<EventRow>("events").await?;
    for row in &rows {
        insert.write(row).await?;
    }
    insert.end().await
}

/// A tool call decision, as the gateway would record it.
#[derive(Debug, Clone, Default)]
pub struct Call<'a> {
    pub time_unix_nanos: i64,
    pub agent: &'a str,
    pub session: &'a str,
    pub tool: &'a str,
    pub risk: pb::RiskClass,
    pub arguments_json: &'a str,
    pub targets: &'a [(&'a str, &'a str)],
    pub decision: pb::DecisionKind,
    pub reason: &'a str,
}

impl Call<'_> {
    /// The encoded `EventBody` of this decision.
    pub fn body(&self) -> Vec<u8> {
        let decision = pb::Decision {
            actor: Some(pb::Actor {
                agent_id: self.agent.into(),
                session: self.session.into(),
                client_name: "test-client".into(),
                client_version: "1.0".into(),
                ..Default::default()
            }),
            upstream: "work-memory".into(),
            method: "tools/call".into(),
            tool: self.tool.into(),
            risk: self.risk as i32,
            redaction: pb::Redaction::Full as i32,
            arguments_json: self.arguments_json.into(),
            arguments_sha256: vec![0; 32],
            targets: self
                .targets
                .iter()
                .map(|(name, value)| pb::Target {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            decision: self.decision as i32,
            rule_id: "rule-1".into(),
            policy_sha256: vec![1; 32],
            reason: self.reason.into(),
            request_id: "1".into(),
            ..Default::default()
        };
        pb::EventBody {
            time_unix_nanos: self.time_unix_nanos,
            kind: Some(Kind::Decision(decision)),
        }
        .encode_to_vec()
    }
}

/// The encoded `EventBody` of a forwarded call's outcome.
pub fn outcome_body(time_unix_nanos: i64, decision_seq: u64, kind: pb::OutcomeKind) -> Vec<u8> {
    pb::EventBody {
        time_unix_nanos,
        kind: Some(Kind::Outcome(pb::Outcome {
            decision_seq,
            kind: kind as i32,
            latency_micros: 1200,
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

/// The encoded `EventBody` of a checkpoint.
pub fn checkpoint_body(time_unix_nanos: i64, head_seq: u64, reason: &str) -> Vec<u8> {
    pb::EventBody {
        time_unix_nanos,
        kind: Some(Kind::Checkpoint(pb::Checkpoint {
            head_seq,
            head_hash: vec![0; 32],
            reason: reason.into(),
            interval_secs: 60,
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

/// Decisions `from..from + n` of `writer`'s chain, each decision kind in turn (risk classes
/// cycling, an agent id, session and reason with characters that need escaping in CEF), each
/// followed by an outcome, the outcome kinds in turn.
pub fn every_decision_kind(writer: &mut ChainWriter, from: usize, n: usize) -> Vec<SignedEvent> {
    let risks = [
        pb::RiskClass::Read,
        pb::RiskClass::Write,
        pb::RiskClass::Destructive,
        pb::RiskClass::Unspecified,
    ];
    let mut events = Vec::new();
    for i in from..from + n {
        let (decision, _) = pb::DecisionKind::NAMES[i % pb::DecisionKind::NAMES.len()];
        let time = 1_750_000_000_000_000_000 + (i as i64 + 1) * 1_000_000;
        let event = writer.append(
            Call {
                time_unix_nanos: time,
                agent: "agent|a",
                session: "s=1",
                tool: "session_manager",
                risk: risks[i % risks.len()],
                arguments_json: r#"{"action":"delete_session","session_id":"s1"}"#,
                targets: &[("session_id", "s1")],
                decision,
                reason: "humans only\nsecond line",
            }
            .body(),
        );
        let seq = event.seq;
        events.push(event);
        let (outcome, _) = pb::OutcomeKind::NAMES[i % pb::OutcomeKind::NAMES.len()];
        events.push(writer.append(outcome_body(time + 500, seq, outcome)));
    }
    events
}
