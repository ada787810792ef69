//! The compiled policy and the one decision procedure the gateway and every replay run.
//!
//! Rules are ordered and the first match wins; `default` applies otherwise; `hide` is checked
//! before any rule; a pin breach only makes a decision stricter; a rate limit counts the calls an
//! allow rule lets through, per (agent, session, rule) — all in [`Policy::decide`].
//!
//! A recorded call may lack some arguments (stored as a hash only, or redacted): then
//! [`Policy::possible_verdicts`] lists every verdict the call could have, walking the same rules
//! with argument conditions on unknown values treated as "maybe" — a replay never guesses.
//!
//! Evaluation cost stays flat as rules grow: the rules whose tool and server patterns can match a
//! given (server, tool) are computed once per pair and cached, so a decision only looks at those.

use crate::call::{CallInfo, Decision, RiskName, Ruling};
use crate::file::{
    self, ActionName, ArgumentMatch, DefaultAction, Pattern, PolicyError, PolicyFile,
};
use crate::pin::{self, LockError, LockFile, PinAction, PinRules};
use crate::rate::RateLimiter;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The rule id of decisions made by tool pinning (see [`pin`]).
pub const PIN_RULE: &str = "pin";
/// How long a call held by a `hold` pin waits for a human.
const PIN_HOLD_SECS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{source}")]
    Invalid { path: PathBuf, source: PolicyError },
    #[error(transparent)]
    Lock(#[from] LockError),
}

#[derive(Debug, Clone)]
pub(crate) enum Action {
    Allow { rate_limit: Option<RateLimit> },
    Deny { reason: String },
    RequireApproval { timeout: Duration },
}

#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) id: String,
    /// Line of the policy file where the rule starts.
    pub(crate) line: usize,
    pub(crate) tools: Option<Vec<Pattern>>,
    pub(crate) servers: Option<Vec<Pattern>>,
    pub(crate) risks: Option<Vec<RiskName>>,
    pub(crate) agents: Option<Vec<Pattern>>,
    pub(crate) arguments: Vec<(String, ArgumentMatch)>,
    pub(crate) action: Action,
}

/// Rule indexes that can apply to a (server, tool, exposed name), in rule order.
type Candidates = RwLock<HashMap<(String, String, String), Arc<[usize]>>>;

/// A validated, compiled policy.
#[derive(Debug)]
pub struct Policy {
    /// SHA-256 of the policy file's bytes; events carry it.
    pub sha256: [u8; 32],
    /// The text `sha256` was computed over (the gateway records it, see [`crate::record`]).
    text: Arc<str>,
    default: DefaultAction,
    hide: Vec<Pattern>,
    risk_overrides: HashMap<String, RiskName>,
    pub(crate) rules: Vec<Rule>,
    candidates: Candidates,
    pins: PinRules,
    /// The pinned fingerprints (the lock file beside the policy file).
    lock: LockFile,
}

/// A rule's rate limit: at most `max` calls per `window`, counted per session or per agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u32,
    pub window: Duration,
    pub per: file::RateScope,
}

/// What the policy says about one call, before rate limits are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub rule_id: String,
    pub ruling: Ruling,
    pub reason: String,
    pub rate_limit: Option<RateLimit>,
}

impl Policy {
    pub fn from_text(text: &str) -> Result<Self, PolicyError> {
        let parsed: PolicyFile = file::parse(text)?;
        let lines = file::rule_lines(text);
        let rules = parsed
            .rules
            .0
            .into_iter()
            .enumerate()
            .map(|(i, rule)| compile_rule(rule, lines.get(i).copied().unwrap_or(0)))
            .collect();
        Ok(Self {
            sha256: Sha256::digest(text.as_bytes()).into(),
            text: text.into(),
            default: parsed.default,
            hide: parsed.hide,
            risk_overrides: parsed.risk.into_iter().collect(),
            rules,
            candidates: RwLock::new(HashMap::new()),
            pins: parsed.pin,
            lock: LockFile::default(),
        })
    }

