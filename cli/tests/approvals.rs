//! `verdict approvals` without a token: the message points at the environment variable (the token is
//! never read from argv, where every user of the machine could see it).

use std::process::Command;

#[test]
fn approvals_without_a_token_point_at_the_environment_not_argv() {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(["approvals", "list"])
        .env_remove("VERDICT_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(stderr.contains("set VERDICT_ADMIN_TOKEN"), "{stderr}");
    assert!(!stderr.contains("--admin-token"), "{stderr}");
}
