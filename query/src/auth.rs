//! Bearer tokens of query clients.
//!
//! The config holds only SHA-256 digests, compared in constant time (`verdict_service::credentials`,
//! the scheme of every Verdict credential), so neither timing nor logs reveal tokens. Query tokens are a separate list from agent
//! keys: an agent key never opens the audit trail.

use crate::config::TokenConfig;
use tonic::{Request, Status};
pub use verdict_service::credentials::CredentialError as AuthConfigError;
use verdict_service::credentials::Credentials;

#[derive(Debug, Clone)]
pub struct Tokens {
    credentials: Credentials,
}

impl Tokens {
    pub fn from_config(tokens: &[TokenConfig]) -> Result<Self, AuthConfigError> {
        Ok(Self {
            credentials: Credentials::from_config(tokens)?,
        })
    }

    /// The tonic interceptor: `UNAUTHENTICATED` unless the request carries a known token.
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.credentials.authenticate(header) {
            Some(id) => {
                tracing::debug!(client = id, "query authenticated");
                Ok(request)
            }
            None => Err(Status::unauthenticated(
                "a valid query token is required (authorization: Bearer <token>)",
            )),
        }
    }
}
