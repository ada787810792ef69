//! What leaves for a destination: each feed record masked, then shaped into the destination's
//! payload (CEF line, the JSON record, or OCSF).
//!
//! Masking happens here, before any format is made, so no push format can miss it: values under
//! secret-looking argument keys (the gateway's default words plus the destination's
//! `redact_keys`, one rule: `verdict_service::redact`) are replaced in `arguments_json` and in the
//! targets. The gateway already masks its words before it signs, so usually nothing changes and
//! the record keeps its envelope (a receiver re-verifies it). When masking does change a record
//! (a gateway storing `full` arguments, or a word only the destination marks), the signed `body`
//! and `envelope` still hold the value, so they are withheld and `redaction` reads `masked`: such
//! an event is re-verified by its `chain_id:seq` against the stored trail (`verdict verify`,
//! Export), not from the pushed copy. Findings carry no arguments.

use crate::cef::{finding_to_cef, to_cef};
use crate::config::{Destination, Payload};
use crate::destination::DeliveryError;
use crate::webhook::Item;
use serde_json::Value;
use verdict_query::export::ExportRecord;
use verdict_query::{finding_to_ocsf, to_ocsf, FindingRecord};
use verdict_service::redact::{SensitiveKeys, DEFAULT_SENSITIVE_KEYS, REDACTED};

/// One feed message's line, and whether it is a finding.
pub struct Line {
    pub data: Vec<u8>,
    pub finding: bool,
}

/// Turns feed lines into one destination's masked payloads.
pub struct Shaper {
    payload: Payload,
    secrets: SensitiveKeys,
}

impl Shaper {
    pub fn new(destination: &Destination) -> Self {
        let words = DEFAULT_SENSITIVE_KEYS
            .iter()
            .copied()
            .chain(destination.redact_keys.iter().map(String::as_str));
        Self {
            payload: destination.payload,
            secrets: SensitiveKeys::new(words),
        }
    }

    /// One feed line as an [`Event`] of the destination's payload.
    pub fn event(&self, line: &Line) -> Result<Event, DeliveryError> {
        if line.finding {
            return self.finding_event(&line.data);
        }
        let mut record: ExportRecord = serde_json::from_slice(&line.data)?;
        mask(&self.secrets, &mut record);
        let msgid = [&record.decision, &record.kind]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_default();
        let warning = !matches!(
            record.decision.as_str(),
            "" | "allow" | "approved" | "approval_requested"
        );
        let payload = match self.payload {
            Payload::Cef => EventPayload::Cef(to_cef(&record)),
            Payload::Json => EventPayload::Json(serde_json::to_value(&record)?),
            Payload::Ocsf => EventPayload::Json(to_ocsf(&record)),
        };
        Ok(Event {
            id: format!("{}:{}", record.chain_id, record.seq),
            msgid,
            warning,
            time_millis: record.time_unix_nanos / 1_000_000,
            payload,
        })
    }

    /// A finding as an [`Event`]; always a warning.
    fn finding_event(&self, data: &[u8]) -> Result<Event, DeliveryError> {
        let record: FindingRecord = serde_json::from_slice(data)?;
        let payload = match self.payload {
            Payload::Cef => EventPayload::Cef(finding_to_cef(&record)),
            Payload::Json => EventPayload::Json(serde_json::to_value(&record)?),
            Payload::Ocsf => EventPayload::Json(finding_to_ocsf(&record)),
        };
        Ok(Event {
            id: record.uid(),
            msgid: format!("finding:{}", record.finding),
            warning: true,
            time_millis: record.detected_unix_nanos / 1_000_000,
            payload,
        })
    }
}

/// Masks `record`'s secret argument values and targets; when that changed anything, withholds the
/// signed bytes that still hold them.
fn mask(secrets: &SensitiveKeys, record: &mut ExportRecord) {
    let mut changed = false;
    if let Ok(arguments) = serde_json::from_str::<Value>(&record.arguments_json) {
        let masked = secrets.redact(&arguments);
        if masked != arguments {
            record.arguments_json = masked.to_string();
            changed = true;
        }
    }
    for target in &mut record.targets {
        if secrets.is_sensitive(&target.name) && target.value != REDACTED {
            target.value = REDACTED.into();
            changed = true;
        }
    }
    if changed {
        record.body.clear();
        record.envelope.clear();
        record.redaction = "masked".into();
    }
}

/// One feed event, ready for any sink.
pub struct Event {
    /// `chain_id:seq`, or a finding's id.
    pub id: String,
    pub msgid: String,
    pub warning: bool,
    pub time_millis: i64,
    /// A CEF line, or the JSON object (record or OCSF).
    payload: EventPayload,
}

enum EventPayload {
    Cef(String),
    Json(Value),
}

impl Event {
    pub fn payload_text(&self) -> String {
        match &self.payload {
            EventPayload::Cef(line) => line.clone(),
            EventPayload::Json(value) => value.to_string(),
        }
    }

    pub fn into_item(self) -> Item {
        let event = match self.payload {
            EventPayload::Cef(line) => Value::String(line),
            EventPayload::Json(value) => value,
        };
        Item {
            id: self.id,
            time_millis: self.time_millis,
            event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_query::export::TargetRecord;

    #[test]
    fn masking_withholds_the_signed_bytes_only_when_it_changed_something() {
        let secrets = SensitiveKeys::new(["token", "note"]);
        let mut clean = ExportRecord {
            arguments_json: r#"{"id":"s1","token":"[redacted]"}"#.into(),
            envelope: "ZW52".into(),
            body: "Ym9keQ".into(),
            redaction: "redacted".into(),
            ..ExportRecord::default()
        };
        mask(&secrets, &mut clean);
        assert_eq!(clean.envelope, "ZW52");
        let mut leaky = ExportRecord {
            arguments_json: r#"{"id":"s1","note":"private"}"#.into(),
            targets: vec![TargetRecord {
                name: "note".into(),
                value: "private".into(),
            }],
            envelope: "ZW52".into(),
            ..clean
        };
        mask(&secrets, &mut leaky);
        let text = serde_json::to_string(&leaky).unwrap();
        assert!(!text.contains("private"), "{text}");
        assert_eq!((leaky.envelope.as_str(), leaky.body.as_str()), ("", ""));
        assert_eq!(leaky.redaction, "masked");
    }
}
