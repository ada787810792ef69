//! Argument rules checked against the tools they can apply to.
//!
//! A rule on `{"action": "delete"}` loads fine and never matches when the tool's input schema says
//! `action` is one of `delete_session`, `delete_session_cascade`, …: the rule protects nothing and
//! nobody notices (seen with the real Work Memory server). `verdict policy check` therefore reads
//! each tool's published schema and reports, per rule and line, a literal or glob that no allowed
//! value matches (an error), and an equality that leaves out enum values sharing its prefix, like
//! `delete_session` next to `delete_session_cascade` (a warning).

use crate::engine::{normalized, same_value};
use crate::file::ArgumentMatch;
use crate::Policy;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem of one rule with one tool's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFinding {
    pub severity: Severity,
    /// Line of the policy file where the rule starts.
    pub line: usize,
    pub rule_id: String,
    pub message: String,
}

impl Policy {
    /// Checks the argument rules that may apply to a tool against its definition's input schema.
    pub fn check_schema(
        &self,
        server: &str,
        names: [&str; 2],
        definition: &Value,
    ) -> Vec<SchemaFinding> {
        let mut findings = Vec::new();
        for &index in self.candidates_for(server, names).iter() {
            let rule = &self.rules[index];
            for (key, matcher) in &rule.arguments {
                let Some(allowed) = enum_of(definition, key) else {
                    continue;
                };
                let found = |severity, message| SchemaFinding {
                    severity,
                    line: rule.line,
                    rule_id: rule.id.clone(),
                    message,
                };
                let tool = names[1];
                findings.extend(problems(matcher, allowed).into_iter().map(
                    |(severity, problem)| {
                        found(severity, format!("argument {key} of {tool}: {problem}"))
                    },
                ));
            }
        }
        findings
    }
}

/// The `enum` of property `key` (or of its array items) in the tool's input schema.
fn enum_of<'a>(definition: &'a Value, key: &str) -> Option<&'a [Value]> {
    let property = &definition["inputSchema"]["properties"][key];
    property["enum"]
        .as_array()
        .or_else(|| property["items"]["enum"].as_array())
        .map(Vec::as_slice)
}

fn problems(matcher: &ArgumentMatch, allowed: &[Value]) -> Vec<(Severity, String)> {
    let listing = || {
        allowed
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unmatched = |what: String| {
        (
            Severity::Error,
            format!("{what} matches no allowed value (allowed: {})", listing()),
        )
    };
    match matcher {
        ArgumentMatch::Equals(value) => literal(
            value,
            std::slice::from_ref(value),
            allowed,
            same_value,
            unmatched,
        ),
        ArgumentMatch::Exact(value) => literal(
            value,
            std::slice::from_ref(value),
            allowed,
            |a, b| a == b,
            unmatched,
        ),
        ArgumentMatch::OneOf(values) => values
            .iter()
            .flat_map(|v| literal(v, values, allowed, same_value, unmatched))
            .collect(),
        ArgumentMatch::Glob(pattern) => {
            let hits = allowed
                .iter()
                .filter_map(Value::as_str)
                .any(|a| pattern.matcher.is_match(a));
            match hits {
                true => Vec::new(),
                false => vec![unmatched(format!("glob {:?}", pattern.text))],
            }
        }
        ArgumentMatch::Present(_) => Vec::new(),
    }
}

/// An error when no allowed value equals `value`; a warning when it equals one but others share
/// its prefix and are not `covered` by the same match (an equality leaves them out).
fn literal(
    value: &Value,
    covered: &[Value],
    allowed: &[Value],
    equal: fn(&Value, &Value) -> bool,
    unmatched: impl Fn(String) -> (Severity, String),
) -> Vec<(Severity, String)> {
    if !allowed.iter().any(|a| equal(value, a)) {
        return vec![unmatched(value.to_string())];
    }
    let Some(text) = value.as_str().map(normalized) else {
        return Vec::new();
    };
    let longer: Vec<&str> = allowed
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| normalized(a) != text && normalized(a).starts_with(&text))
        .filter(|a| !covered.iter().any(|c| same_value(c, &Value::from(*a))))
        .collect();
    match longer.is_empty() {
        true => Vec::new(),
        false => vec![(
            Severity::Warning,
            format!(
                "{value} does not match {} (an equality match; use {{\"glob\": \"{text}*\"}} or one_of to cover them)",
                longer.join(", ")
            ),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session_manager() -> Value {
        let published: Value =
            serde_json::from_str(include_str!("../../sample-mcp/work-memory-tools.json")).unwrap();
        published["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "session_manager")
            .unwrap()
            .clone()
    }

    fn check(rules: &str) -> Vec<SchemaFinding> {
        let text =
            format!("{{\"version\": \"1\", \"default\": \"deny\",\n\"rules\": [\n{rules}]}}");
        let policy = Policy::from_text(&text).unwrap();
        policy.check_schema("memory", ["session_manager"; 2], &session_manager())
    }

    #[test]
    fn a_literal_outside_the_enum_is_an_error_naming_line_and_allowed_values() {
        let findings = check(
            "{\"id\": \"ok\", \"match\": {\"tool\": \"memory_*\"}, \"action\": \"allow\"},\n{\"id\": \"no-delete\", \"match\": {\"arguments\": {\"action\": \"delete\"}}, \"action\": \"deny\"}",
        );
        assert_eq!(findings.len(), 1, "{findings:?}");
        let finding = &findings[0];
        assert_eq!(
            (finding.severity, finding.line, finding.rule_id.as_str()),
            (Severity::Error, 4, "no-delete")
        );
        assert!(finding.message.contains("\"delete\" matches no allowed value (allowed: set_active, clear, enable_auto_link, disable_auto_link, delete_session, delete_session_cascade, list_sessions)"), "{}", finding.message);
    }

    #[test]
    fn an_equality_that_leaves_out_longer_values_is_a_warning_and_globs_are_checked() {
        let findings = check(
            "{\"id\": \"a\", \"match\": {\"arguments\": {\"action\": \"Delete_Session\"}}, \"action\": \"deny\"},\n{\"id\": \"b\", \"match\": {\"arguments\": {\"action\": {\"glob\": \"delete*\"}}}, \"action\": \"deny\"},\n{\"id\": \"c\", \"match\": {\"arguments\": {\"action\": {\"glob\": \"remove*\"}}}, \"action\": \"deny\"},\n{\"id\": \"d\", \"match\": {\"arguments\": {\"action\": {\"one_of\": [\"delete_session\", \"delete_session_cascade\"]}, \"session_id\": \"x\"}}, \"action\": \"deny\"}",
        );
        let got: Vec<(Severity, &str)> = findings
            .iter()
            .map(|f| (f.severity, f.rule_id.as_str()))
            .collect();
        assert_eq!(
            got,
            [(Severity::Warning, "a"), (Severity::Error, "c")],
            "one_of d covers both"
        );
        assert!(
            findings[0].message.contains("delete_session_cascade"),
            "{}",
            findings[0].message
        );
        assert!(json!(findings[1].message).to_string().contains("remove*"));
    }
}
