//! The decision hook: the one function every tool call passes before it is forwarded.
//!
//! [`crate::policy::PolicyDecider`] implements [`Decider`] over `policy.json` with the engine of
//! `verdict_policy`, whose call and decision types are re-exported here; without a policy the
//! gateway uses [`AllowAll`]. A decision names its rule, reason, the tool's risk class and the
//! policy's hash, so the agent and the audit trail can say why.

use verdict_policy::pin::Fingerprint;
pub use verdict_policy::{CallInfo, Decision, RiskName, Ruling};

pub trait Decider: Send + Sync {
    fn decide(&self, call: &CallInfo<'_>) -> Decision;

    /// Whether `tools/list` omits this tool.
    fn hides(&self, _tool: &str, _exposed: &str) -> bool {
        false
    }

    /// The fingerprint pinned for `tool` at `upstream`, if the policy pins it.
    fn pinned(&self, _upstream: &str, _tool: &str) -> Option<Fingerprint> {
        None
    }
}

/// Allows every call (no policy configured); the decision names itself so it is visible.
#[derive(Debug, Default)]
pub struct AllowAll;

impl Decider for AllowAll {
    fn decide(&self, call: &CallInfo<'_>) -> Decision {
        Decision {
            ruling: Ruling::Allow,
            rule_id: "no-policy".into(),
            reason: "no policy configured".into(),
            risk: call.risk,
            policy_sha256: [0; 32],
        }
    }
}

/// A shared decider (the gateway and the reload task both hold the policy decider).
impl<D: Decider + ?Sized> Decider for std::sync::Arc<D> {
    fn decide(&self, call: &CallInfo<'_>) -> Decision {
        (**self).decide(call)
    }

    fn hides(&self, tool: &str, exposed: &str) -> bool {
        (**self).hides(tool, exposed)
    }

    fn pinned(&self, upstream: &str, tool: &str) -> Option<Fingerprint> {
        (**self).pinned(upstream, tool)
    }
}
