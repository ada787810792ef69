//! Identity from bearer credentials: agents' API keys and approvers' admin tokens.
//!
//! Config holds only SHA-256 digests of keys. A presented key is hashed and compared with every
//! configured digest in constant time (no early exit), so neither timing nor logs reveal keys.

use crate::config::Credential;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("{id}: api_key_sha256 must be 64 hex characters")]
    BadDigest { id: String },
    #[error("{first} and {second} have the same key; each needs its own")]
    SharedKey { first: String, second: String },
}

#[derive(Debug, Clone)]
pub struct ApiKeys {
    agents: Vec<(String, [u8; 32])>,
}

impl ApiKeys {
    pub fn from_config(agents: &[Credential]) -> Result<Self, AuthConfigError> {
        let agents = agents
            .iter()
            .map(|a| {
                let digest = hex::decode(&a.api_key_sha256)
                    .ok()
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                    .ok_or_else(|| AuthConfigError::BadDigest { id: a.id.clone() })?;
                Ok((a.id.clone(), digest))
            })
            .collect::<Result<Vec<(String, [u8; 32])>, _>>()?;
        for (i, (id, digest)) in agents.iter().enumerate() {
            if let Some((other, _)) = agents[..i].iter().find(|(_, d)| d == digest) {
                return Err(AuthConfigError::SharedKey {
                    first: other.clone(),
                    second: id.clone(),
                });
            }
        }
        Ok(Self { agents })
    }

    /// The agent id for an `Authorization` header value, if it carries a known bearer key.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<&str> {
        let key = authorization?.strip_prefix("Bearer ")?.trim();
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for (id, expected) in &self.agents {
            if bool::from(expected.ct_eq(&digest)) {
                found = Some(id.as_str());
            }
        }
        found
    }
}

/// Lowercase hex SHA-256 of an API key, as written in the config.
pub fn key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::from_config(&[
            Credential {
                id: "a".into(),
                api_key_sha256: key_digest("key-a"),
            },
            Credential {
                id: "b".into(),
                api_key_sha256: key_digest("key-b"),
            },
        ])
        .unwrap()
    }

    #[test]
    fn maps_bearer_keys_to_agents() {
        let keys = keys();
        assert_eq!(keys.authenticate(Some("Bearer key-b")), Some("b"));
        assert_eq!(keys.authenticate(Some("Bearer key-c")), None);
        assert_eq!(keys.authenticate(Some("key-a")), None, "scheme required");
        assert_eq!(keys.authenticate(None), None);
    }

    #[test]
    fn rejects_two_agents_with_one_key() {
        let shared = [
            Credential {
                id: "a".into(),
                api_key_sha256: key_digest("same"),
            },
            Credential {
                id: "b".into(),
                api_key_sha256: key_digest("same"),
            },
        ];
        assert!(matches!(
            ApiKeys::from_config(&shared),
            Err(AuthConfigError::SharedKey { .. })
        ));
    }

    #[test]
    fn rejects_malformed_digests() {
        let bad = [Credential {
            id: "x".into(),
            api_key_sha256: "abc".into(),
        }];
        assert!(ApiKeys::from_config(&bad).is_err());
    }
}
