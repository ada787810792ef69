//! `verdict policy check` on the sample server: validation errors with positions, and risk
//! classes from real tool listings, including `session_manager` classified destructive from its
//! Korean description alone (annotations removed).

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
        r#"{"version":"1","default":"deny","hide":["memory_search"],"rules":[
            {"id":"no-destructive","match":{"risk":"destructive"},"action":"deny","reason":"humans only"},
            {"id":"reads","match":{"risk":"read"},"action":"allow"}]}"#,
    )
    .unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[upstreams.memory]\ncommand = \"{}\"\nargs = [\"--no-annotations\"]\n",
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
    assert_eq!(words("memory_read")[2..5], ["read", "allow", "reads"]);
    assert_eq!(words("memory_write")[2..5], ["write", "deny", "default"]);
    assert_eq!(words("memory_search")[3..5], ["hide", "hide"]);
}
