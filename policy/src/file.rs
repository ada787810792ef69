//! `policy.json`: the file format, parsed strictly.
//!
//! Accepts the common gateway form `{"version":"1","default":"deny","hide":["session_manager"]}`
//! and the ordered `rules` extension. Every mistake is an error naming the line and column:
//! unknown keys, wrong types, bad actions, bad globs, duplicate rule ids, a rate limit of zero,
//! comments and trailing commas (JSON has neither). Checks that need more than one field run
//! inside deserialization, so serde_json positions them too.

use crate::RiskName;
use globset::{GlobBuilder, GlobMatcher};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};

/// Largest policy file accepted.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct PolicyError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(deserialize_with = "version_one")]
    pub version: String,
    pub default: DefaultAction,
    #[serde(default)]
    pub hide: Vec<Pattern>,
    /// Per-tool risk class overrides, by tool name.
    #[serde(default)]
    pub risk: BTreeMap<String, RiskName>,
    #[serde(default)]
    pub rules: Rules,
    /// Tool pinning: `"upstream/tool glob": "on_change_deny" | "hold" | "alert"` (see [`super::pin`]).
    #[serde(default)]
    pub pin: super::pin::PinRules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionName {
    Allow,
    Deny,
    RequireApproval,
}

/// A glob compiled once, at load time. `*` and `?` do not cross `/` (use `**` for that), so an
/// argument glob like `/tmp/*` does not match `/tmp/../etc/passwd` (paths are not normalised).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    pub matcher: GlobMatcher,
}

impl Pattern {
    /// Compiles `text`; `any_case` makes it case-insensitive (argument values).
    pub(crate) fn compile(text: String, any_case: bool) -> Result<Self, String> {
        let glob = GlobBuilder::new(&text)
            .literal_separator(true)
            .case_insensitive(any_case)
            .build()
            .map_err(|e| format!("bad glob {text:?}: {}", e.kind()))?;
        Ok(Self {
            matcher: glob.compile_matcher(),
            text,
        })
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::compile(String::deserialize(deserializer)?, false).map_err(de::Error::custom)
    }
}

/// One value or a list of them. Hand-written rather than an untagged enum, so that the inner
/// error ("bad glob ...") reaches the user instead of "did not match any variant".
#[derive(Debug, Clone)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let items = match value {
            Value::Array(_) => Vec::<T>::deserialize(value),
            one => T::deserialize(one).map(|item| vec![item]),
        };
        items.map(OneOrMany).map_err(de::Error::custom)
    }
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    pub tool: Option<OneOrMany<Pattern>>,
    pub server: Option<OneOrMany<Pattern>>,
    pub risk: Option<OneOrMany<RiskName>>,
    pub agent: Option<OneOrMany<Pattern>>,
    #[serde(default)]
    pub arguments: BTreeMap<String, ArgumentMatch>,
}

/// How one argument must look: a JSON value (equality), or one of the operators.
///
/// Strings compare normalised (surrounding whitespace trimmed, case folded) unless the operator
/// is `exact`, and globs ignore case: an agent cannot slip past a rule on `"delete"` by sending
/// `"DELETE"` or `"delete "`. How array arguments are matched is the rule's business (see
/// `Rule::matches`).
#[derive(Debug, Clone)]
pub enum ArgumentMatch {
    Equals(Value),
    OneOf(Vec<Value>),
    Glob(Pattern),
    Present(bool),
    /// Exact JSON equality, case and whitespace included.
    Exact(Value),
}

