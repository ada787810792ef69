//! Where an audit event is born: the body of every decision and outcome, built from what the
//! gateway knew when it decided.
//!
//! Arguments are stored per the redaction mode (`redacted`, the default: values under
//! secret-looking keys replaced at any depth; `full`; `hash`: none), always with the SHA-256 of
//! their canonical JSON as received, so equality checks work on redacted events too. A key is
//! secret-looking when its name, lowercased and stripped of `_`, `-` and `.`, contains one of the
//! configured words (`api_key`, `X-Api-Key` and `githubToken` all contain `apikey`/`token`):
//! a false positive costs a redacted value, a false negative leaks a secret. Targets — what a call acts on, e.g. `session_id=s1` — are extracted from the
//! top-level arguments (configured names per tool, else names like `*_id`, `id`, `session*`,
//! `name`, `path`) after redaction, so a sensitive value never becomes a target. Every field is
//! bounded (arguments over 64 KiB are kept as their hash only), so no request makes an event too
//! large to journal or ship.

use super::canonical::canonical_json;
use crate::config::{AuditConfig, RedactionMode};
use crate::decision::RiskName;
use crate::session::Session;
use serde_json::Value;
use std::collections::BTreeMap;
use verdict_proto::hash::sha256;
use verdict_proto::merkle::Frontier;
use verdict_proto::pb::{self, event_body::Kind};
use verdict_service::redact::{SensitiveKeys, REDACTED};

/// Arguments stored as text at most; larger ones are stored as their hash only (a 4 MiB request
/// must not make a 4 MiB event).
const MAX_STORED_ARGUMENTS: usize = 64 << 10;
/// Any other text field (tool name, request id, client name, target value) is cut to this.
const MAX_FIELD: usize = 512;
/// Targets recorded per call at most.
const MAX_TARGETS: usize = 32;

/// Builds event bodies with the configured redaction and target extraction.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    redaction: RedactionMode,
    sensitive_keys: SensitiveKeys,
    targets: BTreeMap<String, Vec<String>>,
}

/// What a decision concerns, beyond the actor.
#[derive(Debug, Default)]
pub struct DecisionFacts<'a> {
    pub upstream: &'a str,
    pub method: &'a str,
    pub tool: &'a str,
    pub risk: Option<RiskName>,
    pub arguments: Option<&'a Value>,
    pub decision: pb::DecisionKind,
    pub rule_id: &'a str,
    pub reason: &'a str,
    pub policy_sha256: &'a [u8],
    pub request_id: Option<&'a Value>,
    pub approval_id: &'a str,
}

impl EventBuilder {
    pub fn new(config: &AuditConfig) -> Self {
        Self {
            redaction: config.redaction,
            sensitive_keys: SensitiveKeys::new(&config.sensitive_keys),
            targets: config.targets.clone(),
        }
    }

    /// Whether values under argument key `key` are secret (redacted in events).
    pub fn is_sensitive(&self, key: &str) -> bool {
        self.sensitive_keys.is_sensitive(key)
    }

    /// A decision body stamped with the current time.
    pub fn decision(&self, actor: pb::Actor, facts: &DecisionFacts<'_>) -> pb::EventBody {
        let mut decision = pb::Decision {
            actor: Some(actor),
            upstream: bounded(facts.upstream),
            method: bounded(facts.method),
            tool: bounded(facts.tool),
            risk: facts
                .risk
                .map_or(pb::RiskClass::Unspecified, RiskName::class) as i32,
            decision: facts.decision as i32,
            rule_id: facts.rule_id.into(),
            policy_sha256: facts.policy_sha256.to_vec(),
            reason: facts.reason.into(),
            request_id: bounded(&facts.request_id.map(Value::to_string).unwrap_or_default()),
            approval_id: facts.approval_id.into(),
            ..Default::default()
        };
        if let Some(arguments) = facts.arguments {
            self.fill_arguments(&mut decision, facts.tool, arguments);
        }
        body(Kind::Decision(decision))
    }

    fn fill_arguments(&self, decision: &mut pb::Decision, tool: &str, arguments: &Value) {
        decision.arguments_sha256 = sha256(canonical_json(arguments).as_bytes()).to_vec();
        let redacted = self.sensitive_keys.redact(arguments);
        decision.targets = self.extract_targets(tool, &redacted);
        let (redaction, stored) = match self.redaction {
            RedactionMode::Full => (pb::Redaction::Full, canonical_json(arguments)),
            RedactionMode::Redacted => (pb::Redaction::Redacted, canonical_json(&redacted)),
            RedactionMode::Hash => (pb::Redaction::Hash, String::new()),
        };
        let (redaction, stored) = if stored.len() > MAX_STORED_ARGUMENTS {
            (pb::Redaction::Hash, String::new())
        } else {
            (redaction, stored)
        };
        decision.redaction = redaction as i32;
        decision.arguments_json = stored;
    }

