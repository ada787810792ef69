//! The one name table of the contract's enumerations: the lowercase names under which decisions,
//! risk classes, outcome kinds and redaction settings are stored, exported, shown, counted in
//! metrics and written in policy files.
//!
//! Every crate maps these enums to and from text through [`Label`] and nowhere else, so a new
//! variant is named once and a name means the same value everywhere (ClickHouse columns, export
//! records, CLI tables, Prometheus labels). The unspecified value has the empty name.

use crate::pb::{ConfigChangeKind, DecisionKind, OutcomeKind, Redaction, RiskClass, ToolChange};

/// An enumeration of the contract with a stored name for each value.
pub trait Label: Sized + Copy + TryFrom<i32> + 'static {
    /// Every named value with its name, in declaration order.
    const NAMES: &'static [(Self, &'static str)];

    /// The stored name (`""` for the unspecified value).
    fn label(self) -> &'static str;

    /// The value stored under `name` (`None` for an unknown name or `""`).
    fn from_label(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, label)| *label == name)
            .map(|(value, _)| *value)
    }

    /// The name of a raw protobuf field value (`""` for unspecified or unknown values).
    fn label_of(value: i32) -> &'static str {
        Self::try_from(value).map_or("", Self::label)
    }
}

macro_rules! names {
    ($ty:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl Label for $ty {
            const NAMES: &'static [(Self, &'static str)] = &[$((<$ty>::$variant, $name)),*];

            fn label(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $name,)*
                    _ => "",
                }
            }
        }
    };
}

names!(RiskClass {
    Read => "read", Write => "write", Destructive => "destructive",
});
names!(DecisionKind {
    Allow => "allow", Deny => "deny", Hide => "hide", RateLimited => "rate_limited",
    ApprovalRequested => "approval_requested", Approved => "approved", Rejected => "rejected",
    ApprovalExpired => "approval_expired", Error => "error", Refused => "refused",
});
names!(OutcomeKind {
    Ok => "ok", ToolError => "tool_error", JsonrpcError => "jsonrpc_error",
    UpstreamUnreachable => "upstream_unreachable", Cancelled => "cancelled",
});
names!(Redaction {
    Full => "full", Redacted => "redacted", Hash => "hash",
});
names!(ToolChange {
    Unchanged => "unchanged", Added => "added", Changed => "changed", Removed => "removed",
});
names!(ConfigChangeKind {
    Added => "added", Changed => "changed", Removed => "removed",
});

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: Label + PartialEq + std::fmt::Debug + Into<i32>>() {
        for &(value, name) in T::NAMES {
            assert_eq!(value.label(), name);
            assert_eq!(T::from_label(name), Some(value));
            assert_eq!(T::label_of(value.into()), name);
        }
        assert_eq!(T::from_label(""), None);
        assert_eq!(T::label_of(0), "");
        assert_eq!(T::label_of(9_999), "");
    }

    #[test]
    fn every_name_maps_back_to_its_value() {
        round_trips::<RiskClass>();
        round_trips::<DecisionKind>();
        round_trips::<OutcomeKind>();
        round_trips::<Redaction>();
        round_trips::<ToolChange>();
        round_trips::<ConfigChangeKind>();
    }

    #[test]
    fn every_named_variant_is_in_the_table() {
        // prost's own names, minus the prefix, are the stored names: a variant added to the
        // .proto without a name here would be stored as "".
        let prost_names = |names: &[&str], prefix: &str| -> Vec<String> {
            names
                .iter()
                .filter(|n| !n.ends_with("_UNSPECIFIED"))
                .map(|n| n.trim_start_matches(prefix).to_lowercase())
                .collect()
        };
        let table = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let decisions: Vec<&str> = (0..=20)
            .filter_map(|v| DecisionKind::try_from(v).ok())
            .map(|d| d.as_str_name())
            .collect();
        assert_eq!(
            prost_names(&decisions, "DECISION_KIND_"),
            table(&DecisionKind::NAMES.iter().map(|n| n.1).collect::<Vec<_>>())
        );
        let outcomes: Vec<&str> = (0..=20)
            .filter_map(|v| OutcomeKind::try_from(v).ok())
            .map(|o| o.as_str_name())
            .collect();
        assert_eq!(
            prost_names(&outcomes, "OUTCOME_KIND_"),
            table(&OutcomeKind::NAMES.iter().map(|n| n.1).collect::<Vec<_>>())
        );
    }
}