    /// This policy with the pinned fingerprints of `lock`.
    pub fn with_lock(self, lock: LockFile) -> Self {
        Self { lock, ..self }
    }

    /// The text the policy was compiled from, exactly as hashed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The pin patterns of the policy (see [`pin`]).
    pub fn pins(&self) -> &PinRules {
        &self.pins
    }

    /// The pinned fingerprints the policy was loaded with.
    pub fn lock(&self) -> &LockFile {
        &self.lock
    }

    pub fn load(path: &Path) -> Result<Self, PolicyLoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Io {
            path: path.to_owned(),
            source,
        })?;
        let policy = Self::from_text(&text).map_err(|source| PolicyLoadError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        Ok(policy.with_lock(LockFile::load(&LockFile::path_for(path))?))
    }

    /// True when `tool` (its upstream name or the name agents see) is hidden.
    pub fn hides(&self, names: &[&str]) -> bool {
        self.hide
            .iter()
            .any(|p| names.iter().any(|n| p.matcher.is_match(n)))
    }

    /// The tool's risk class: the policy's override (by its upstream name or the name agents
    /// see), else what its definition implies.
    pub fn risk_of(&self, names: [&str; 2], classified: RiskName) -> RiskName {
        names
            .iter()
            .find_map(|n| self.risk_overrides.get(*n).copied())
            .unwrap_or(classified)
    }

    /// The first matching rule's verdict, or the default.
    pub fn evaluate(&self, call: &CallInfo<'_>, risk: RiskName) -> Verdict {
        self.walk(call, risk, |_| false)
            .find_map(|(rule, fit)| (fit == Fit::Sure).then(|| rule.verdict()))
            .unwrap_or_else(|| self.default_verdict())
    }

    /// Every verdict a call could get when the arguments `unknown` names are not known (stored as
    /// a hash only, or redacted): the rules that match unless an unknown argument says otherwise,
    /// in order, up to and including the first rule (or the default) that matches whatever they
    /// hold. One verdict means the unknown arguments cannot change the outcome.
    pub fn possible_verdicts(
        &self,
        call: &CallInfo<'_>,
        risk: RiskName,
        unknown: impl Fn(&str) -> bool,
    ) -> Vec<Verdict> {
        let mut possible = Vec::new();
        for (rule, fit) in self.walk(call, risk, unknown) {
            possible.push(rule.verdict());
            if fit == Fit::Sure {
                return possible;
            }
        }
        possible.push(self.default_verdict());
        possible
    }

    /// The candidate rules that match `call`, surely or unless an unknown argument differs.
    fn walk<'p>(
        &'p self,
        call: &'p CallInfo<'_>,
        risk: RiskName,
        unknown: impl Fn(&str) -> bool + 'p,
    ) -> impl Iterator<Item = (&'p Rule, Fit)> + 'p {
        let candidates = self.candidates_for(call.upstream, [call.tool, call.exposed]);
        (0..candidates.len()).filter_map(move |i| {
            let rule = &self.rules[candidates[i]];
            rule.fit(call, risk, &unknown).map(|fit| (rule, fit))
        })
    }

    fn default_verdict(&self) -> Verdict {
        match self.default {
            DefaultAction::Allow => Verdict {
                rule_id: "default".into(),
                ruling: Ruling::Allow,
                reason: "allowed by default".into(),
                rate_limit: None,
            },
            DefaultAction::Deny => Verdict {
                rule_id: "default".into(),
                ruling: Ruling::Deny,
                reason: "no rule allows this call (default deny)".into(),
                rate_limit: None,
            },
        }
    }

    /// The gateway's decision on `call` at `now`: hide, then the rules, then the pin, then the
    /// rate limit of the rule that allowed it (counted in `rates`).
    pub fn decide(&self, call: &CallInfo<'_>, rates: &RateLimiter, now: Instant) -> Decision {
        let risk = self.risk_of([call.tool, call.exposed], call.risk);
        if let Some(hidden) = self.hidden(call, risk) {
            return hidden;
        }
        self.settle(call, self.evaluate(call, risk), rates, now, risk)
    }

    /// [`Policy::decide`] for a recorded call whose arguments named by `unknown` are not known:
    /// the decision when every rule those arguments could select decides alike, else the rules
    /// that could decide it.
    pub fn decide_partly(
        &self,
        call: &CallInfo<'_>,
        unknown: impl Fn(&str) -> bool,
        rates: &RateLimiter,
        now: Instant,
    ) -> Result<Decision, Undecidable> {
        let risk = self.risk_of([call.tool, call.exposed], call.risk);
        if let Some(hidden) = self.hidden(call, risk) {
            return Ok(hidden);
        }
        let verdict = agreed(self.possible_verdicts(call, risk, unknown))?;
        Ok(self.settle(call, verdict, rates, now, risk))
    }

    fn hidden(&self, call: &CallInfo<'_>, risk: RiskName) -> Option<Decision> {
        self.hides(&[call.tool, call.exposed])
            .then(|| self.decision(Ruling::Hide, "hide", "hidden by policy".into(), risk))
    }

    /// A verdict of the rules made final: a pin breach may make it stricter, and an allow under a
    /// rate limit is counted in `rates` at `now` (and refused past the limit).
    pub fn settle(
        &self,
        call: &CallInfo<'_>,
        mut verdict: Verdict,
        rates: &RateLimiter,
        now: Instant,
        risk: RiskName,
    ) -> Decision {
        if let Some(breach) = self.pin_breach(call) {
            match (breach.action, &verdict.ruling) {
                // A refusal by the rules stands; the pin only ever makes a decision stricter.
                (_, Ruling::Deny) => {}
                (PinAction::OnChangeDeny, _) => {
                    return self.decision(Ruling::Deny, PIN_RULE, breach.reason, risk)
                }
                (PinAction::Hold, _) => {
                    let timeout = Duration::from_secs(PIN_HOLD_SECS);
                    let ruling = Ruling::RequireApproval { timeout };
                    return self.decision(ruling, PIN_RULE, breach.reason, risk);
                }
                (PinAction::Alert, _) => {
                    verdict.reason = format!("{} (pin alert: {})", verdict.reason, breach.reason)
                }
            }
        }
        if let (Ruling::Allow, Some(limit)) = (&verdict.ruling, verdict.rate_limit) {
            if let Err(retry_after) = limit.count(call, &verdict.rule_id, rates, now) {
                let reason = limit.refusal(retry_after);
                let ruling = Ruling::RateLimited { retry_after };
                return self.decision(ruling, &verdict.rule_id, reason, risk);
            }
        }
        self.decision(verdict.ruling, &verdict.rule_id, verdict.reason, risk)
    }

    fn decision(&self, ruling: Ruling, rule_id: &str, reason: String, risk: RiskName) -> Decision {
        Decision {
            ruling,
            rule_id: rule_id.to_owned(),
            reason,
            risk,
            policy_sha256: self.sha256,
        }
    }

    /// The pin breach of the called tool, if the policy pins it and its definition is not the
    /// pinned one.
    pub fn pin_breach(&self, call: &CallInfo<'_>) -> Option<pin::Breach> {
        self.pins
            .check(&self.lock, call.upstream, call.tool, call.fingerprint?)
    }

    /// Ids of the rules that may apply to this tool (their tool and server patterns match).
    pub fn rules_for(&self, server: &str, names: [&str; 2]) -> Vec<&str> {
        self.candidates_for(server, names)
            .iter()
            .map(|&i| self.rules[i].id.as_str())
            .collect()
    }

    /// Rules whose server pattern matches and whose tool pattern matches the tool's upstream
    /// name or the (possibly prefixed) name agents see, in order; cached per tool.
    pub(crate) fn candidates_for(&self, server: &str, names: [&str; 2]) -> Arc<[usize]> {
        let key = (server.to_owned(), names[0].to_owned(), names[1].to_owned());
        if let Some(found) = self.candidates.read().expect("candidates lock").get(&key) {
            return Arc::clone(found);
        }
        let matching: Arc<[usize]> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                names.iter().any(|n| any_match(&r.tools, n)) && any_match(&r.servers, server)
            })
            .map(|(i, _)| i)
            .collect();
        self.candidates
            .write()
            .expect("candidates lock")
            .insert(key, Arc::clone(&matching));
        matching
    }
}

