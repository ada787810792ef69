//! The decision hook: the one function every tool call passes before it is forwarded.
//!
//! The policy engine implements [`Decider`]; until a policy is configured the gateway uses
//! [`AllowAll`]. A decision names its rule and reason so the agent and the audit trail can say
//! why.

use crate::mcp::ClientInfo;
use serde_json::Value;

/// What the gateway knows about a call when it decides.
#[derive(Debug)]
pub struct CallInfo<'a> {
    pub agent: &'a str,
    pub session: &'a str,
    pub client: &'a ClientInfo,
    pub upstream: &'a str,
    /// The tool's name at its upstream (not the possibly prefixed name the agent sees).
    pub tool: &'a str,
    pub arguments: &'a Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub rule_id: String,
    pub reason: String,
}

pub trait Decider: Send + Sync {
    fn decide(&self, call: &CallInfo<'_>) -> Decision;
}

/// Allows every call; the decision still names itself so that it is visible where it applies.
#[derive(Debug, Default)]
pub struct AllowAll;

impl Decider for AllowAll {
    fn decide(&self, _call: &CallInfo<'_>) -> Decision {
        Decision {
            outcome: Outcome::Allow,
            rule_id: "no-policy".into(),
            reason: "no policy configured".into(),
        }
    }
}
