//! Findings about what the trail *says*, not about its integrity: tool pinning.
//!
//! A security team watches findings, so a rug pull must land there, not only in an event a
//! search might find: every stored `tool_catalog` event that changes a tool becomes a
//! `tool_changed` finding, and every call the gateway refused or held because a pinned tool
//! changed (a decision by rule `pin`) a `tool_pin` finding, and every policy load that changes
//! the pins in force (`verdict policy pin` accepting a change) a `tool_repinned` finding, so the
//! acceptance sits beside the change it accepts. All carry the event's envelope as
//! evidence, like integrity findings, and are derived from verified events only, so a forger
//! cannot raise (or suppress) them.
//!
//! The same holds for a forwarder's destinations: every stored `config_change` event (a SIEM
//! destination added, removed or changed, secrets only as a hash) becomes a `config_changed`
//! finding, so a team sees where its trail is being sent without searching for it.

use verdict_proto::pb::DecisionKind;
use verdict_proto::Label;
use verdict_schema::{rows, EventRow, FindingRow};

/// The finding kind of a changed tool catalog.
pub const TOOL_CHANGED: &str = "tool_changed";
/// The finding kind of a call refused or held by tool pinning.
pub const TOOL_PIN: &str = "tool_pin";
/// The finding kind of a forwarder's destination change.
pub const CONFIG_CHANGED: &str = "config_changed";
/// The finding kind of a policy load that changed pins.
pub const TOOL_REPINNED: &str = "tool_repinned";
/// The rule id of the gateway's pinning decisions (`verdict_gateway::policy::PIN_RULE`).
const PIN_RULE: &str = "pin";

/// The finding a verified event row raises, detected at `(secs, nanos)`.
pub fn of(row: &EventRow, detected: (u32, i64)) -> Option<FindingRow> {
    let (kind, detail) = if row.is_tool_change() {
        (
            TOOL_CHANGED,
            format!("upstream {}: {}", row.upstream, row.reason),
        )
    } else if row.is_config_change() {
        (CONFIG_CHANGED, row.reason.clone())
    } else if row.rule_id == PIN_RULE && refused_or_held(&row.decision) {
        (
            TOOL_PIN,
            format!(
                "{} of {}/{} by agent {}: {}",
                row.decision, row.upstream, row.tool, row.agent_id, row.reason
            ),
        )
    } else if row.kind == rows::POLICY_LOADED && !row.target_values.is_empty() {
        (
            TOOL_REPINNED,
            format!(
                "pins accepted for {} (policy sha256 {}, {})",
                row.target_values.join(", "),
                row.policy_sha256,
                row.reason
            ),
        )
    } else {
        return None;
    };
    Some(FindingRow {
        kind: kind.into(),
        chain_id: row.chain_id.clone(),
        seq: row.seq,
        last_seq: row.seq,
        detail,
        detected_at: detected.0,
        detected_unix_nanos: detected.1,
        evidence: row.envelope.clone(),
        evidence_sha256: crate::sha256_hex(&row.envelope),
        kafka_partition: row.kafka_partition,
        kafka_offset: row.kafka_offset,
    })
}

fn refused_or_held(decision: &str) -> bool {
    [DecisionKind::Deny, DecisionKind::ApprovalRequested]
        .into_iter()
        .any(|kind| kind.label() == decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_decisions_and_tool_changes_are_findings_other_rows_are_not() {
        let denied = EventRow {
            kind: "decision".into(),
            rule_id: "pin".into(),
            decision: "deny".into(),
            tool: "session_manager".into(),
            envelope: vec![1, 2],
            ..Default::default()
        };
        let finding = of(&denied, (1, 2)).unwrap();
        assert_eq!(
            (finding.kind.as_str(), finding.evidence.len()),
            (TOOL_PIN, 2)
        );
        let allowed = EventRow {
            decision: "allow".into(),
            ..denied.clone()
        };
        assert!(of(&allowed, (1, 2)).is_none());
        let changed = EventRow {
            kind: verdict_schema::rows::TOOL_CATALOG.into(),
            target_names: vec!["changed".into()],
            target_values: vec!["session_manager".into()],
            ..Default::default()
        };
        assert_eq!(of(&changed, (1, 2)).unwrap().kind, TOOL_CHANGED);
        let first_sighting = EventRow {
            target_names: Vec::new(),
            ..changed
        };
        assert!(of(&first_sighting, (1, 2)).is_none());
        let destination = EventRow {
            kind: verdict_schema::rows::CONFIG_CHANGE.into(),
            reason: "destination soc (syslog) added".into(),
            ..Default::default()
        };
        let finding = of(&destination, (1, 2)).unwrap();
        assert_eq!(
            (finding.kind.as_str(), finding.detail.as_str()),
            (CONFIG_CHANGED, "destination soc (syslog) added")
        );
        let repinned = EventRow {
            kind: rows::POLICY_LOADED.into(),
            target_names: vec![rows::REPINNED.into()],
            target_values: vec!["memory/session_manager".into()],
            ..Default::default()
        };
        let finding = of(&repinned, (1, 2)).unwrap();
        assert_eq!(finding.kind, TOOL_REPINNED);
        assert!(finding.detail.contains("memory/session_manager"));
        let started = EventRow {
            target_values: Vec::new(),
            ..repinned
        };
        assert!(of(&started, (1, 2)).is_none());
    }
}
