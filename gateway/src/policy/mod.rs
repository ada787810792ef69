//! The policy engine: what an agent may call.
//!
//! [`file`] parses `policy.json`; [`Policy`] is its compiled form; [`PolicyDecider`] is the
//! gateway's [`Decider`] over the current policy, with rate limits ([`rate`]) and reload on file
//! change or SIGHUP (an invalid new file is logged and the old policy stays). Rules are ordered
//! and the first match wins; `default` applies otherwise; `hide` is checked before any rule.
//!
//! Evaluation cost stays flat as rules grow: the rules whose tool and server patterns can match a
//! given (server, tool) are computed once per pair and cached, so a decision only looks at those.

pub mod file;
pub mod pin;
pub mod rate;
pub mod risk;
pub mod schema_check;

use crate::decision::RiskName;
use crate::decision::{CallInfo, Decider, Decision, Ruling};
use file::{ActionName, ArgumentMatch, DefaultAction, Pattern, PolicyError, PolicyFile};
use pin::{Fingerprint, LockError, LockFile, PinAction, PinRules};
use rate::RateLimiter;
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

/// How often the policy file's modification time is checked.
const RELOAD_POLL: Duration = Duration::from_secs(1);

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
enum Action {
    Allow { rate_limit: Option<RateLimit> },
    Deny { reason: String },
    RequireApproval { timeout: Duration },
}

#[derive(Debug)]
struct Rule {
    id: String,
    /// Line of the policy file where the rule starts.
    line: usize,
    tools: Option<Vec<Pattern>>,
    servers: Option<Vec<Pattern>>,
    risks: Option<Vec<RiskName>>,
    agents: Option<Vec<Pattern>>,
    arguments: Vec<(String, ArgumentMatch)>,
    action: Action,
}

/// Rule indexes that can apply to a (server, tool, exposed name), in rule order.
type Candidates = RwLock<HashMap<(String, String, String), Arc<[usize]>>>;

