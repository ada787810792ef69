//! Export records: one per stored event, in JSON lines, CSV or OCSF (see [`crate::ocsf`]).
//!
//! A record carries every field a reader wants (who, what, target, decision) *and* what a third
//! party needs to re-verify it without trusting this service: `chain_id`, `seq`, `hash`,
//! `prev_hash`, `key_id`, `signature` and the envelope as shipped (base64). The readable fields are
//! derived from the envelope by the same mapping the auditor stores
//! ([`EventRow::from_event`]), so an offline verifier rebuilds the whole record from the signed
//! bytes and compares: editing any field — not only the signed bytes — is detected
//! ([`check_jsonl_record`]). `verification` (how the auditor stored the event) is the one
//! unsigned field; it must be one of its three names.
//!
//! A JSON-lines export ends with one [`ExportEnd`] line: how many records it holds and, per
//! chain, the first and last seq, the count and the last hash. A file cut short has no end line
//! or one that disagrees with the records before it, and an empty export still has its end line
//! saying so: `verdict verify --export` fails all three instead of reporting what remains as OK.
//! The end line is not signed (whoever cuts the file could rewrite it); witnessed heads are what
//! make an export provably complete. So the end line also carries, per chain, the newest head the
//! auditor's witness signed within the exported seqs (signed, so not forgeable, though a cutter
//! can drop it): `verdict verify --export --witness-key` checks the export against it, and a head
//! fetched independently (`--witnessed-head`) covers the tail after it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use verdict_proto::verify::EventStatus;
use verdict_proto::witness::HeadRecord;
use verdict_proto::SignedEvent;
use verdict_schema::{EventRow, SourcePosition};

/// Lowercase hex of a signature, through a stack buffer (`hex::encode` builds its `String` a
/// `char` at a time, a visible cost at an export's millions of rows).
fn signature_hex(signature: &[u8; 64]) -> String {
    let mut buf = [0u8; 128];
    hex::encode_to_slice(signature, &mut buf).expect("128 bytes hold 64 in hex");
    String::from_utf8(buf.to_vec()).expect("hex is ASCII")
}

/// Bytes per streamed export chunk.
pub const CHUNK_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRecord {
    pub name: String,
    pub value: String,
}

/// One exported event. Field order is the JSON and CSV column order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRecord {
    pub chain_id: String,
    pub seq: u64,
    pub time_unix_nanos: i64,
    /// decision | outcome | checkpoint
    pub kind: String,
    pub agent_id: String,
    pub session: String,
    pub client_name: String,
    pub client_version: String,
    pub remote_addr: String,
    pub upstream: String,
    pub method: String,
    pub tool: String,
    pub risk: String,
    pub decision: String,
    pub rule_id: String,
    pub reason: String,
    pub policy_sha256: String,
    pub request_id: String,
    pub approval_id: String,
    pub approver: String,
    pub redaction: String,
    pub arguments_json: String,
    pub arguments_sha256: String,
    pub targets: Vec<TargetRecord>,
    pub decision_seq: u64,
    pub outcome: String,
    pub outcome_message: String,
    pub latency_micros: u64,
    pub checkpoint_reason: String,
    pub verification: String,
    pub hash: String,
    pub prev_hash: String,
    pub key_id: String,
    /// Hex of the 64-byte Ed25519 signature.
    pub signature: String,
    /// Base64 of the `EventBody` bytes as signed.
    pub body: String,
    /// Base64 of the `Envelope` as shipped: everything needed to re-verify.
    pub envelope: String,
}

impl ExportRecord {
    /// The record of a stored row, taking its fields by move (an export encodes millions).
    pub fn from_row(row: EventRow) -> Self {
        let signed = SignedEvent::decode(&row.envelope).ok();
        Self {
            chain_id: row.chain_id,
            seq: row.seq,
            time_unix_nanos: row.time_unix_nanos,
            kind: row.kind,
            agent_id: row.agent_id,
            session: row.session,
            client_name: row.client_name,
            client_version: row.client_version,
            remote_addr: row.remote_addr,
            upstream: row.upstream,
            method: row.method,
            tool: row.tool,
            risk: row.risk,
            decision: row.decision,
            rule_id: row.rule_id,
            reason: row.reason,
            policy_sha256: row.policy_sha256,
            request_id: row.request_id,
            approval_id: row.approval_id,
            approver: row.approver,
            redaction: row.redaction,
            arguments_json: row.arguments_json,
            arguments_sha256: row.arguments_sha256,
            targets: row
                .target_names
                .into_iter()
                .zip(row.target_values)
                .map(|(name, value)| TargetRecord { name, value })
                .collect(),
            decision_seq: row.decision_seq,
            outcome: row.outcome,
            outcome_message: row.outcome_message,
            latency_micros: row.latency_micros,
            checkpoint_reason: row.checkpoint_reason,
            verification: row.verification,
            hash: row.hash,
            prev_hash: row.prev_hash,
            key_id: row.key_id,
            signature: signed
                .as_ref()
                .map(|s| signature_hex(&s.signature))
                .unwrap_or_default(),
            body: signed
                .as_ref()
                .map(|s| B64.encode(&s.body))
                .unwrap_or_default(),
            envelope: B64.encode(&row.envelope),
        }
    }

