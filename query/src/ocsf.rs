//! OCSF export: each event as an API Activity (class 6003) object of OCSF 1.4.0 with the
//! `security_control` profile.
//!
//! The mapping is documented in README "Query service / OCSF mapping". OCSF defines `status` as
//! the caption of `status_id` (Success, Failure, ...), so the policy decision does not go there:
//! it goes to the fields made for a control's verdict (`action_id` / `disposition_id` of the
//! `security_control` profile, with their captions), its label to `status_code` and its reason to
//! `status_detail`. OCSF has no place for a hash chain, so the full Verdict record (with envelope
//! and signature) travels in `unmapped.verdict`: a SIEM indexes the OCSF fields, an auditor
//! re-verifies `unmapped.verdict`. `Follow`'s findings are Detection Findings (class 2004,
//! [`finding_to_ocsf`]). The integration tests validate every line against the
//! published 1.4.0 schema with two third-party validators (`scripts/ocsf_validate.py`).

use crate::export::ExportRecord;
use crate::follow_findings::FindingRecord;
use serde_json::{json, Map, Value};
use verdict_proto::pb::{DecisionKind, OutcomeKind, RiskClass};
use verdict_proto::Label;

pub const CLASS_UID: u32 = 6003;
const CATEGORY_UID: u32 = 6;
/// The OCSF schema version every line claims (README states the same).
pub const OCSF_VERSION: &str = "1.4.0";
const PROFILE: &str = "security_control";

/// An OCSF enumeration value with its caption (the `*_id` field and its sibling).
type Enum = (u32, &'static str);

const UNKNOWN: Enum = (0, "Unknown");
const SUCCESS: Enum = (1, "Success");
const FAILURE: Enum = (2, "Failure");
const INFORMATIONAL: Enum = (1, "Informational");
const MEDIUM: Enum = (3, "Medium");
const HIGH: Enum = (4, "High");

/// OCSF `activity_id` of API Activity from the risk class: read → 2 Read, write → 3 Update,
/// destructive → 4 Delete, otherwise 99 Other.
fn activity(risk: &str) -> Enum {
    match RiskClass::from_label(risk) {
        Some(RiskClass::Read) => (2, "Read"),
        Some(RiskClass::Write) => (3, "Update"),
        Some(RiskClass::Destructive) => (4, "Delete"),
        _ => (99, "Other"),
    }
}

/// `(status, severity)`: allowed and approved calls succeed (informational), a held call is
/// still unknown (medium: someone must look), refusals fail (medium), errors fail (high); an
/// outcome succeeds or fails with the forwarded call; checkpoints are unknown, informational.
fn status(record: &ExportRecord) -> (Enum, Enum) {
    match DecisionKind::from_label(&record.decision) {
        Some(DecisionKind::Allow | DecisionKind::Approved) => (SUCCESS, INFORMATIONAL),
        Some(DecisionKind::ApprovalRequested) => (UNKNOWN, MEDIUM),
        Some(DecisionKind::Error) => (FAILURE, HIGH),
        Some(_) => (FAILURE, MEDIUM),
        None => match OutcomeKind::from_label(&record.outcome) {
            Some(OutcomeKind::Ok) => (SUCCESS, INFORMATIONAL),
            Some(_) => (FAILURE, INFORMATIONAL),
            None => (UNKNOWN, INFORMATIONAL),
        },
    }
}

/// The control's verdict as `security_control` `(action, disposition)`; `None` for events that
/// are not decisions (outcomes, checkpoints).
fn control(decision: &str) -> Option<(Enum, Enum)> {
    const ALLOWED: Enum = (1, "Allowed");
    const DENIED: Enum = (2, "Denied");
    Some(match DecisionKind::from_label(decision)? {
        DecisionKind::Allow => (ALLOWED, (1, "Allowed")),
        DecisionKind::Approved => (ALLOWED, (8, "Approved")),
        DecisionKind::ApprovalRequested => ((3, "Observed"), (14, "Delayed")),
        DecisionKind::Deny | DecisionKind::Hide | DecisionKind::RateLimited => {
            (DENIED, (2, "Blocked"))
        }
        DecisionKind::Rejected | DecisionKind::ApprovalExpired => (DENIED, (25, "Rejected")),
        DecisionKind::Error => (DENIED, (27, "Error")),
        DecisionKind::Refused => (DENIED, (26, "Unauthorized")),
        DecisionKind::Unspecified => return None,
    })
}

/// The event's own words for what happened: decision, outcome kind, or event kind.
fn status_code(record: &ExportRecord) -> &str {
    [&record.decision, &record.outcome, &record.kind]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or("", String::as_str)
}

/// Why: the rule's reason, the upstream's message, or why a checkpoint was written.
fn status_detail(record: &ExportRecord) -> &str {
    [
        &record.reason,
        &record.outcome_message,
        &record.checkpoint_reason,
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .map_or("", String::as_str)
}

/// Inserts `field_id` and its caption `field`.
fn put_enum(event: &mut Map<String, Value>, field: &str, (id, caption): Enum) {
    event.insert(format!("{field}_id"), json!(id));
    event.insert(field.to_owned(), json!(caption));
}

/// The `security_control` fields of a decision: action, disposition and the policy rule.
fn put_control(event: &mut Map<String, Value>, record: &ExportRecord) {
    if let Some((action, disposition)) = control(&record.decision) {
        put_enum(event, "action", action);
        put_enum(event, "disposition", disposition);
    }
    if !record.rule_id.is_empty() {
        event.insert(
            "policy".into(),
            json!({ "uid": record.rule_id, "name": record.rule_id, "version": record.policy_sha256 }),
        );
    }
}

pub fn to_ocsf(record: &ExportRecord) -> Value {
    let activity = activity(&record.risk);
    let (status, severity) = status(record);
    let operation = if record.tool.is_empty() {
        &record.method
    } else {
        &record.tool
    };
    let mut event = Map::new();
    event.insert("class_uid".into(), json!(CLASS_UID));
    event.insert("class_name".into(), json!("API Activity"));
    event.insert("category_uid".into(), json!(CATEGORY_UID));
    event.insert("category_name".into(), json!("Application Activity"));
    event.insert("activity_id".into(), json!(activity.0));
    event.insert("activity_name".into(), json!(activity.1));
    event.insert("type_uid".into(), json!(CLASS_UID * 100 + activity.0));
    event.insert(
        "type_name".into(),
        json!(format!("API Activity: {}", activity.1)),
    );
    event.insert("time".into(), json!(record.time_unix_nanos / 1_000_000));
    put_enum(&mut event, "severity", severity);
    put_enum(&mut event, "status", status);
    event.insert("status_code".into(), json!(status_code(record)));
    event.insert("status_detail".into(), json!(status_detail(record)));
    put_control(&mut event, record);
    let message = format!("{} {} {}", record.agent_id, status_code(record), operation);
    event.insert("message".into(), json!(message.trim()));
    event.insert(
        "actor".into(),
        json!({
            "user": { "uid": record.agent_id },
            "session": { "uid": record.session },
            "app_name": record.client_name,
        }),
    );
    event.insert(
        "api".into(),
        json!({
            "operation": operation,
            "service": { "name": record.upstream },
            "request": { "uid": record.request_id },
        }),
    );
    event.insert("src_endpoint".into(), json!({ "name": record.remote_addr }));
    event.insert(
        "resources".into(),
        record
            .targets
            .iter()
            .map(|t| json!({"type": t.name, "name": t.value}))
            .collect(),
    );
    event.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "profiles": [PROFILE],
            "product": { "name": "Verdict", "vendor_name": "Verdict" },
            "uid": format!("{}:{}", record.chain_id, record.seq),
            "log_name": record.chain_id,
            "sequence": record.seq,
        }),
    );
    event.insert("unmapped".into(), json!({ "verdict": record }));
    Value::Object(event)
}

