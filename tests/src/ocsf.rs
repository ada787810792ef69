//! The OCSF check of the tests: every OCSF line a test produces goes through published
//! validators (`scripts/ocsf_validate.py`, run by the Python of the venv that `scripts/deps.sh`
//! installs under the target dir), never through a check the project wrote itself.

use crate::process::{OutputWithin, COMMAND_TIMEOUT};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The OCSF release Verdict's lines claim and are validated against.
pub const OCSF_VERSION: &str = "1.4.0";

/// Panics with the validators' report unless every line of `file` is a valid OCSF event.
pub fn assert_valid_ocsf(file: &Path) {
    let (ok, report) = validate_ocsf(file);
    assert!(ok, "OCSF validation failed:\n{report}");
}

/// Runs the validators over `file`: (every line valid, their report).
pub fn validate_ocsf(file: &Path) -> (bool, String) {
    let python = venv_python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/deps.sh (it installs the OCSF validators)",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ocsf_validate.py");
    let output = Command::new(&python)
        .arg(script)
        .arg(OCSF_VERSION)
        .arg(file)
        .output_within(COMMAND_TIMEOUT)
        .expect("running the OCSF validators");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), report)
}

/// `target/ocsf-venv/bin/python`, found from this test executable (`target/<profile>/deps/…`).
fn venv_python() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target/<profile>/deps layout");
    target.join("ocsf-venv/bin/python")
}