fn any_match(patterns: &Option<Vec<Pattern>>, value: &str) -> bool {
    patterns
        .as_ref()
        .is_none_or(|ps| ps.iter().any(|p| p.matcher.is_match(value)))
}

fn compile_rule(rule: file::RuleFile, line: usize) -> Rule {
    let action = match rule.action {
        ActionName::Allow => Action::Allow {
            rate_limit: rule.rate_limit.map(|r| RateLimit {
                max: r.max.get(),
                window: Duration::from_secs(r.window.get()),
                per: r.per,
            }),
        },
        ActionName::Deny => Action::Deny {
            reason: rule.reason.unwrap_or_else(|| "denied by policy".into()),
        },
        ActionName::RequireApproval => Action::RequireApproval {
            timeout: Duration::from_secs(rule.timeout.map_or(300, |t| t.get())),
        },
    };
    let m = rule.matcher;
    Rule {
        id: rule.id,
        line,
        tools: m.tool.map(file::OneOrMany::into_vec),
        servers: m.server.map(file::OneOrMany::into_vec),
        risks: m.risk.map(file::OneOrMany::into_vec),
        agents: m.agent.map(file::OneOrMany::into_vec),
        arguments: m.arguments.into_iter().collect(),
        action,
    }
}

/// A recorded call the engine cannot re-decide: the rules (in order; `default` for the default)
/// that its unknown arguments could select, which decide differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecidable {
    pub rule_ids: Vec<String>,
}