/// A validated, compiled policy.
#[derive(Debug)]
pub struct Policy {
    /// SHA-256 of the policy file's bytes; events carry it.
    pub sha256: [u8; 32],
    default: DefaultAction,
    hide: Vec<Pattern>,
    risk_overrides: HashMap<String, RiskName>,
    rules: Vec<Rule>,
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
        for &index in self
            .candidates_for(call.upstream, [call.tool, call.exposed])
            .iter()
        {
            let rule = &self.rules[index];
            if rule.matches(call, risk) {
                return rule.verdict();
            }
        }
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
    fn candidates_for(&self, server: &str, names: [&str; 2]) -> Arc<[usize]> {
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

impl Rule {
    fn matches(&self, call: &CallInfo<'_>, risk: RiskName) -> bool {
        let elements = self.array_elements();
        self.risks.as_ref().is_none_or(|rs| rs.contains(&risk))
            && any_match(&self.agents, call.agent)
            && self
                .arguments
                .iter()
                .all(|(key, m)| argument_matches(call.arguments.get(key), m, elements))
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
fn same_value(a: &Value, b: &Value) -> bool {
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

fn normalized(text: &str) -> String {
    text.trim().to_lowercase()
}

/// The gateway's decider over a policy file that may change while the gateway runs.
#[derive(Debug)]
pub struct PolicyDecider {
    path: PathBuf,
    current: RwLock<Arc<Policy>>,
    /// SHA-256 of the file content last examined, valid or not: a change is a new hash, so a
    /// half-written file followed by the finished one within the same second is still seen.
    examined: std::sync::Mutex<Option<[u8; 32]>>,
    rates: RateLimiter,
}

impl PolicyDecider {
    pub fn load(path: &Path) -> Result<Self, PolicyLoadError> {
        let policy = Policy::load(path)?;
        let decider = Self {
            path: path.to_owned(),
            examined: std::sync::Mutex::new(None),
            current: RwLock::new(Arc::new(policy)),
            rates: RateLimiter::default(),
        };
        decider.content_changed();
        Ok(decider)
    }

    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.current.read().expect("policy lock"))
    }

    /// Re-reads the file; on error the old policy stays and the error is returned.
    pub fn reload(&self) -> Result<bool, PolicyLoadError> {
        let policy = Policy::load(&self.path)?;
        let mut current = self.current.write().expect("policy lock");
        let changed = current.sha256 != policy.sha256 || current.lock != policy.lock;
        *current = Arc::new(policy);
        Ok(changed)
    }

    /// True when the content of the policy file or its lock file differs from what was last
    /// examined (and notes it).
    fn content_changed(&self) -> bool {
        let hash = std::fs::read(&self.path).ok().map(|mut bytes| {
            bytes.extend(std::fs::read(LockFile::path_for(&self.path)).unwrap_or_default());
            Sha256::digest(&bytes).into()
        });
        let mut examined = self.examined.lock().expect("examined lock");
        let changed = *examined != hash;
        *examined = hash;
        changed
    }

    /// Reloads on SIGHUP and whenever the file's content changes (checked every second).
    pub fn watch(self: Arc<Self>, on_change: impl Fn() + Send + 'static) {
        tokio::spawn(async move {
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .expect("SIGHUP handler");
            loop {
                let signalled = tokio::select! {
                    _ = hangup.recv() => true,
                    _ = tokio::time::sleep(RELOAD_POLL) => false,
                };
                if !self.content_changed() && !signalled {
                    continue;
                }
                match self.reload() {
                    Ok(true) => {
                        tracing::info!(path = %self.path.display(), policy_sha256 = %hex::encode(self.policy().sha256), pinned = self.policy().lock.tools.len(), "policy reloaded");
                        on_change();
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%error, "invalid policy; keeping the previous one")
                    }
                }
            }
        });
    }
}

impl Decider for PolicyDecider {
    fn decide(&self, call: &CallInfo<'_>) -> Decision {
        let policy = self.policy();
        let risk = policy.risk_of([call.tool, call.exposed], call.risk);
        let decided = |ruling, rule_id: &str, reason: String| Decision {
            ruling,
            rule_id: rule_id.to_owned(),
            reason,
            risk,
            policy_sha256: policy.sha256,
        };
        if policy.hides(&[call.tool, call.exposed]) {
            return decided(Ruling::Hide, "hide", "hidden by policy".into());
        }
        let mut verdict = policy.evaluate(call, risk);
        if let Some(breach) = policy.pin_breach(call) {
            match (breach.action, &verdict.ruling) {
                // A refusal by the rules stands; the pin only ever makes a decision stricter.
                (_, Ruling::Deny) => {}
                (PinAction::OnChangeDeny, _) => {
                    return decided(Ruling::Deny, PIN_RULE, breach.reason)
                }
                (PinAction::Hold, _) => {
                    let timeout = Duration::from_secs(PIN_HOLD_SECS);
                    return decided(Ruling::RequireApproval { timeout }, PIN_RULE, breach.reason);
                }
                (PinAction::Alert, _) => {
                    verdict.reason = format!("{} (pin alert: {})", verdict.reason, breach.reason)
                }
            }
        }
        if let (Ruling::Allow, Some(limit)) = (&verdict.ruling, verdict.rate_limit) {
            let (session, scope) = match limit.per {
                file::RateScope::Session => (call.session, "session"),
                file::RateScope::Agent => ("", "agent"),
            };
            let key = (call.agent, session, verdict.rule_id.as_str());
            if let Err(retry_after) = self
                .rates
                .check(key, limit.max, limit.window, Instant::now())
            {
                let reason = format!(
                    "at most {} calls per {} s per {scope}; retry in {:.1} s",
                    limit.max,
                    limit.window.as_secs(),
                    retry_after.as_secs_f64()
                );
                return decided(
                    Ruling::RateLimited { retry_after },
                    &verdict.rule_id,
                    reason,
                );
            }
        }
        decided(verdict.ruling, &verdict.rule_id, verdict.reason)
    }

    fn hides(&self, tool: &str, exposed: &str) -> bool {
        self.policy().hides(&[tool, exposed])
    }

    fn pinned(&self, upstream: &str, tool: &str) -> Option<Fingerprint> {
        let policy = self.policy();
        policy
            .pins
            .pins(upstream, tool)
            .then(|| policy.lock.get(upstream, tool).cloned())
            .flatten()
    }
}

#[cfg(test)]
mod tests;
