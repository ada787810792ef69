//! Tests of the gateway's policy state: reloading the file and its lock file, and the engine's
//! decisions through them.

use super::*;
use crate::decision::{RiskName, Ruling};
use serde_json::json;
use verdict_policy::PIN_RULE;

#[test]
fn invalid_reload_keeps_the_old_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, r#"{"version":"1","default":"deny"}"#).unwrap();
    let decider = PolicyDecider::load(&path).unwrap();
    let before = decider.policy().sha256;
    std::fs::write(&path, "{\"version\":\"1\",\"default\":\"deny\",}").unwrap();
    assert!(decider.changed().is_err());
    assert_eq!(decider.policy().sha256, before);
    std::fs::write(&path, r#"{"version":"1","default":"allow"}"#).unwrap();
    decider.install(decider.changed().unwrap().expect("changed"));
    assert_ne!(decider.policy().sha256, before);
}

#[test]
fn pins_make_decisions_stricter_never_looser_and_reload_with_the_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(
        &path,
        r#"{"version": "1", "default": "allow",
            "pin": {"mem/deny_*": "on_change_deny", "mem/hold_*": "hold", "mem/alert_*": "alert"},
            "rules": [{"id": "no-deny_x", "match": {"tool": "deny_x"}, "action": "deny"}]}"#,
    )
    .unwrap();
    let decider = PolicyDecider::load(&path).unwrap();
    let arguments = json!({});
    let current = pin::Fingerprint::of(&json!({"name": "t", "description": "poisoned"}));
    let decide = |tool| {
        decider.decide(&CallInfo {
            agent: "a",
            session: "s",
            upstream: "mem",
            tool,
            exposed: tool,
            risk: RiskName::Read,
            arguments: &arguments,
            fingerprint: Some(&current),
        })
    };
    let denied = decide("deny_y");
    assert_eq!(
        (denied.ruling, denied.rule_id.as_str()),
        (Ruling::Deny, PIN_RULE)
    );
    assert!(
        denied.reason.contains("mem/deny_y is not pinned"),
        "{}",
        denied.reason
    );
    assert_eq!(
        decide("deny_x").rule_id,
        "no-deny_x",
        "a rule's refusal stands"
    );
    let held = decide("hold_y");
    assert!(matches!(held.ruling, Ruling::RequireApproval { .. }));
    assert_eq!(held.rule_id, PIN_RULE);
    let alerted = decide("alert_y");
    assert_eq!(
        (alerted.ruling, alerted.rule_id.as_str()),
        (Ruling::Allow, "default")
    );
    assert!(alerted.reason.contains("pin alert"), "{}", alerted.reason);
    assert_eq!(decide("other").reason, "allowed by default");

    let lock = pin::LockFile::new(
        [("mem/deny_y".to_owned(), current.clone())]
            .into_iter()
            .collect(),
    );
    std::fs::write(pin::LockFile::path_for(&path), lock.to_text()).unwrap();
    assert!(
        decider.content_changed(),
        "the lock file is watched with the policy"
    );
    decider.install(decider.changed().unwrap().expect("the lock file changed"));
    assert!(decider.changed().unwrap().is_none());
    assert_eq!(
        decide("deny_y").ruling,
        Ruling::Allow,
        "pinned as it is now"
    );
    assert_eq!(decider.pinned("mem", "deny_y"), Some(current.clone()));
    assert_eq!(decider.pinned("mem", "other"), None);
}
