//! Rows of the ClickHouse tables (see [`crate::migrations`]), and the one mapping from a signed
//! event to its `events` row.
//!
//! The auditor writes these structs and the query service reads them, so a column exists in one
//! place only. Enumerations are stored under their names from the contract's one name table
//! ([`Label`]); readers map them back with the same table.

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use verdict_proto::pb::{self, event_body::Kind};
use verdict_proto::verify::EventStatus;
use verdict_proto::{EnvelopeError, Label, SignedEvent};

/// The `kind` of a tool catalog row.
pub const TOOL_CATALOG: &str = "tool_catalog";
/// The `kind` of a key rotation row; the verifiers that resume a chain from a stored head re-read
/// these (their envelopes, re-verified) to learn which key signs it now.
pub const KEY_ROTATION: &str = "key_rotation";
/// The `kind` of a forwarder's destination configuration change.
pub const CONFIG_CHANGE: &str = "config_change";

/// The `kind` of a policy load row (`PolicyLoaded`: a gateway start or a policy reload).
pub const POLICY_LOADED: &str = "policy_loaded";
/// The target name of a pin a policy load changed (`verdict policy pin` accepted it).
pub const REPINNED: &str = "repinned";

/// One stored event: every body field as a column, plus the envelope for re-verification.
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct EventRow {
    pub chain_id: String,
    pub seq: u64,
    pub time: u32,
    pub time_unix_nanos: i64,
    pub kind: String,
    pub agent_id: String,
    pub session: String,
    pub client_name: String,
    pub client_version: String,
    pub protocol_version: String,
    pub transport: String,
    pub remote_addr: String,
    pub upstream: String,
    pub method: String,
    pub tool: String,
    pub risk: String,
    pub decision: String,
    pub rule_id: String,
    pub policy_sha256: String,
    pub reason: String,
    pub request_id: String,
    pub approval_id: String,
    pub approver: String,
    pub redaction: String,
    pub arguments_json: String,
    pub arguments_sha256: String,
    pub target_names: Vec<String>,
    pub target_values: Vec<String>,
    pub decision_seq: u64,
    pub outcome: String,
    pub jsonrpc_error_code: i64,
    pub outcome_message: String,
    pub latency_micros: u64,
    pub checkpoint_reason: String,
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    pub hash: String,
    pub prev_hash: String,
    pub key_id: String,
    pub verification: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub ingested_at: u32,
}

/// Where a message was read from; `(-1, -1)` when it did not come from Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePosition {
    pub partition: i32,
    pub offset: i64,
}

impl EventRow {
    /// The row for a decoded event. Fails only when the body is not a decodable `EventBody`
    /// (the caller stores a `malformed` finding instead).
    pub fn from_event(
        event: &SignedEvent,
        status: EventStatus,
        source: SourcePosition,
        ingested_at: u32,
    ) -> Result<Self, EnvelopeError> {
        let body = event.decode_body()?;
        let mut row = EventRow {
            chain_id: event.chain_id.clone(),
            seq: event.seq,
            time: u32::try_from(body.time_unix_nanos.max(0) / 1_000_000_000).unwrap_or(u32::MAX),
            time_unix_nanos: body.time_unix_nanos,
            envelope: event.encode(),
            hash: hex::encode(event.hash),
            prev_hash: hex::encode(event.prev_hash),
            key_id: event.key_id.clone(),
            verification: status.as_str().into(),
            kafka_partition: source.partition,
            kafka_offset: source.offset,
            ingested_at,
            ..Default::default()
        };
        match body.kind {
            Some(Kind::Decision(d)) => row.fill_decision(d),
            Some(Kind::Outcome(o)) => row.fill_outcome(o),
            Some(Kind::Checkpoint(c)) => {
                row.kind = "checkpoint".into();
                row.checkpoint_reason = c.reason;
            }
            Some(Kind::ToolCatalog(c)) => row.fill_tool_catalog(c),
            Some(Kind::KeyRotation(r)) => {
                row.kind = KEY_ROTATION.into();
                row.reason = r.reason;
                row.target_names.push("new_key_id".into());
                row.target_values.push(r.new_key_id);
            }
            Some(Kind::ConfigChange(c)) => row.fill_config_change(c),
            Some(Kind::PolicyLoaded(p)) => row.fill_policy_loaded(p),
            None => row.kind = "unknown".into(),
        }
        Ok(row)
    }

