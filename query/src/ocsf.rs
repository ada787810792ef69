//! OCSF export: each event as an API Activity (class 6003) object.
//!
//! The mapping is documented in README "Query service / OCSF mapping". OCSF has no place for a
//! hash chain, so the full Verdict record (with envelope and signature) travels in
//! `unmapped.verdict`: a SIEM indexes the OCSF fields, an auditor re-verifies `unmapped.verdict`.

use crate::export::ExportRecord;
use serde_json::{json, Value};
use verdict_proto::pb::{DecisionKind, RiskClass};
use verdict_proto::Label;

pub const CLASS_UID: u32 = 6003;
const CATEGORY_UID: u32 = 6;
const OCSF_VERSION: &str = "1.3.0";

/// OCSF `activity_id` of API Activity from the risk class: read → 2 Read, write → 3 Update,
/// destructive → 4 Delete, otherwise 99 Other.
fn activity(risk: &str) -> (u32, &'static str) {
    match RiskClass::from_label(risk) {
        Some(RiskClass::Read) => (2, "Read"),
        Some(RiskClass::Write) => (3, "Update"),
        Some(RiskClass::Destructive) => (4, "Delete"),
        _ => (99, "Other"),
    }
}

/// `(status_id, severity_id)`: allowed and approved calls succeed (informational); refusals fail
/// (medium); errors fail (high); outcomes and checkpoints are unknown-status informational.
fn status(decision: &str) -> (u32, u32) {
    match DecisionKind::from_label(decision) {
        Some(DecisionKind::Allow | DecisionKind::Approved) => (1, 1),
        Some(DecisionKind::Error) => (2, 4),
        None => (0, 1),
        Some(_) => (2, 3),
    }
}

pub fn to_ocsf(record: &ExportRecord) -> Value {
    let (activity_id, activity_name) = activity(&record.risk);
    let (status_id, severity_id) = status(&record.decision);
    let operation = if record.tool.is_empty() {
        &record.method
    } else {
        &record.tool
    };
    json!({
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "category_uid": CATEGORY_UID,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": CLASS_UID * 100 + activity_id,
        "time": record.time_unix_nanos / 1_000_000,
        "severity_id": severity_id,
        "status_id": status_id,
        "status": if record.decision.is_empty() { &record.kind } else { &record.decision },
        "status_detail": record.reason,
        "message": format!("{} {} {}", record.agent_id, record.decision, operation).trim().to_owned(),
        "actor": {
            "user": { "uid": record.agent_id },
            "session": { "uid": record.session },
            "app_name": record.client_name,
        },
        "api": {
            "operation": operation,
            "service": { "name": record.upstream },
            "request": { "uid": record.request_id },
        },
        "src_endpoint": { "name": record.remote_addr },
        "resources": record.targets.iter().map(|t| json!({"type": t.name, "name": t.value})).collect::<Vec<_>>(),
        "metadata": {
            "version": OCSF_VERSION,
            "product": { "name": "Verdict", "vendor_name": "Verdict" },
            "uid": format!("{}:{}", record.chain_id, record.seq),
            "log_name": record.chain_id,
            "sequence": record.seq,
        },
        "unmapped": { "verdict": record },
    })
}

pub fn to_ocsf_line(record: &ExportRecord) -> String {
    let mut line = to_ocsf(record).to_string();
    line.push('\n');
    line
}
