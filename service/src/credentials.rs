//! Bearer credentials: agents' API keys, approvers' admin tokens, query clients' tokens.
//!
//! Configs hold only the SHA-256 of each secret. A presented secret is hashed and compared with
//! every configured digest in constant time (no early exit), so neither timing nor logs reveal
//! secrets. Each service keeps its own list, so no credential opens more than one door.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One configured credential: its holder's id and the digest of its secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub id: String,
    /// Lowercase hex SHA-256 of the secret; the secret itself is never stored.
    #[serde(alias = "api_key_sha256")]
    pub sha256: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("{id}: the sha256 digest must be 64 hex characters")]
    BadDigest { id: String },
    #[error("{first} and {second} have the same secret; each needs its own")]
    Shared { first: String, second: String },
}

#[derive(Debug, Clone, Default)]
pub struct Credentials {
    digests: Vec<(String, [u8; 32])>,
}

impl Credentials {
    pub fn from_config(credentials: &[Credential]) -> Result<Self, CredentialError> {
        let digests = credentials
            .iter()
            .map(|c| {
                let digest = hex::decode(&c.sha256)
                    .ok()
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                    .ok_or_else(|| CredentialError::BadDigest { id: c.id.clone() })?;
                Ok((c.id.clone(), digest))
            })
            .collect::<Result<Vec<(String, [u8; 32])>, _>>()?;
        for (i, (id, digest)) in digests.iter().enumerate() {
            if let Some((other, _)) = digests[..i].iter().find(|(_, d)| d == digest) {
                return Err(CredentialError::Shared {
                    first: other.clone(),
                    second: id.clone(),
                });
            }
        }
        Ok(Self { digests })
    }

    /// The holder's id for an `Authorization` value `Bearer <secret>` with a known secret.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<&str> {
        let secret = authorization?.strip_prefix("Bearer ")?.trim();
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found = None;
        for (id, expected) in &self.digests {
            if bool::from(expected.ct_eq(&presented)) {
                found = Some(id.as_str());
            }
        }
        found
    }
}

/// Lowercase hex SHA-256 of a secret, as written in configs.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(id: &str, secret: &str) -> Credential {
        Credential {
            id: id.into(),
            sha256: digest(secret),
        }
    }

    #[test]
    fn maps_bearer_secrets_to_holders() {
        let credentials =
            Credentials::from_config(&[credential("a", "key-a"), credential("b", "key-b")])
                .unwrap();
        assert_eq!(credentials.authenticate(Some("Bearer key-b")), Some("b"));
        assert_eq!(credentials.authenticate(Some("Bearer key-c")), None);
        assert_eq!(
            credentials.authenticate(Some("key-a")),
            None,
            "scheme required"
        );
        assert_eq!(credentials.authenticate(Some("Basic key-a")), None);
        assert_eq!(credentials.authenticate(None), None);
    }

    #[test]
    fn rejects_shared_and_malformed_digests() {
        assert_eq!(
            Credentials::from_config(&[credential("a", "x"), credential("b", "x")]).unwrap_err(),
            CredentialError::Shared {
                first: "a".into(),
                second: "b".into()
            }
        );
        let bad = Credential {
            id: "a".into(),
            sha256: "abc".into(),
        };
        assert!(matches!(
            Credentials::from_config(&[bad]),
            Err(CredentialError::BadDigest { .. })
        ));
    }

    #[test]
    fn both_field_names_are_accepted() {
        let c: Credential = serde_json::from_str(r#"{"id":"a","api_key_sha256":"00"}"#).unwrap();
        assert_eq!(c.sha256, "00");
    }
}