    /// A forwarder's destination change: the destination as a target named by its change
    /// (`added`, `changed`, `removed`), and its non-secret settings and configuration hash as the
    /// reason (the envelope holds every field).
    fn fill_config_change(&mut self, c: pb::ConfigChange) {
        self.kind = CONFIG_CHANGE.into();
        let change = pb::ConfigChangeKind::label_of(c.change);
        let fields = match c.changed_fields.is_empty() {
            true => String::new(),
            false => format!(" ({})", c.changed_fields.join(", ")),
        };
        self.reason = format!(
            "destination {} ({}) {change}{fields}: address {}, payload {}, items {}, redact_keys [{}], config_sha256 {}",
            c.destination,
            c.kind,
            c.address,
            c.payload,
            c.items,
            c.redact_keys.join(", "),
            hex::encode(&c.config_sha256),
        );
        self.target_names.push(change.into());
        self.target_values.push(c.destination);
    }

    /// Whether this row records a change of a forwarder's destinations.
    pub fn is_config_change(&self) -> bool {
        self.kind == CONFIG_CHANGE
    }

    /// A tool catalog: the upstream, each tool that changed as a target named by its change
    /// (`changed`, `added`, `removed`) and a readable summary as the reason. Tools seen for the
    /// first time since the gateway started and not pinned are not changes.
    fn fill_tool_catalog(&mut self, c: pb::ToolCatalog) {
        self.kind = TOOL_CATALOG.into();
        self.upstream = c.upstream;
        let mut summary = Vec::new();
        for tool in c.tools {
            let change = pb::ToolChange::try_from(tool.change).unwrap_or_default();
            let notable = match change {
                pb::ToolChange::Changed | pb::ToolChange::Removed => true,
                pb::ToolChange::Added => !c.first,
                _ => false,
            };
            if !notable {
                continue;
            }
            let label = change.label();
            summary.push(match tool.changed_fields.is_empty() {
                true => format!("{} {label}", tool.name),
                false => format!("{} {label} ({})", tool.name, tool.changed_fields.join(", ")),
            });
            self.target_names.push(label.into());
            self.target_values.push(tool.name);
        }
        self.reason = summary.join("; ");
    }

    /// A policy loaded by the gateway: its hash, `start`/`reload` and the source as the reason,
    /// and each pin the load changed as a `repinned` target (`upstream/tool`).
    fn fill_policy_loaded(&mut self, p: pb::PolicyLoaded) {
        self.kind = POLICY_LOADED.into();
        self.policy_sha256 = hex::encode(p.policy_sha256);
        self.reason = format!("{} {}", p.reason, p.source);
        self.target_names = vec![REPINNED.into(); p.repinned.len()];
        self.target_values = p.repinned;
    }

    /// Whether this row records a change of an upstream's tools (a rug pull, or a reviewed
    /// update awaiting its pin).
    pub fn is_tool_change(&self) -> bool {
        self.kind == TOOL_CATALOG && !self.target_names.is_empty()
    }

    fn fill_decision(&mut self, d: pb::Decision) {
        self.kind = "decision".into();
        let actor = d.actor.unwrap_or_default();
        self.agent_id = actor.agent_id;
        self.session = actor.session;
        self.client_name = actor.client_name;
        self.client_version = actor.client_version;
        self.protocol_version = actor.protocol_version;
        self.transport = actor.transport;
        self.remote_addr = actor.remote_addr;
        self.upstream = d.upstream;
        self.method = d.method;
        self.tool = d.tool;
        self.risk = pb::RiskClass::label_of(d.risk).into();
        self.redaction = pb::Redaction::label_of(d.redaction).into();
        self.arguments_json = d.arguments_json;
        self.arguments_sha256 = hex::encode(d.arguments_sha256);
        (self.target_names, self.target_values) =
            d.targets.into_iter().map(|t| (t.name, t.value)).unzip();
        self.decision = pb::DecisionKind::label_of(d.decision).into();
        self.rule_id = d.rule_id;
        self.policy_sha256 = hex::encode(d.policy_sha256);
        self.reason = d.reason;
        self.request_id = d.request_id;
        self.approval_id = d.approval_id;
        self.approver = d.approver;
    }

    fn fill_outcome(&mut self, o: pb::Outcome) {
        self.kind = "outcome".into();
        self.decision_seq = o.decision_seq;
        self.outcome = pb::OutcomeKind::label_of(o.kind).into();
        self.jsonrpc_error_code = o.jsonrpc_error_code;
        self.outcome_message = o.message;
        self.latency_micros = o.latency_micros;
    }
}

