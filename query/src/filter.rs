//! Request filters → SQL fragments with bound parameters.
//!
//! Every value a client sends becomes a `?` placeholder filled by the `clickhouse` crate's
//! `.bind()`, which writes it as an escaped literal; no client text is ever formatted into SQL.
//! Column names come only from this file's constants. Tool and argument-value globs (`*`, `?`)
//! become `LIKE` patterns with `%`, `_` and `\` escaped first, bound like any other value.
//!
//! Invalid input (NUL bytes, unknown enum values, empty keys, inverted or too long time ranges,
//! too many values) is a [`FilterError`], which the service returns as `INVALID_ARGUMENT`: a
//! malformed filter never reaches ClickHouse.

use serde::Serialize;
use verdict_proto::pb;
use verdict_proto::pb::{DecisionKind, RiskClass};
use verdict_proto::Label;

/// Longest string accepted in any filter field, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;
const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{field}: NUL bytes are not allowed")]
    Nul { field: &'static str },
    #[error("{field}: longer than {MAX_VALUE_BYTES} bytes")]
    TooLong { field: &'static str },
    #[error("{field}: at most {max} values")]
    TooMany { field: &'static str, max: usize },
    #[error("{field}: unknown or unspecified value {value}")]
    BadEnum { field: &'static str, value: i32 },
    #[error("{0}")]
    Invalid(String),
}

/// A bound value, serialised by the `clickhouse` crate as an escaped SQL literal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Param {
    Str(String),
    I64(i64),
    U64(u64),
}

/// SQL text with its `?` placeholders and their values, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bound {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Bound {
    pub fn new(sql: impl Into<String>, params: Vec<Param>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }

    /// Binds the parameters onto a query built from (text containing) `self.sql`.
    pub fn bind_to(&self, mut query: clickhouse::query::Query) -> clickhouse::query::Query {
        for param in &self.params {
            query = query.bind(param);
        }
        query
    }
}

/// A conjunction of conditions; renders `1` when empty so it can always follow `WHERE`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    parts: Vec<Bound>,
}

impl Conditions {
    pub fn push(&mut self, sql: impl Into<String>, params: Vec<Param>) {
        self.parts.push(Bound::new(sql, params));
    }

    /// `(col = ? OR col = ? ...)` for the values of a repeated field; nothing when empty.
    pub fn any_equal(&mut self, column: &str, values: Vec<String>) {
        if values.is_empty() {
            return;
        }
        let sql = vec![format!("{column} = ?"); values.len()].join(" OR ");
        self.push(
            format!("({sql})"),
            values.into_iter().map(Param::Str).collect(),
        );
    }

    /// The conditions joined with `AND`, and their parameters in order.
    pub fn to_bound(&self) -> Bound {
        if self.parts.is_empty() {
            return Bound::new("1", Vec::new());
        }
        Bound {
            sql: self
                .parts
                .iter()
                .map(|p| p.sql.as_str())
                .collect::<Vec<_>>()
                .join(" AND "),
            params: self.parts.iter().flat_map(|p| p.params.clone()).collect(),
        }
    }
}

/// Limits applied while translating a filter.
#[derive(Debug, Clone, Copy)]
pub struct FilterLimits {
    pub max_values: usize,
    pub max_range_days: u32,
}

/// Checks one client string.
pub fn text(field: &'static str, value: &str) -> Result<String, FilterError> {
    if value.contains('\0') {
        return Err(FilterError::Nul { field });
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(FilterError::TooLong { field });
    }
    Ok(value.to_owned())
}

/// Checks the values of a repeated string field.
pub fn texts(
    field: &'static str,
    values: &[String],
    limits: FilterLimits,
) -> Result<Vec<String>, FilterError> {
    if values.len() > limits.max_values {
        return Err(FilterError::TooMany {
            field,
            max: limits.max_values,
        });
    }
    values.iter().map(|v| text(field, v)).collect()
}

/// The `events` table's time columns: seconds (partition key) and nanoseconds.
pub const EVENT_TIME: (&str, &str) = ("time", "time_unix_nanos");
/// The `findings` table's time columns.
pub const FINDING_TIME: (&str, &str) = ("detected_at", "detected_unix_nanos");

