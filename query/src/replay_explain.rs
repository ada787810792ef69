//! The policy in force for a recorded call, found in the trail itself.
//!
//! A decision carries only its policy's SHA-256; the gateway records the policy's text in a
//! `PolicyLoaded` event before deciding anything under it (at start and on every reload). The
//! policy in force for a decision is therefore the newest `PolicyLoaded` of the same chain before
//! it whose hash is the one the decision carries (a call decided while a reload was being recorded
//! still carries the previous hash, so the newest load alone is not enough). Only what was signed
//! counts: the rows are selected by their columns, but each candidate's envelope is verified with
//! the trusted keys and its hash read from the signed body; someone with write access to
//! ClickHouse can hide a policy load (then it is "not found"), not substitute one.

use crate::api::QueryError;
use crate::store::Store;
use verdict_policy::Policy;
use verdict_proto::pb::{self, event_body::Kind};
use verdict_proto::verify::EventStatus;
use verdict_proto::{ChainVerifier, SignedEvent, TrustedKeys};
use verdict_schema::POLICY_LOADED;

/// The policy in force for a decision, as recorded.
pub struct InForce {
    pub loaded: pb::PolicyLoaded,
    /// Where it was recorded, as "chain_id:seq".
    pub at: String,
    pub policy: Policy,
}

/// The policy in force when `event` (a verified decision) was decided.
pub async fn policy_in_force(
    store: &Store,
    keys: &TrustedKeys,
    event: &SignedEvent,
) -> Result<InForce, QueryError> {
    let wanted = match event.decode_body().map(|body| body.kind) {
        Ok(Some(Kind::Decision(decision))) => decision.policy_sha256,
        _ => return Err(QueryError::Invalid("the event records no decision".into())),
    };
    let call = format!("{}:{}", event.chain_id, event.seq);
    if wanted.iter().all(|&b| b == 0) {
        return Err(QueryError::NotFound(format!(
            "{call} was decided without a policy (rule no-policy)"
        )));
    }
    let envelopes = store
        .kind_envelopes(&event.chain_id, POLICY_LOADED, (0, event.seq))
        .await?;
    let loaded = envelopes
        .iter()
        .rev()
        .filter_map(|envelope| verified_load(keys, envelope))
        .find(|(_, loaded)| loaded.policy_sha256 == wanted);
    let Some((at, loaded)) = loaded else {
        return Err(QueryError::NotFound(format!(
            "the policy in force at {call} (sha256 {}) is not in the stored trail",
            hex::encode(&wanted)
        )));
    };
    let policy = Policy::from_text(&loaded.policy_text).map_err(|e| {
        QueryError::Invalid(format!("the policy recorded at {at} does not parse: {e}"))
    })?;
    Ok(InForce { loaded, at, policy })
}

/// The `PolicyLoaded` an envelope holds, with its position, if it verifies.
fn verified_load(keys: &TrustedKeys, envelope: &[u8]) -> Option<(String, pb::PolicyLoaded)> {
    let event = SignedEvent::decode(envelope).ok()?;
    if ChainVerifier::new(keys.clone()).verify(&event).status == EventStatus::Untrusted {
        return None;
    }
    match event.decode_body().ok()?.kind? {
        Kind::PolicyLoaded(loaded) => Some((format!("{}:{}", event.chain_id, event.seq), loaded)),
        _ => None,
    }
}