/// The one verdict all `possible` verdicts amount to: the same ruling and rate limit (and, under
/// a rate limit, the same rule, whose window counts the call). Rule ids that differ otherwise
/// are joined with " | ", since which of them matched is unknown.
fn agreed(possible: Vec<Verdict>) -> Result<Verdict, Undecidable> {
    let Some(first) = possible.first() else {
        return Err(Undecidable {
            rule_ids: Vec::new(),
        });
    };
    let alike = |v: &Verdict| {
        v.ruling == first.ruling
            && v.rate_limit == first.rate_limit
            && (v.rate_limit.is_none() || v.rule_id == first.rule_id)
    };
    let mut rule_ids: Vec<String> = possible.iter().map(|v| v.rule_id.clone()).collect();
    rule_ids.dedup();
    if !possible.iter().all(alike) {
        return Err(Undecidable { rule_ids });
    }
    Ok(Verdict {
        rule_id: rule_ids.join(" | "),
        ..first.clone()
    })
}

/// How a rule fits a call: surely, or only if the arguments not known match too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    Sure,
    Maybe,
}

impl RateLimit {
    /// Counts one call allowed by rule `rule_id`; `Err(retry_after)` past the limit.
    fn count(
        &self,
        call: &CallInfo<'_>,
        rule_id: &str,
        rates: &RateLimiter,
        now: Instant,
    ) -> Result<(), Duration> {
        let session = match self.per {
            file::RateScope::Session => call.session,
            file::RateScope::Agent => "",
        };
        rates.check((call.agent, session, rule_id), self.max, self.window, now)
    }