/// Conditions on a table's `(seconds, nanoseconds)` time columns for a `[from, to)` range
/// (0 = unbounded). The seconds column prunes partitions; the nanoseconds column is exact.
pub fn time_range(
    conditions: &mut Conditions,
    (secs, nanos): (&str, &str),
    range: Option<&pb::TimeRange>,
    limits: FilterLimits,
) -> Result<(), FilterError> {
    let (from, to) = range.map_or((0, 0), |r| (r.from_unix_nanos, r.to_unix_nanos));
    if from < 0 || to < 0 {
        return Err(FilterError::Invalid("time: negative timestamps".into()));
    }
    if from > 0 && to > 0 {
        if to <= from {
            return Err(FilterError::Invalid(
                "time: `to` must be after `from`".into(),
            ));
        }
        if to - from > i64::from(limits.max_range_days) * NANOS_PER_DAY {
            return Err(FilterError::Invalid(format!(
                "time: ranges longer than {} days are not served",
                limits.max_range_days
            )));
        }
    }
    let seconds = |nanos: i64| Param::I64(nanos / 1_000_000_000);
    if from > 0 {
        conditions.push(
            format!("{secs} >= toDateTime(?) AND {nanos} >= ?"),
            vec![seconds(from), Param::I64(from)],
        );
    }
    if to > 0 {
        conditions.push(
            format!("{secs} <= toDateTime(?) AND {nanos} < ?"),
            vec![seconds(to), Param::I64(to)],
        );
    }
    Ok(())
}

/// The conditions of an [`pb::EventFilter`] over the `events` table.
pub fn event_filter(
    filter: &pb::EventFilter,
    limits: FilterLimits,
) -> Result<Conditions, FilterError> {
    let mut c = Conditions::default();
    time_range(&mut c, EVENT_TIME, filter.time.as_ref(), limits)?;
    c.any_equal("agent_id", texts("agents", &filter.agents, limits)?);
    c.any_equal("upstream", texts("upstreams", &filter.upstreams, limits)?);
    c.any_equal("chain_id", texts("chain_ids", &filter.chain_ids, limits)?);
    let tools = texts("tools", &filter.tools, limits)?;
    if !tools.is_empty() {
        let (sql, params): (Vec<&str>, Vec<Param>) = tools
            .into_iter()
            .map(|tool| match glob_to_like(&tool) {
                Some(pattern) => ("tool LIKE ?", Param::Str(pattern)),
                None => ("tool = ?", Param::Str(tool)),
            })
            .unzip();
        c.push(format!("({})", sql.join(" OR ")), params);
    }
    let risks = enum_names("risks", &filter.risks, limits, RiskClass::label_of)?;
    c.any_equal("risk", risks);
    let decisions = enum_names(
        "decisions",
        &filter.decisions,
        limits,
        DecisionKind::label_of,
    )?;
    c.any_equal("decision", decisions);
    if filter.targets.len() > limits.max_values {
        return Err(FilterError::TooMany {
            field: "targets",
            max: limits.max_values,
        });
    }
    if !filter.targets.is_empty() {
        let mut sql = Vec::new();
        let mut params = Vec::new();
        for target in &filter.targets {
            let name = text("targets.name", &target.name)?;
            let value = text("targets.value", &target.value)?;
            match (name.is_empty(), value.is_empty()) {
                (true, true) => {
                    return Err(FilterError::Invalid(
                        "targets: a match needs a name, a value or both".into(),
                    ))
                }
                (true, false) => {
                    sql.push("has(target_values, ?)");
                    params.push(Param::Str(value));
                }
                (false, true) => {
                    sql.push("has(target_names, ?)");
                    params.push(Param::Str(name));
                }
                (false, false) => {
                    sql.push("arrayExists((n, v) -> n = ? AND v = ?, target_names, target_values)");
                    params.extend([Param::Str(name), Param::Str(value)]);
                }
            }
        }
        c.push(format!("({})", sql.join(" OR ")), params);
    }
    if !filter.reason_contains.is_empty() {
        let needle = text("reason_contains", &filter.reason_contains)?;
        c.push("position(reason, ?) > 0", vec![Param::Str(needle)]);
    }
    if filter.arguments.len() > limits.max_values {
        return Err(FilterError::TooMany {
            field: "arguments",
            max: limits.max_values,
        });
    }
    for argument in &filter.arguments {
        let key = text("arguments.key", &argument.key)?;
        if key.is_empty() {
            return Err(FilterError::Invalid("arguments: empty key".into()));
        }
        let value = text("arguments.value", &argument.value)?;
        // JSONExtractString is missing from ClickHouse 18.16; visitParamExtractString exists in
        // every release. It reads the first `"key":"string"` pair at any depth. A value with `*`
        // or `?` is a glob (`action=delete*` finds both delete actions), matched ignoring case,
        // as the gateway's own argument rules do.
        match glob_to_like(&value) {
            None => c.push(
                "visitParamExtractString(arguments_json, ?) = ?",
                vec![Param::Str(key), Param::Str(value)],
            ),
            // The key must be there: an absent one extracts as "", which `*` would match.
            Some(pattern) => c.push(
                "(visitParamHas(arguments_json, ?) AND lowerUTF8(visitParamExtractString(arguments_json, ?)) LIKE ?)",
                vec![
                    Param::Str(key.clone()),
                    Param::Str(key),
                    Param::Str(pattern.to_lowercase()),
                ],
            ),
        }
    }
    Ok(c)
}

