//! ArcSight CEF (Common Event Format) lines from export records: the payload most SIEM syslog
//! pipelines parse without a custom parser.
//!
//! `CEF:0|Verdict|Verdict|<version>|<signature>|<name>|<severity>|<extension>`: the signature id
//! is the decision (or the outcome / event kind), the extension carries the who, what and where,
//! and `externalId` = `chain_id:seq` ties each line to its signed event (`verdict export` and
//! `verdict verify` find it). Header fields escape `\` and `|`; extension values escape `\`, `=`
//! and line breaks, as the CEF specification requires. Arguments are never sent.

use verdict_query::export::ExportRecord;
use verdict_query::FindingRecord;

/// The CEF line of one event (no trailing newline).
pub fn to_cef(record: &ExportRecord) -> String {
    let signature = signature(record);
    let name = format!("{} {} {}", record.agent_id, signature, operation(record));
    let mut extension = Vec::new();
    let mut field = |key: &str, value: &str| {
        if !value.is_empty() {
            extension.push(format!("{key}={}", escape_value(value)));
        }
    };
    field("rt", &(record.time_unix_nanos / 1_000_000).to_string());
    field("externalId", &format!("{}:{}", record.chain_id, record.seq));
    field("cs1Label", "chain");
    field("cs1", &record.chain_id);
    field("cn1Label", "seq");
    field("cn1", &record.seq.to_string());
    field("act", signature);
    field("suser", &record.agent_id);
    field("cs2Label", "session");
    field("cs2", &record.session);
    field("requestClientApplication", &record.client_name);
    field("destinationServiceName", &record.upstream);
    field("cs3Label", "tool");
    field("cs3", operation(record));
    field("cs4Label", "risk");
    field("cs4", &record.risk);
    field("cs5Label", "rule");
    field("cs5", &record.rule_id);
    field("reason", &record.reason);
    field("src", &record.remote_addr);
    let targets: Vec<String> = record
        .targets
        .iter()
        .map(|t| format!("{}={}", t.name, t.value))
        .collect();
    field("cs6Label", "targets");
    field("cs6", &targets.join(","));
    format!(
        "CEF:0|Verdict|Verdict|{}|{}|{}|{}|{}",
        env!("CARGO_PKG_VERSION"),
        escape_header(signature),
        escape_header(name.trim()),
        severity(record),
        extension.join(" ")
    )
}

/// The CEF line of one integrity finding: signature `finding:<kind>`, severity 9 for forged or
/// altered messages and 6 otherwise, `externalId` = the finding's id, `cs1`/`cn1` its chain and
/// seq, `msg` the auditor's detail.
pub fn finding_to_cef(record: &FindingRecord) -> String {
    let signature = format!("finding:{}", record.finding);
    let name = format!(
        "{} on chain {} at seq {}",
        record.finding, record.chain_id, record.seq
    );
    let extension = [
        ("rt", (record.detected_unix_nanos / 1_000_000).to_string()),
        ("externalId", record.uid()),
        ("cs1Label", "chain".into()),
        ("cs1", record.chain_id.clone()),
        ("cn1Label", "seq".into()),
        ("cn1", record.seq.to_string()),
        ("act", record.finding.clone()),
        ("cs2Label", "evidence_sha256".into()),
        ("cs2", record.evidence_sha256.clone()),
        ("msg", record.detail.clone()),
    ]
    .iter()
    .filter(|(_, value)| !value.is_empty())
    .map(|(key, value)| format!("{key}={}", escape_value(value)))
    .collect::<Vec<_>>();
    format!(
        "CEF:0|Verdict|Verdict|{}|{}|{}|{}|{}",
        env!("CARGO_PKG_VERSION"),
        escape_header(&signature),
        escape_header(&name),
        if record.is_forgery() { 9 } else { 6 },
        extension.join(" ")
    )
}

/// The decision, else the outcome kind, else the event kind.
fn signature(record: &ExportRecord) -> &str {
    [&record.decision, &record.outcome, &record.kind]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or("event", String::as_str)
}

fn operation(record: &ExportRecord) -> &str {
    if record.tool.is_empty() {
        &record.method
    } else {
        &record.tool
    }
}

/// CEF severity 0–10: refusals 5, errors 8, held calls 4, everything else 1.
fn severity(record: &ExportRecord) -> u8 {
    match record.decision.as_str() {
        "" | "allow" | "approved" => 1,
        "approval_requested" => 4,
        "error" => 8,
        _ => 5,
    }
}

fn escape_header(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

fn escape_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace("\r\n", "\\n")
        .replace(['\n', '\r'], "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_would_break_the_line() {
        let record = ExportRecord {
            chain_id: "gw-1".into(),
            seq: 7,
            kind: "decision".into(),
            decision: "deny".into(),
            agent_id: "a|b".into(),
            reason: "x=1\nback\\slash".into(),
            ..ExportRecord::default()
        };
        let line = to_cef(&record);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("|deny|a\\|b deny|5|"), "{line}");
        assert!(line.contains("externalId=gw-1:7 "), "{line}");
        assert!(line.contains("reason=x\\=1\\nback\\\\slash"), "{line}");
    }

    #[test]
    fn a_forged_message_is_a_severe_finding_line() {
        let record = FindingRecord {
            finding: "bad_signature".into(),
            chain_id: "gw-1".into(),
            seq: 3,
            detail: "signature=forged".into(),
            evidence_sha256: "ab".repeat(32),
            ..FindingRecord::default()
        };
        let line = finding_to_cef(&record);
        assert!(
            line.contains("|finding:bad_signature|bad_signature on chain gw-1 at seq 3|9|"),
            "{line}"
        );
        assert!(
            line.contains("externalId=finding:gw-1:bad_signature:3:abab"),
            "{line}"
        );
        assert!(line.contains("msg=signature\\=forged"), "{line}");
    }
}
