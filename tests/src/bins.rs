//! The workspace's own binaries, for tests that run them as real processes.
//!
//! `cargo test` builds a package's binaries only for that package's own integration tests, so
//! the harness runs `cargo build --workspace --bins` (the same `$CARGO` and profile) once per test
//! process. `scripts/test` runs the same command first, so here it is a fresh no-op; building
//! the whole workspace, not one package, keeps one feature set and so one copy of each artifact.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Path of workspace binary `name`, after making sure every workspace binary is built.
pub fn cargo_bin(name: &str) -> PathBuf {
    static PROFILE_DIR: OnceLock<PathBuf> = OnceLock::new();
    PROFILE_DIR.get_or_init(build_workspace_bins).join(name)
}

fn build_workspace_bins() -> PathBuf {
    // .../target/<profile>/deps/<test exe> → .../target/<profile>
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps layout")
        .to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "--workspace", "--bins"]);
    // `cargo test` gives this process its package's variables (CARGO_MANIFEST_DIR,
    // CARGO_PKG_NAME, ...). Some build scripts (ring's) ask to rerun when those change, so
    // passing them on would rebuild ring and everything above it here, and again in the next
    // ordinary build: scrub them so both builds see the same environment.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_package = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&name.as_ref());
        if per_package {
            command.env_remove(name.as_ref());
        }
    }
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        command.arg("--release");
    }
    let status = command.status().expect("running cargo build");
    assert!(status.success(), "cargo build --workspace --bins failed");
    profile_dir
}