/// One integrity finding with its evidence.
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct FindingRow {
    pub kind: String,
    pub chain_id: String,
    pub seq: u64,
    pub last_seq: u64,
    pub detail: String,
    pub detected_at: u32,
    pub detected_unix_nanos: i64,
    #[serde(with = "serde_bytes")]
    pub evidence: Vec<u8>,
    pub evidence_sha256: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

/// The newest event of a chain, as persisted for resumption and listing.
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct ChainHeadRow {
    pub chain_id: String,
    pub seq: u64,
    pub hash: String,
    pub key_id: String,
    pub last_event_unix_nanos: i64,
    pub last_checkpoint_unix_nanos: i64,
    pub ended: u8,
    pub updated_at: u32,
    pub version: u64,
}

/// One witnessed head (see `verdict/v1/witness.proto`); hashes in hex, the signed bytes as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct WitnessedHeadRow {
    pub chain_id: String,
    pub seq: u64,
    pub event_hash: String,
    pub tree_root: String,
    pub time_unix_nanos: i64,
    pub checkpoint_seq: u64,
    pub key_id: String,
    #[serde(with = "serde_bytes")]
    pub signed_head: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl WitnessedHeadRow {
    pub fn from_signed(signed: &pb::SignedHead, head: &pb::WitnessedHead) -> Self {
        Self {
            chain_id: head.chain_id.clone(),
            seq: head.seq,
            event_hash: hex::encode(&head.event_hash),
            tree_root: hex::encode(&head.tree_root),
            time_unix_nanos: head.time_unix_nanos,
            checkpoint_seq: head.checkpoint_seq,
            key_id: signed.key_id.clone(),
            signed_head: signed.head.clone(),
            signature: signed.signature.clone(),
        }
    }

    pub fn to_signed(&self) -> pb::SignedHead {
        pb::SignedHead {
            head: self.signed_head.clone(),
            key_id: self.key_id.clone(),
            signature: self.signature.clone(),
        }
    }
}

/// The Merkle root (hex) of chunk `chunk` of a chain: events `chunk * MERKLE_CHUNK + 1 ..=
/// (chunk + 1) * MERKLE_CHUNK`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct ChunkRow {
    pub chain_id: String,
    pub chunk: u64,
    pub root: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, change: pb::ToolChange, fields: &[&str]) -> pb::ToolFingerprint {
        pb::ToolFingerprint {
            name: name.into(),
            change: change as i32,
            changed_fields: fields.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn tool_catalogs_name_their_changes_as_targets_and_reason() {
        let catalog = |first| pb::ToolCatalog {
            upstream: "memory".into(),
            tools: vec![
                tool("a", pb::ToolChange::Unchanged, &[]),
                tool(
                    "b",
                    pb::ToolChange::Changed,
                    &["description", "inputSchema"],
                ),
                tool("c", pb::ToolChange::Added, &[]),
                tool("d", pb::ToolChange::Removed, &[]),
            ],
            first,
        };
        let mut row = EventRow::default();
        row.fill_tool_catalog(catalog(false));
        assert_eq!(row.kind, TOOL_CATALOG);
        assert_eq!(row.upstream, "memory");
        assert_eq!(row.target_names, ["changed", "added", "removed"]);
        assert_eq!(row.target_values, ["b", "c", "d"]);
        assert_eq!(
            row.reason,
            "b changed (description, inputSchema); c added; d removed"
        );
        assert!(row.is_tool_change());

        let mut first = EventRow::default();
        first.fill_tool_catalog(catalog(true));
        assert_eq!(
            first.target_values,
            ["b", "d"],
            "first sightings are no change"
        );
        let mut quiet = EventRow::default();
        quiet.fill_tool_catalog(pb::ToolCatalog {
            tools: vec![tool("a", pb::ToolChange::Added, &[])],
            first: true,
            ..Default::default()
        });
        assert!(!quiet.is_tool_change());
    }

    #[test]
    fn config_changes_name_the_destination_as_target_and_summarise_the_settings() {
        let mut row = EventRow::default();
        row.fill_config_change(pb::ConfigChange {
            destination: "soc-hook".into(),
            kind: "webhook".into(),
            change: pb::ConfigChangeKind::Changed as i32,
            address: "https://siem.example/hook".into(),
            payload: "json".into(),
            redact_keys: vec!["email".into()],
            items: "all".into(),
            config_sha256: vec![0xab; 32],
            changed_fields: vec!["secret".into()],
            ..Default::default()
        });
        assert!(row.is_config_change());
        assert_eq!(row.target_names, ["changed"]);
        assert_eq!(row.target_values, ["soc-hook"]);
        assert_eq!(
            row.reason,
            format!(
                "destination soc-hook (webhook) changed (secret): address https://siem.example/hook, \
                 payload json, items all, redact_keys [email], config_sha256 {}",
                "ab".repeat(32)
            )
        );
    }
}
