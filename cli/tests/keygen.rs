//! `verdict keygen` as a user runs it: files, modes, and refusal to overwrite.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn keygen(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(["keygen", "--out"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn writes_a_0600_private_key_and_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let first = keygen(dir.path(), &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let private = dir.path().join("verdict.key");
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read_to_string(&private).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let stdout = String::from_utf8(first.stdout).unwrap();
    assert!(
        !stdout.contains("BEGIN"),
        "key material must never be printed"
    );

    let second = keygen(dir.path(), &[]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(&private).unwrap(),
        pem,
        "existing key kept"
    );

    let forced = keygen(dir.path(), &["--force"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read_to_string(&private).unwrap(), pem);
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