    pub fn to_json_line(&self) -> String {
        let mut line = Vec::new();
        self.write_json_line(&mut line);
        String::from_utf8(line).expect("JSON is UTF-8")
    }

    /// Appends the record's JSON line to `out` (an export writes straight into its chunk).
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self).expect("a record serialises");
        out.push(b'\n');
    }

    /// The field names in declaration order: the JSON key order, the CSV columns and header.
    pub fn fields() -> &'static [&'static str] {
        serde_aux::serde_introspection::serde_introspect::<Self>()
    }

    /// CSV header line: [`ExportRecord::fields`], comma-separated.
    pub fn csv_header() -> String {
        let mut line = Self::fields().join(",");
        line.push('\n');
        line
    }

    /// One RFC 4180 line, the cells in [`ExportRecord::fields`] order; `targets` is a JSON array
    /// in its cell.
    pub fn to_csv_line(&self) -> String {
        let serde_json::Value::Object(mut values) =
            serde_json::to_value(self).expect("a record serialises")
        else {
            unreachable!("a record is an object")
        };
        let cells: Vec<String> = Self::fields()
            .iter()
            .map(|field| match values.remove(*field) {
                Some(serde_json::Value::String(s)) => csv_cell(&s),
                Some(other) => csv_cell(&other.to_string()),
                None => String::new(),
            })
            .collect();
        let mut line = cells.join(",");
        line.push('\n');
        line
    }
}

fn csv_cell(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// Why a JSON-lines record cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a valid export record: {0}")]
    Json(String),
    #[error("envelope is not valid base64")]
    Base64,
    #[error("envelope does not decode: {0}")]
    Envelope(String),
    #[error("unknown verification status {0:?}")]
    Verification(String),
    #[error("field {0} does not match the signed envelope")]
    Mismatch(String),
}

/// Parses one JSON-lines record and checks that every field is what its envelope says. The
/// returned event still needs its signature and chain link verified.
pub fn check_jsonl_record(line: &str) -> Result<SignedEvent, RecordError> {
    let record: ExportRecord =
        serde_json::from_str(line).map_err(|e| RecordError::Json(e.to_string()))?;
    let envelope = B64
        .decode(&record.envelope)
        .map_err(|_| RecordError::Base64)?;
    let event = SignedEvent::decode(&envelope).map_err(|e| RecordError::Envelope(e.to_string()))?;
    let status = [
        EventStatus::Verified,
        EventStatus::AfterBreak,
        EventStatus::OutOfOrder,
    ]
    .into_iter()
    .find(|s| s.as_str() == record.verification)
    .ok_or_else(|| RecordError::Verification(record.verification.clone()))?;
    let unplaced = SourcePosition {
        partition: -1,
        offset: -1,
    };
    let row = EventRow::from_event(&event, status, unplaced, 0)
        .map_err(|e| RecordError::Envelope(e.to_string()))?;
    let expected = ExportRecord::from_row(row);
    if expected != record {
        return Err(RecordError::Mismatch(first_difference(&expected, &record)));
    }
    Ok(event)
}

/// One chain's part of an export: its first and last seq, how many records, the last hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSpan {
    pub chain_id: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    pub last_hash: String,
}

/// What a JSON-lines export held, written as its last line (`{"export_end": {...}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportEnd {
    pub records: u64,
    pub chains: Vec<ChainSpan>,
    /// Per chain, the newest witnessed head within its exported seqs, if the witness signed one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witnessed_heads: Vec<HeadRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndLine {
    export_end: ExportEnd,
}

impl ExportEnd {
    /// Counts one more record (records come chain by chain, each in seq order).
    pub fn add(&mut self, chain_id: &str, seq: u64, hash: &str) {
        self.records += 1;
        match self.chains.last_mut() {
            Some(span) if span.chain_id == chain_id => {
                span.last_seq = seq;
                span.records += 1;
                span.last_hash = hash.to_owned();
            }
            _ => self.chains.push(ChainSpan {
                chain_id: chain_id.to_owned(),
                first_seq: seq,
                last_seq: seq,
                records: 1,
                last_hash: hash.to_owned(),
            }),
        }
    }

