//! Bearer tokens of query clients.
//!
//! The config holds only SHA-256 digests. A presented token is hashed and compared with every
//! configured digest in constant time (no early exit), the same scheme the gateway uses for agent
//! keys, so neither timing nor logs reveal tokens. Query tokens are a separate list from agent
//! keys: an agent key never opens the audit trail.

use crate::config::TokenConfig;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("token {id}: sha256 must be 64 hex characters")]
    BadDigest { id: String },
    #[error("tokens {first} and {second} have the same digest; each client needs its own token")]
    Shared { first: String, second: String },
}

/// The id of the client a request authenticated as, put into the request's extensions.
#[derive(Debug, Clone)]
pub struct ClientId(pub String);

#[derive(Debug, Clone)]
pub struct Tokens {
    tokens: Vec<(String, [u8; 32])>,
}

impl Tokens {
    pub fn from_config(tokens: &[TokenConfig]) -> Result<Self, AuthConfigError> {
        let tokens = tokens
            .iter()
            .map(|t| {
                let digest = hex::decode(&t.sha256)
                    .ok()
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                    .ok_or_else(|| AuthConfigError::BadDigest { id: t.id.clone() })?;
                Ok((t.id.clone(), digest))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (i, (id, digest)) in tokens.iter().enumerate() {
            if let Some((other, _)) = tokens[..i].iter().find(|(_, d)| d == digest) {
                return Err(AuthConfigError::Shared {
                    first: other.clone(),
                    second: id.clone(),
                });
            }
        }
        Ok(Self { tokens })
    }

    /// The client id for an `authorization` metadata value carrying a known bearer token.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<&str> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (id, expected) in &self.tokens {
            if bool::from(expected.ct_eq(&digest)) {
                found = Some(id.as_str());
            }
        }
        found
    }

    /// The tonic interceptor: `UNAUTHENTICATED` unless the request carries a known token.
    pub fn check(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.authenticate(header) {
            Some(id) => {
                let id = ClientId(id.to_owned());
                request.extensions_mut().insert(id);
                Ok(request)
            }
            None => Err(Status::unauthenticated(
                "a valid query token is required (authorization: Bearer <token>)",
            )),
        }
    }
}

/// Lowercase hex SHA-256 of a token, as written in the config.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::from_config(&[
            TokenConfig {
                id: "siem".into(),
                sha256: token_digest("t-1"),
            },
            TokenConfig {
                id: "ops".into(),
                sha256: token_digest("t-2"),
            },
        ])
        .unwrap()
    }

    #[test]
    fn maps_bearer_tokens_to_clients() {
        let tokens = tokens();
        assert_eq!(tokens.authenticate(Some("Bearer t-2")), Some("ops"));
        assert_eq!(tokens.authenticate(Some("Bearer t-3")), None);
        assert_eq!(tokens.authenticate(Some("t-1")), None, "scheme required");
        assert_eq!(tokens.authenticate(None), None);
    }

    #[test]
    fn rejects_shared_and_malformed_digests() {
        let shared = [
            TokenConfig {
                id: "a".into(),
                sha256: token_digest("x"),
            },
            TokenConfig {
                id: "b".into(),
                sha256: token_digest("x"),
            },
        ];
        assert!(matches!(
            Tokens::from_config(&shared),
            Err(AuthConfigError::Shared { .. })
        ));
        let bad = [TokenConfig {
            id: "a".into(),
            sha256: "abc".into(),
        }];
        assert!(Tokens::from_config(&bad).is_err());
    }
}
