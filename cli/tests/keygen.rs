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

/// The README's commands: `openssl pkey` reads both files (OpenSSL 3.0 included) and derives the
/// same public key from the private one. Skipped with a notice where openssl is not installed.
#[test]
fn openssl_pkey_reads_both_key_files() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    assert!(keygen(dir.path(), &[]).status.success());
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let private = openssl(&["pkey", "-in", "verdict.key", "-noout", "-text"]);
    assert!(private.contains("ED25519 Private-Key"), "{private}");
    let public = openssl(&["pkey", "-pubin", "-in", "verdict.pub", "-noout", "-text"]);
    assert!(public.contains("ED25519 Public-Key"), "{public}");
    let derived = openssl(&["pkey", "-in", "verdict.key", "-pubout"]);
    assert_eq!(
        derived,
        std::fs::read_to_string(dir.path().join("verdict.pub")).unwrap()
    );
}
