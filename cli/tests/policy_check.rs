//! `verdict policy check` on the sample server (the real Work Memory server's tool definitions):
//! validation errors with positions, risk classes from real tool listings without annotations,
//! argument rules checked against the tools' enums, and upstreams that cannot be launched.

use std::process::Command;
use verdict_tests::mcp::work_memory_bin;

fn verdict(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn invalid_policy_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, "{\"version\": \"1\",\n  \"default\": \"deny\",\n  \"rules\": [{\"action\": \"allow\", \"colour\": 1}]}").unwrap();
    let (ok, _, stderr) = verdict(&["policy", "check", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("policy.json:3:") && stderr.contains("unknown field `colour`"),
        "{stderr}"
    );
}

#[test]
fn classifies_tools_of_a_real_upstream_without_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"version":"1","default":"deny","hide":["search_work_memory"],"rules":[
            {"id":"no-destructive","match":{"risk":"destructive"},"action":"deny","reason":"humans only"},
            {"id":"reads","match":{"risk":"read"},"action":"allow"},
            {"id":"held","match":{"tool":"add_work_memory"},"action":"require_approval","timeout":120}]}"#,
    )
    .unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[upstreams.memory]\ncommand = \"{}\"\n",
            work_memory_bin().display()
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = verdict(&[
        "policy",
        "check",
        policy.to_str().unwrap(),
        "--gateway-config",
        config.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let row = |tool: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{tool} ")))
            .unwrap_or_else(|| panic!("{tool} missing:\n{stdout}"))
            .to_owned()
    };
    let words = |tool: &str| {
        row(tool)
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words("session_manager")[1..5],
        ["memory", "destructive", "deny", "no-destructive"]
    );
    assert_eq!(
        words("list_work_memories")[2..5],
        ["read", "allow", "reads"]
    );
    assert_eq!(
        words("add_work_memory")[2..6],
        ["write", "require_approval", "120s", "held"]
    );
    assert_eq!(
        words("delete_work_memory")[2..5],
        ["destructive", "deny", "no-destructive"]
    );
    assert_eq!(words("search_work_memory")[3..5], ["hide", "hide"]);
    assert!(
        !stdout.contains('{'),
        "no debug text in the table:\n{stdout}"
    );
}

/// A gateway config with the sample server as upstream `memory`, and `policy` beside it.
fn sample_setup(policy: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.json");
    std::fs::write(&policy_path, policy).unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[upstreams.memory]\ncommand = \"{}\"\n",
            work_memory_bin().display()
        ),
    )
    .unwrap();
    let (policy_path, config) = (
        policy_path.to_str().unwrap().to_owned(),
        config.to_str().unwrap().to_owned(),
    );
    (dir, policy_path, config)
}

#[test]
fn a_rule_on_a_value_the_schema_does_not_allow_fails_naming_line_and_allowed_values() {
    let (_dir, policy, config) = sample_setup(
        "{\"version\": \"1\", \"default\": \"deny\", \"rules\": [\n  {\"id\": \"reads\", \"match\": {\"risk\": \"read\"}, \"action\": \"allow\"},\n  {\"id\": \"no-delete\", \"match\": {\"tool\": \"session_manager\", \"arguments\": {\"action\": \"delete\"}},\n   \"action\": \"deny\", \"reason\": \"humans only\"}]}",
    );
    let (ok, _, stderr) = verdict(&["policy", "check", &policy, "--gateway-config", &config]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!("{policy}:3: error: rule no-delete: argument action of session_manager: \"delete\" matches no allowed value (allowed: set_active, clear, enable_auto_link, disable_auto_link, delete_session, delete_session_cascade, list_sessions)")),
        "{stderr}"
    );
}

#[test]
fn an_equality_leaving_out_the_cascading_delete_is_a_warning_only() {
    let (_dir, policy, config) = sample_setup(
        r#"{"version": "1", "default": "deny", "rules": [
  {"id": "no-delete", "match": {"tool": "session_manager", "arguments": {"action": "delete_session"}}, "action": "deny"}]}"#,
    );
    let (ok, _, stderr) = verdict(&["policy", "check", &policy, "--gateway-config", &config]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning: rule no-delete") && stderr.contains("delete_session_cascade"),
        "{stderr}"
    );
}

#[test]
fn an_upstream_that_cannot_be_launched_is_an_error() {
    let (dir, policy, config) = sample_setup(r#"{"version": "1", "default": "deny"}"#);
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[upstreams.gone]\ncommand = \"no/such/server\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = verdict(&["policy", "check", &policy, "--gateway-config", &config]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("error: upstream gone cannot be reached or launched")
            && stderr.contains(&dir.path().join("no/such/server").display().to_string()),
        "relative commands resolve against the config's directory: {stderr}"
    );
}