fn enum_names(
    field: &'static str,
    values: &[i32],
    limits: FilterLimits,
    name: fn(i32) -> &'static str,
) -> Result<Vec<String>, FilterError> {
    if values.len() > limits.max_values {
        return Err(FilterError::TooMany {
            field,
            max: limits.max_values,
        });
    }
    values
        .iter()
        .map(|&value| match name(value) {
            "" => Err(FilterError::BadEnum { field, value }),
            n => Ok(n.to_owned()),
        })
        .collect()
}

/// The `LIKE` pattern for a glob with `*` or `?`, or `None` for a plain name.
pub fn glob_to_like(glob: &str) -> Option<String> {
    if !glob.contains(['*', '?']) {
        return None;
    }
    let mut pattern = String::with_capacity(glob.len() + 4);
    for ch in glob.chars() {
        match ch {
            '\\' | '%' | '_' => {
                pattern.push('\\');
                pattern.push(ch);
            }
            '*' => pattern.push('%'),
            '?' => pattern.push('_'),
            other => pattern.push(other),
        }
    }
    Some(pattern)
}

/// Decision events only (WhoTried and its grouped view).
pub fn decisions_only(cond: &mut Conditions) {
    cond.push("kind = 'decision'", vec![]);
}

/// `ListFindings`' filter: detection time, finding kinds and chains.
pub fn finding_filter(
    req: &pb::ListFindingsRequest,
    limits: FilterLimits,
) -> Result<Conditions, FilterError> {
    let mut cond = Conditions::default();
    time_range(&mut cond, FINDING_TIME, req.time.as_ref(), limits)?;
    cond.any_equal("kind", texts("kinds", &req.kinds, limits)?);
    cond.any_equal("chain_id", texts("chain_ids", &req.chain_ids, limits)?);
    Ok(cond)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FilterLimits = FilterLimits {
        max_values: 3,
        max_range_days: 30,
    };

    #[test]
    fn globs_escape_like_metacharacters() {
        assert_eq!(glob_to_like("session_manager"), None);
        assert_eq!(glob_to_like("mem*").as_deref(), Some("mem%"));
        assert_eq!(glob_to_like(r"a_b%c\d?*").as_deref(), Some(r"a\_b\%c\\d_%"));
    }

    #[test]
    fn values_become_parameters_never_sql() {
        let filter = pb::EventFilter {
            agents: vec!["' OR 1=1 --".into()],
            arguments: vec![pb::ArgumentMatch {
                key: "action".into(),
                value: "delete".into(),
            }],
            ..Default::default()
        };
        let bound = event_filter(&filter, LIMITS).unwrap().to_bound();
        assert_eq!(
            bound.sql,
            "(agent_id = ?) AND visitParamExtractString(arguments_json, ?) = ?"
        );
        assert_eq!(
            bound.params,
            vec![
                Param::Str("' OR 1=1 --".into()),
                Param::Str("action".into()),
                Param::Str("delete".into())
            ]
        );
    }

    #[test]
    fn argument_globs_are_bound_like_patterns() {
        let filter = pb::EventFilter {
            arguments: vec![pb::ArgumentMatch {
                key: "action".into(),
                value: "Delete_%*".into(),
            }],
            ..Default::default()
        };
        let bound = event_filter(&filter, LIMITS).unwrap().to_bound();
        assert_eq!(
            bound.sql,
            "(visitParamHas(arguments_json, ?) AND lowerUTF8(visitParamExtractString(arguments_json, ?)) LIKE ?)"
        );
        assert_eq!(
            bound.params,
            vec![
                Param::Str("action".into()),
                Param::Str("action".into()),
                Param::Str(r"delete\_\%%".into())
            ]
        );
    }

    #[test]
    fn rejects_bad_input() {
        let nul = pb::EventFilter {
            tools: vec!["a\0b".into()],
            ..Default::default()
        };
        assert_eq!(
            event_filter(&nul, LIMITS),
            Err(FilterError::Nul { field: "tools" })
        );
        let unspecified = pb::EventFilter {
            decisions: vec![0],
            ..Default::default()
        };
        assert!(matches!(
            event_filter(&unspecified, LIMITS),
            Err(FilterError::BadEnum { .. })
        ));
        let too_long = pb::EventFilter {
            time: Some(pb::TimeRange {
                from_unix_nanos: 1,
                to_unix_nanos: 31 * NANOS_PER_DAY,
            }),
            ..Default::default()
        };
        assert!(event_filter(&too_long, LIMITS).is_err());
        let many = pb::EventFilter {
            agents: vec!["a".into(); 4],
            ..Default::default()
        };
        assert!(matches!(
            event_filter(&many, LIMITS),
            Err(FilterError::TooMany { .. })
        ));
    }
}
