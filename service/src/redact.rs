//! Secret-looking argument keys and their masking: one rule for the gateway (before it signs an
//! event) and the forwarder (before anything leaves for a SIEM), so what counts as a secret never
//! differs between what is stored and what is pushed.
//!
//! A key is secret-looking when its name, lowercased and stripped of `_`, `-` and `.`, contains one
//! of the words (`api_key`, `X-Api-Key` and `githubToken` all contain `apikey`/`token`): a false
//! positive costs a masked value, a false negative leaks a secret. Its value, whatever its type,
//! becomes [`REDACTED`], at any depth.

use serde_json::Value;

/// What a masked value reads.
pub const REDACTED: &str = "[redacted]";

/// The words that mark a key as secret unless configured otherwise.
pub const DEFAULT_SENSITIVE_KEYS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "authorization",
    "privatekey",
    "cookie",
    "credential",
    "signature",
];

/// The words that mark an argument key as secret, normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SensitiveKeys(Vec<String>);

impl SensitiveKeys {
    pub fn new<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> Self {
        Self(
            words
                .into_iter()
                .map(|w| normalized_key(w.as_ref()))
                .filter(|w| !w.is_empty())
                .collect(),
        )
    }

    pub fn is_sensitive(&self, key: &str) -> bool {
        let key = normalized_key(key);
        self.0.iter().any(|word| key.contains(word))
    }

    /// `value` with the values of sensitive keys replaced, at any depth.
    pub fn redact(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, value)| {
                        let value = if self.is_sensitive(key) {
                            Value::String(REDACTED.into())
                        } else {
                            self.redact(value)
                        };
                        (key.clone(), value)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.redact(v)).collect()),
            other => other.clone(),
        }
    }
}

/// `key` lowercased without the separators people put between words (`api_key`, `api-key`).
fn normalized_key(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_secret_looking_keys_at_any_depth() {
        let keys = SensitiveKeys::new(DEFAULT_SENSITIVE_KEYS.iter().chain(&["note"]));
        let value = serde_json::json!({"X-Api-Key": "k", "a": [{"Notes": {"x": 1}}], "id": "s1"});
        let masked = keys.redact(&value);
        assert_eq!(
            masked,
            serde_json::json!({"X-Api-Key": REDACTED, "a": [{"Notes": REDACTED}], "id": "s1"})
        );
    }
}
