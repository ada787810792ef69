//! What the audit trail keeps of a policy: its text, without the secrets it may hold.
//!
//! Decisions carry only the policy's hash; the gateway records the text itself (a `PolicyLoaded`
//! event) so a decision can be explained from the trail alone. A policy holds no credentials by
//! design (API keys, admin tokens and the approval webhook live in the gateway config), but an
//! argument rule can match a secret value — a deny rule on a leaked token, say. Such values are
//! recorded the way the gateway records a call's arguments: a value under a secret-looking key
//! (the same `sensitive_keys` test) is replaced by its SHA-256, and the keys are listed, so a
//! reader re-decides calls under the recorded text with those arguments unknown (a rule on a
//! redacted value is then "maybe", never guessed).

use crate::canonical::canonical_json;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// The `PolicyLoaded` reason of a gateway start: the gateway's rate-limit windows start empty.
pub const START: &str = "start";
/// The `PolicyLoaded` reason of a reload of the policy or its lock file: windows are kept.
pub const RELOAD: &str = "reload";

/// A policy's text as the trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailText {
    /// The policy's text: exactly the hashed text when nothing was redacted.
    pub text: String,
    /// Argument keys whose matched values were replaced (sorted); empty when none were.
    pub redacted_arguments: Vec<String>,
}

/// `text` (a valid policy) for the trail: argument values matched under keys `is_sensitive`
/// accepts replaced by `[redacted sha256:<hex of their canonical JSON>]`.
pub fn for_trail(text: &str, is_sensitive: impl Fn(&str) -> bool) -> TrailText {
    let unchanged = || TrailText {
        text: text.to_owned(),
        redacted_arguments: Vec::new(),
    };
    let Ok(mut policy) = serde_json::from_str::<Value>(text) else {
        return unchanged();
    };
    let mut redacted = BTreeSet::new();
    let rules = policy.get_mut("rules").and_then(Value::as_array_mut);
    for rule in rules.into_iter().flatten() {
        let arguments = rule
            .pointer_mut("/match/arguments")
            .and_then(Value::as_object_mut);
        for (key, matched) in arguments.into_iter().flatten() {
            // `{"present": bool}` holds no value, and a reader must keep its meaning.
            if is_sensitive(key) && matched.get("present").is_none() {
                *matched = Value::String(redaction(matched));
                redacted.insert(key.clone());
            }
        }
    }
    if redacted.is_empty() {
        return unchanged();
    }
    TrailText {
        text: serde_json::to_string_pretty(&policy).unwrap_or_default(),
        redacted_arguments: redacted.into_iter().collect(),
    }
}

/// What a redacted value reads in the trail.
fn redaction(value: &Value) -> String {
    let digest = Sha256::digest(canonical_json(value).as_bytes());
    format!("[redacted sha256:{}]", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    const LEAKED: &str = "sk-live-4f9a2c";

    #[test]
    fn a_policy_without_secret_looking_keys_is_kept_exactly() {
        let text = r#"{"version": "1", "default": "deny",
            "rules": [{"match": {"arguments": {"project": "notes"}}, "action": "allow"}]}"#;
        let kept = for_trail(text, |key| key.contains("token"));
        assert_eq!(kept.text, text);
        assert!(kept.redacted_arguments.is_empty());
    }

    #[test]
    fn secret_values_are_kept_as_hashes_only_and_the_text_stays_a_policy() {
        let text = format!(
            r#"{{"version": "1", "default": "allow", "rules": [
              {{"id": "leaked", "match": {{"arguments": {{"api_token": "{LEAKED}", "project": "notes"}}}},
               "action": "deny", "reason": "a revoked token"}},
              {{"id": "leaked-many", "match": {{"arguments": {{"api_token": {{"one_of": ["{LEAKED}x"]}}}}}},
               "action": "deny"}},
              {{"id": "tokenless", "match": {{"arguments": {{"token": {{"present": false}}}}}},
               "action": "deny"}}]}}"#
        );
        let kept = for_trail(&text, |key| key.contains("token"));
        assert!(!kept.text.contains(LEAKED), "{}", kept.text);
        assert_eq!(kept.redacted_arguments, ["api_token"]);
        let hashed = hex::encode(Sha256::digest(format!("\"{LEAKED}\"").as_bytes()));
        assert!(kept.text.contains(&format!("[redacted sha256:{hashed}]")));
        let recorded = Policy::from_text(&kept.text).expect("still a valid policy");
        assert_eq!(
            recorded.rules_for("any", ["t", "t"]),
            ["leaked", "leaked-many", "tokenless"]
        );
        assert!(kept.text.contains(r#""present": false"#), "{}", kept.text);
    }
}