impl<'de> Deserialize<'de> for ArgumentMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Operator {
            one_of: Option<Vec<Value>>,
            glob: Option<String>,
            present: Option<bool>,
            exact: Option<Value>,
        }
        let value = Value::deserialize(deserializer)?;
        if !value.is_object() {
            return Ok(ArgumentMatch::Equals(value));
        }
        let op: Operator = serde_json::from_value(value).map_err(|e| {
            de::Error::custom(format!("argument match must be a value or one of {{\"one_of\": [...]}}, {{\"glob\": \"...\"}}, {{\"present\": true}}, {{\"exact\": ...}} ({e})"))
        })?;
        match (op.one_of, op.glob, op.present, op.exact) {
            (Some(values), None, None, None) => Ok(ArgumentMatch::OneOf(values)),
            (None, Some(glob), None, None) => Pattern::compile(glob, true)
                .map(ArgumentMatch::Glob)
                .map_err(de::Error::custom),
            (None, None, Some(present), None) => Ok(ArgumentMatch::Present(present)),
            (None, None, None, Some(exact)) => Ok(ArgumentMatch::Exact(exact)),
            _ => Err(de::Error::custom(
                "an argument match takes exactly one of one_of, glob, present, exact",
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub max: NonZeroU32,
    /// Seconds.
    pub window: NonZeroU64,
    /// What one window counts: calls of one agent session (default) or of the agent across all
    /// its sessions. Per-session limits restart with each new session an agent opens; use
    /// `"agent"` for a hard limit.
    #[serde(default)]
    pub per: RateScope,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateScope {
    #[default]
    Session,
    Agent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<String>,
    #[serde(rename = "match", default)]
    matcher: MatchFile,
    action: ActionName,
    reason: Option<String>,
    /// Seconds an approval may take (require_approval only).
    timeout: Option<NonZeroU64>,
    rate_limit: Option<RateLimitFile>,
}

#[derive(Debug)]
pub struct RuleFile {
    /// Given, or `rule-N` (1-based position).
    pub id: String,
    pub matcher: MatchFile,
    pub action: ActionName,
    pub reason: Option<String>,
    pub timeout: Option<NonZeroU64>,
    pub rate_limit: Option<RateLimitFile>,
}

#[derive(Debug, Default)]
pub struct Rules(pub Vec<RuleFile>);

impl<'de> Deserialize<'de> for Rules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RulesVisitor;
        impl<'de> Visitor<'de> for RulesVisitor {
            type Value = Rules;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of rules")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Rules, A::Error> {
                let mut rules = Vec::new();
                let mut ids = HashSet::new();
                while let Some(raw) = seq.next_element::<RawRule>()? {
                    let rule = check_rule(raw, rules.len() + 1).map_err(de::Error::custom)?;
                    if !ids.insert(rule.id.clone()) {
                        return Err(de::Error::custom(format!(
                            "duplicate rule id {:?}",
                            rule.id
                        )));
                    }
                    rules.push(rule);
                }
                Ok(Rules(rules))
            }
        }
        deserializer.deserialize_seq(RulesVisitor)
    }
}

fn check_rule(raw: RawRule, position: usize) -> Result<RuleFile, String> {
    let id = raw.id.unwrap_or_else(|| format!("rule-{position}"));
    if id.is_empty() || id.len() > 128 {
        return Err("rule id must be 1..=128 characters".into());
    }
    if raw.rate_limit.is_some() && raw.action != ActionName::Allow {
        return Err(format!("rule {id}: rate_limit applies only to allow rules"));
    }
    if raw.timeout.is_some() && raw.action != ActionName::RequireApproval {
        return Err(format!(
            "rule {id}: timeout applies only to require_approval rules"
        ));
    }
    Ok(RuleFile {
        id,
        matcher: raw.matcher,
        action: raw.action,
        reason: raw.reason,
        timeout: raw.timeout,
        rate_limit: raw.rate_limit,
    })
}

fn version_one<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let version = String::deserialize(deserializer)?;
    if version != "1" {
        return Err(de::Error::custom(format!(
            "unsupported policy version {version:?} (this gateway reads \"1\")"
        )));
    }
    Ok(version)
}

/// Parses and validates policy text.
pub fn parse(text: &str) -> Result<PolicyFile, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError {
            line: 1,
            column: 1,
            message: format!(
                "policy is {} bytes, more than the {MAX_POLICY_BYTES}-byte limit",
                text.len()
            ),
        });
    }
    serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; the position is reported separately.
        let mut message = message
            .rsplit_once(" at line ")
            .map_or(message.clone(), |(m, _)| m.to_owned());
        let at = text
            .lines()
            .nth(e.line().saturating_sub(1))
            .and_then(|l| l.get(e.column().saturating_sub(1)..));
        if at.is_some_and(|rest| rest.starts_with("//") || rest.starts_with("/*")) {
            message = format!("comments are not allowed in JSON ({message})");
        }
        PolicyError {
            line: e.line(),
            column: e.column(),
            message,
        }
    })
}

/// The line on which each rule of valid policy `text` starts, in order (serde reports no
/// positions for valid input, and checks against tool schemas name the rule's line).
pub fn rule_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let (mut line, mut depth) = (1, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    let mut last_key = String::new();
    let mut current = String::new();
    let mut rules_depth = None;
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                (false, _) => current.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                current.clear();
            }
            ':' if depth == 1 => last_key = std::mem::take(&mut current),
            '{' | '[' => {
                depth += 1;
                if c == '[' && depth == 2 && last_key == "rules" {
                    rules_depth = Some(depth);
                } else if c == '{' && rules_depth.is_some_and(|d| depth == d + 1) {
                    lines.push(line);
                }
            }
            '}' | ']' => {
                if rules_depth == Some(depth) {
                    rules_depth = None;
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    lines
}