    fn extract_targets(&self, tool: &str, arguments: &Value) -> Vec<pb::Target> {
        let Some(map) = arguments.as_object() else {
            return Vec::new();
        };
        let configured = self.targets.get(tool);
        let mut targets = Vec::new();
        for (name, value) in map {
            let wanted = match configured {
                Some(names) => names.iter().any(|n| n == name),
                None => is_default_target(name),
            };
            if !wanted {
                continue;
            }
            let values = match value {
                Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
                other => scalar_text(other).into_iter().collect::<Vec<_>>(),
            };
            targets.extend(
                values
                    .into_iter()
                    .filter(|v| v != REDACTED)
                    .map(|value| pb::Target {
                        name: bounded(name),
                        value: bounded(&value),
                    }),
            );
        }
        targets.truncate(MAX_TARGETS);
        targets
    }
}

fn is_default_target(name: &str) -> bool {
    let name = name.to_lowercase();
    name == "id"
        || name == "name"
        || name == "path"
        || name.ends_with("_id")
        || name.starts_with("session")
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `text`, cut at a character boundary to at most [`MAX_FIELD`] bytes.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_FIELD {
        return text.to_owned();
    }
    let mut end = MAX_FIELD;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The actor of a request in `session`.
pub fn actor(session: &Session) -> pb::Actor {
    let client = session.client();
    pb::Actor {
        agent_id: session.agent.clone(),
        session: bounded(&session.id),
        client_name: bounded(&client.name),
        client_version: bounded(&client.version),
        protocol_version: bounded(&client.protocol_version),
        transport: session.transport.into(),
        remote_addr: session.remote_addr.clone(),
    }
}

/// A body for an already built decision (the steps of an approval), stamped with the current
/// time.
pub fn decision_body(decision: pb::Decision) -> pb::EventBody {
    body(Kind::Decision(decision))
}

/// An outcome body for the decision at `decision_seq`.
pub fn outcome(decision_seq: u64, outcome: pb::Outcome) -> pb::EventBody {
    body(Kind::Outcome(pb::Outcome {
        decision_seq,
        ..outcome
    }))
}

/// An error decision saying how many refusals made while the journal was unavailable did not
/// fit in memory, so the trail says that something is missing and how much.
pub fn unrecorded_refusals(count: u64) -> pb::EventBody {
    body(Kind::Decision(pb::Decision {
        decision: pb::DecisionKind::Error as i32,
        rule_id: "gateway.journal".into(),
        reason: format!(
            "{count} refusals made while the audit journal was unavailable could not be kept in memory and are not recorded individually"
        ),
        ..Default::default()
    }))
}

/// A body recording the policy the gateway decides under from now on.
pub fn policy_loaded(loaded: pb::PolicyLoaded) -> pb::EventBody {
    body(Kind::PolicyLoaded(loaded))
}

/// A body recording an upstream's tool catalog (tool pinning).
pub fn tool_catalog(catalog: pb::ToolCatalog) -> pb::EventBody {
    body(Kind::ToolCatalog(catalog))
}

/// A body recording a change of a forwarder's destinations (`verdict-forwarder`, which records
/// with this crate's recorder).
pub fn config_change(change: pb::ConfigChange) -> pb::EventBody {
    body(Kind::ConfigChange(change))
}

/// A checkpoint body attesting the head `(seq, hash)`.
pub fn checkpoint(head_seq: u64, head_hash: &[u8], reason: &str, interval_secs: u32) -> Checkpoint {
    Checkpoint(pb::Checkpoint {
        head_seq,
        head_hash: head_hash.to_vec(),
        reason: reason.into(),
        interval_secs,
        ..Default::default()
    })
}

/// A checkpoint being built: [`Checkpoint::with_tree`] adds the Merkle tree it commits to.
pub struct Checkpoint(pb::Checkpoint);

impl Checkpoint {
    /// Commits to `tree` (over seqs `1..=head_seq`), when the gateway knows it.
    pub fn with_tree(mut self, tree: Option<&Frontier>) -> pb::EventBody {
        if let Some(tree) = tree.filter(|t| t.size() == self.0.head_seq) {
            self.0.tree_size = tree.size();
            self.0.tree_root = tree.root().to_vec();
            self.0.tree_peaks = tree.peaks().iter().map(|p| p.to_vec()).collect();
        }
        body(Kind::Checkpoint(self.0))
    }
}

fn body(kind: Kind) -> pb::EventBody {
    pb::EventBody {
        time_unix_nanos: verdict_proto::now_unix_nanos(),
        kind: Some(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn builder(redaction: RedactionMode) -> EventBuilder {
        EventBuilder::new(&AuditConfig {
            redaction,
            ..AuditConfig::default()
        })
    }

    fn decide(builder: &EventBuilder, tool: &str, arguments: &Value) -> pb::Decision {
        let facts = DecisionFacts {
            tool,
            arguments: Some(arguments),
            decision: pb::DecisionKind::Deny,
            ..Default::default()
        };
        match builder.decision(pb::Actor::default(), &facts).kind {
            Some(Kind::Decision(d)) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn targets_default_names_and_redaction() {
        let args = json!({"action": "delete", "session_id": "s1", "token": "hunter2",
                          "nested": {"Password": "x", "keep": 1}, "ids": ["a"], "id": 7});
        let full = decide(&builder(RedactionMode::Full), "session_manager", &args);
        let targets: Vec<_> = full
            .targets
            .iter()
            .map(|t| format!("{}={}", t.name, t.value))
            .collect();
        assert_eq!(targets, ["id=7", "session_id=s1"]);
        assert!(full.arguments_json.contains("hunter2"));
        assert_eq!(
            full.arguments_sha256,
            sha256(canonical_json(&args).as_bytes()).to_vec()
        );

        let redacted = decide(&builder(RedactionMode::Redacted), "session_manager", &args);
        assert!(!redacted.arguments_json.contains("hunter2"));
        assert!(redacted
            .arguments_json
            .contains(r#""Password":"[redacted]""#));
        assert!(redacted.arguments_json.contains(r#""keep":1"#));
        assert_eq!(
            redacted.arguments_sha256, full.arguments_sha256,
            "hash of the arguments as received"
        );

        let hashed = decide(&builder(RedactionMode::Hash), "session_manager", &args);
        assert!(hashed.arguments_json.is_empty());
        assert_eq!(hashed.targets, full.targets);
    }

    #[test]
    fn secrets_are_redacted_by_default_at_any_depth() {
        let args = json!({"password": "pw-1", "api_key": "ak-2", "note": "keep",
                          "auth": {"nested": [{"Token": "tk-3"}], "X-Api-Key": "ak-4"},
                          "githubToken": "tk-5", "clientSecret": {"inner": "s-6"}});
        let d = decide(&builder(AuditConfig::default().redaction), "tool", &args);
        assert_eq!(d.redaction, pb::Redaction::Redacted as i32);
        for secret in ["pw-1", "ak-2", "tk-3", "ak-4", "tk-5", "s-6"] {
            assert!(!d.arguments_json.contains(secret), "{secret} stored");
        }
        assert!(d.arguments_json.contains(r#""note":"keep""#));
        assert_eq!(
            d.arguments_sha256,
            sha256(canonical_json(&args).as_bytes()).to_vec(),
            "digest of the arguments as received"
        );
    }

    #[test]
    fn huge_requests_make_bounded_events() {
        let args = json!({"session_id": "세".repeat(10_000), "blob": "x".repeat(5 << 20)});
        let d = decide(&builder(RedactionMode::Full), &"t".repeat(100_000), &args);
        assert!(d.arguments_json.is_empty() && d.redaction == pb::Redaction::Hash as i32);
        assert_eq!(
            d.arguments_sha256,
            sha256(canonical_json(&args).as_bytes()).to_vec()
        );
        assert!(d.tool.len() <= MAX_FIELD + 3 && d.targets[0].value.len() <= MAX_FIELD + 3);
    }

    #[test]
    fn configured_targets_replace_the_defaults() {
        let mut config = AuditConfig::default();
        config
            .targets
            .insert("memory_write".into(), vec!["key".into(), "token".into()]);
        config.redaction = RedactionMode::Redacted;
        let builder = EventBuilder::new(&config);
        let d = decide(
            &builder,
            "memory_write",
            &json!({"key": "k1", "session_id": "s", "token": "t"}),
        );
        let targets: Vec<_> = d
            .targets
            .iter()
            .map(|t| format!("{}={}", t.name, t.value))
            .collect();
        assert_eq!(targets, ["key=k1"], "sensitive values never become targets");
    }
}
