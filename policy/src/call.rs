//! What the engine decides on and what it answers: a call as the gateway knows it when it decides
//! (or as the trail recorded it, for a replay), and the ruling.
//!
//! These types are the engine's vocabulary, so they live with it: the gateway builds a
//! [`CallInfo`] from live traffic, the query service's replay from a recorded event.

use crate::pin::Fingerprint;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use verdict_proto::pb::{DecisionKind, RiskClass};

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

    /// The risk class an event recorded; `None` when it recorded none.
    pub fn from_class(class: RiskClass) -> Option<Self> {
        match class {
            RiskClass::Read => Some(Self::Read),
            RiskClass::Write => Some(Self::Write),
            RiskClass::Destructive => Some(Self::Destructive),
            RiskClass::Unspecified => None,
        }
    }
}

/// What the gateway knows about a call when it decides.
#[derive(Debug)]
pub struct CallInfo<'a> {
    pub agent: &'a str,
    pub session: &'a str,
    pub upstream: &'a str,
    /// The tool's name at its upstream.
    pub tool: &'a str,
    /// The name the agent sees (prefixed where names collide).
    pub exposed: &'a str,
    /// The tool's risk class as its definition implies (see [`crate::risk`]).
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

impl Ruling {
    /// The decision an event records for this ruling.
    pub fn kind(&self) -> DecisionKind {
        match self {
            Self::Allow => DecisionKind::Allow,
            Self::Deny => DecisionKind::Deny,
            Self::Hide => DecisionKind::Hide,
            Self::RateLimited { .. } => DecisionKind::RateLimited,
            Self::RequireApproval { .. } => DecisionKind::ApprovalRequested,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub ruling: Ruling,
    pub rule_id: String,
    pub reason: String,
    pub risk: RiskName,
    pub policy_sha256: [u8; 32],
}