/// A finding as an OCSF Detection Finding (class 2004, activity 1 Create): the kind is the
/// finding's type and title, the detail its description; the whole finding record (evidence
/// included) travels in `unmapped.verdict_finding`.
pub fn finding_to_ocsf(record: &FindingRecord) -> Value {
    const FINDING_CLASS_UID: u32 = 2004;
    let severity = if record.is_forgery() { HIGH } else { MEDIUM };
    let time = record.detected_unix_nanos / 1_000_000;
    let mut event = Map::new();
    event.insert("class_uid".into(), json!(FINDING_CLASS_UID));
    event.insert("class_name".into(), json!("Detection Finding"));
    event.insert("category_uid".into(), json!(2));
    event.insert("category_name".into(), json!("Findings"));
    event.insert("activity_id".into(), json!(1));
    event.insert("activity_name".into(), json!("Create"));
    event.insert("type_uid".into(), json!(FINDING_CLASS_UID * 100 + 1));
    event.insert("type_name".into(), json!("Detection Finding: Create"));
    event.insert("time".into(), json!(time));
    put_enum(&mut event, "severity", severity);
    put_enum(&mut event, "status", (1, "New"));
    event.insert("status_code".into(), json!(record.finding));
    event.insert("status_detail".into(), json!(record.detail));
    event.insert(
        "message".into(),
        json!(format!(
            "{} on chain {} at seq {}",
            record.finding, record.chain_id, record.seq
        )),
    );
    event.insert(
        "finding_info".into(),
        json!({
            "uid": record.uid(),
            "title": format!("Verdict audit trail integrity: {}", record.finding),
            "desc": record.detail,
            "types": [record.finding],
            "created_time": time,
        }),
    );
    event.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "product": { "name": "Verdict", "vendor_name": "Verdict" },
            "uid": record.uid(),
            "log_name": record.chain_id,
        }),
    );
    event.insert("unmapped".into(), json!({ "verdict_finding": record }));
    Value::Object(event)
}

pub fn to_ocsf_line(record: &ExportRecord) -> String {
    let mut line = to_ocsf(record).to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(decision: &str) -> ExportRecord {
        ExportRecord {
            kind: "decision".into(),
            decision: decision.into(),
            ..ExportRecord::default()
        }
    }

    #[test]
    fn the_decision_never_lands_in_status() {
        for &(_, label) in DecisionKind::NAMES {
            let event = to_ocsf(&record(label));
            let status = event["status"].as_str().unwrap_or_default();
            assert!(
                ["Unknown", "Success", "Failure"].contains(&status),
                "{status}"
            );
            assert_eq!(event["status_code"], label);
            assert!(event["disposition_id"].is_u64(), "{label}: {event}");
        }
    }

    #[test]
    fn outcomes_and_checkpoints_carry_no_disposition() {
        let mut outcome = record("");
        outcome.kind = "outcome".into();
        outcome.outcome = "tool_error".into();
        let event = to_ocsf(&outcome);
        assert_eq!(event["status_id"], 2);
        assert_eq!(event["status_code"], "tool_error");
        assert!(event.get("disposition_id").is_none());
    }
}