    /// Whether both count the same records in the same chain spans (heads aside).
    pub fn same_records(&self, other: &Self) -> bool {
        (self.records, &self.chains) == (other.records, &other.chains)
    }

    pub fn to_json_line(&self) -> String {
        let end = EndLine {
            export_end: self.clone(),
        };
        let mut line = serde_json::to_string(&end).expect("the end line serialises");
        line.push('\n');
        line
    }

    /// The end line's contents, if `line` is one.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str::<EndLine>(line)
            .ok()
            .map(|end| end.export_end)
    }
}

fn first_difference(a: &ExportRecord, b: &ExportRecord) -> String {
    let (serde_json::Value::Object(a), serde_json::Value::Object(b)) = (
        serde_json::to_value(a).expect("serialises"),
        serde_json::to_value(b).expect("serialises"),
    ) else {
        unreachable!("records are objects")
    };
    a.iter()
        .find(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use verdict_proto::{pb, ChainWriter, SecretKey};

    fn record() -> ExportRecord {
        let mut writer = ChainWriter::new("gw-1", SecretKey::from_seed(&[9; 32]));
        let body = pb::EventBody {
            time_unix_nanos: 1_700_000_000_000_000_000,
            kind: Some(pb::event_body::Kind::Decision(pb::Decision {
                tool: "session_manager".into(),
                decision: pb::DecisionKind::Deny as i32,
                reason: "a \"quoted\", reason".into(),
                ..Default::default()
            })),
        };
        let event = writer.append(body.encode_to_vec());
        let unplaced = SourcePosition {
            partition: -1,
            offset: -1,
        };
        ExportRecord::from_row(
            EventRow::from_event(&event, EventStatus::Verified, unplaced, 0).unwrap(),
        )
    }

    #[test]
    fn json_records_check_against_their_envelope() {
        let record = record();
        let line = record.to_json_line();
        assert_eq!(check_jsonl_record(&line).unwrap().seq, 1);
        let edited = line.replace("session_manager", "session_managex");
        assert_eq!(
            check_jsonl_record(&edited),
            Err(RecordError::Mismatch("tool".into()))
        );
    }

    #[test]
    fn the_end_line_sums_records_per_chain_and_parses_back() {
        let mut end = ExportEnd::default();
        for (chain, seq) in [("a", 3), ("a", 4), ("b", 1)] {
            end.add(chain, seq, &format!("{chain}{seq}"));
        }
        assert_eq!(end.records, 3);
        let spans: Vec<_> = end
            .chains
            .iter()
            .map(|c| {
                (
                    c.chain_id.as_str(),
                    c.first_seq,
                    c.last_seq,
                    c.records,
                    c.last_hash.as_str(),
                )
            })
            .collect();
        assert_eq!(spans, vec![("a", 3, 4, 2, "a4"), ("b", 1, 1, 1, "b1")]);
        assert_eq!(ExportEnd::parse(end.to_json_line().trim_end()), Some(end));
        assert_eq!(ExportEnd::parse(&record().to_json_line()), None);
    }

    #[test]
    fn csv_columns_follow_the_header_by_name() {
        let record = record();
        let header = ExportRecord::csv_header();
        let names: Vec<&str> = header.trim_end().split(',').collect();
        assert_eq!(names.len(), 36);
        assert_eq!(names[..4], ["chain_id", "seq", "time_unix_nanos", "kind"]);
        // Every named column holds that field's value (the reason is quoted: it has a comma).
        let line = record.to_csv_line();
        let quoted = "\"a \"\"quoted\"\", reason\"";
        let cells: Vec<String> = line
            .trim_end()
            .replace(quoted, "REASON")
            .split(',')
            .map(str::to_owned)
            .collect();
        assert_eq!(cells.len(), names.len());
        let cell = |name: &str| cells[names.iter().position(|n| *n == name).unwrap()].clone();
        assert_eq!(cell("chain_id"), record.chain_id);
        assert_eq!(cell("seq"), record.seq.to_string());
        assert_eq!(cell("tool"), "session_manager");
        assert_eq!(cell("decision"), "deny");
        assert_eq!(cell("reason"), "REASON");
        assert_eq!(cell("hash"), record.hash);
        assert_eq!(cell("envelope"), record.envelope);
        assert_eq!(cell("targets"), "[]");
    }
}
