//! The decision hook: the one function every tool call passes before it is forwarded.
//!
//! [`crate::policy::PolicyDecider`] implements [`Decider`] over `policy.json`; without a policy the
//! gateway uses [`AllowAll`]. A decision names its rule, reason, the tool's risk class and the
//! policy's hash, so the agent and the audit trail can say why.

use crate::mcp::ClientInfo;
use crate::policy::pin::Fingerprint;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use verdict_proto::pb::RiskClass;

/// A tool's risk class, as classified from its definition and named in policy files (`read`,
/// `write`, `destructive`; ordered by severity, so the most severe of several is the `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskName {
    Read,
    Write,
    Destructive,
}

impl RiskName {
    /// The contract's risk class, under which events store it (and name it: see
    /// `verdict_proto::Label`).
    pub fn class(self) -> RiskClass {
        match self {
            Self::Read => RiskClass::Read,
            Self::Write => RiskClass::Write,
            Self::Destructive => RiskClass::Destructive,
        }
    }
}

/// What the gateway knows about a call when it decides.
#[derive(Debug)]
pub struct CallInfo<'a> {
    pub agent: &'a str,
    pub session: &'a str,
    pub client: &'a ClientInfo,
    pub upstream: &'a str,
    /// The tool's name at its upstream.
    pub tool: &'a str,
    /// The name the agent sees (prefixed where names collide).
    pub exposed: &'a str,
    /// The tool's risk class as its definition implies (see [`crate::policy::risk`]).
    pub risk: RiskName,
    pub arguments: &'a Value,
    /// The tool's definition as listed now, for pinning; `None` where no upstream listed it
    /// (a what-if without a catalog).
    pub fingerprint: Option<&'a Fingerprint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ruling {
    Allow,
    Deny,
    /// The tool is hidden: refused exactly like a tool that does not exist.
    Hide,
    RateLimited {
        retry_after: Duration,
    },
    RequireApproval {
        timeout: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub ruling: Ruling,
    pub rule_id: String,
    pub reason: String,
    pub risk: RiskName,
    pub policy_sha256: [u8; 32],
}

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