    /// What a call refused by this limit reads.
    fn refusal(&self, retry_after: Duration) -> String {
        let scope = match self.per {
            file::RateScope::Session => "session",
            file::RateScope::Agent => "agent",
        };
        format!(
            "at most {} calls per {} s per {scope}; retry in {:.1} s",
            self.max,
            self.window.as_secs(),
            retry_after.as_secs_f64()
        )
    }
}

impl Rule {
    /// Whether the rule matches `call`; `Maybe` when only arguments named by `unknown` could
    /// make it not match.
    fn fit(
        &self,
        call: &CallInfo<'_>,
        risk: RiskName,
        unknown: impl Fn(&str) -> bool,
    ) -> Option<Fit> {
        if !self.risks.as_ref().is_none_or(|rs| rs.contains(&risk))
            || !any_match(&self.agents, call.agent)
        {
            return None;
        }
        let elements = self.array_elements();
        let mut fit = Fit::Sure;
        for (key, m) in &self.arguments {
            if unknown(key) {
                fit = Fit::Maybe;
            } else if !argument_matches(call.arguments.get(key), m, elements) {
                return None;
            }
        }
        Some(fit)
    }

    /// How an array argument meets a rule on one value: a refusing rule (deny, approval) applies
    /// when any element matches, so `["delete"]` is caught; an allow rule only when every element
    /// does, so `["list_sessions", "delete_session"]` is not let through by a rule on
    /// `list_sessions`.
    fn array_elements(&self) -> Elements {
        match self.action {
            Action::Allow { .. } => Elements::Every,
            Action::Deny { .. } | Action::RequireApproval { .. } => Elements::Any,
        }
    }

    fn verdict(&self) -> Verdict {
        let (ruling, reason, rate_limit) = match &self.action {
            Action::Allow { rate_limit } => {
                (Ruling::Allow, "allowed by rule".to_owned(), *rate_limit)
            }
            Action::Deny { reason } => (Ruling::Deny, reason.clone(), None),
            Action::RequireApproval { timeout } => (
                Ruling::RequireApproval { timeout: *timeout },
                "approval required".to_owned(),
                None,
            ),
        };
        Verdict {
            rule_id: self.id.clone(),
            ruling,
            reason,
            rate_limit,
        }
    }
}

/// Which elements of an array argument must match a rule written for one value.
#[derive(Debug, Clone, Copy)]
enum Elements {
    Any,
    Every,
}

fn argument_matches(value: Option<&Value>, m: &ArgumentMatch, elements: Elements) -> bool {
    match (m, value) {
        (ArgumentMatch::Present(want), v) => v.is_some_and(|v| !v.is_null()) == *want,
        (_, None) => false,
        (ArgumentMatch::Exact(expected), Some(v)) => v == expected,
        (_, Some(v)) if value_matches(v, m) => true,
        (_, Some(Value::Array(items))) => match elements {
            Elements::Any => items.iter().any(|item| value_matches(item, m)),
            Elements::Every => !items.is_empty() && items.iter().all(|item| value_matches(item, m)),
        },
        (_, Some(_)) => false,
    }
}

/// One value against an equality, `one_of` or glob match, strings normalised.
fn value_matches(value: &Value, m: &ArgumentMatch) -> bool {
    match m {
        ArgumentMatch::Equals(expected) => same_value(value, expected),
        ArgumentMatch::OneOf(options) => options.iter().any(|o| same_value(value, o)),
        ArgumentMatch::Glob(p) => value.as_str().is_some_and(|s| p.matcher.is_match(s.trim())),
        ArgumentMatch::Present(_) | ArgumentMatch::Exact(_) => false,
    }
}

/// JSON equality in which strings (at any depth) compare trimmed and case-folded.
pub(crate) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(a), Value::String(b)) => normalized(a) == normalized(b),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|other| same_value(v, other)))
        }
        _ => a == b,
    }
}

pub(crate) fn normalized(text: &str) -> String {
    text.trim().to_lowercase()
}
