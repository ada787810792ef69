//! The `verdict approvals` CLI as the tests use it: one command against a gateway's admin API,
//! and waiting until a call is held.

use crate::bins::cargo_bin;
use crate::process::{OutputWithin, COMMAND_TIMEOUT};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long a test waits for a call to be held.
const HOLD_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `verdict approvals ARGS` against the admin API at `admin_url` with `token`.
pub fn approvals(admin_url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(cargo_bin("verdict"))
        .arg("approvals")
        .args(args)
        .env("VERDICT_ADMIN_URL", admin_url)
        .env("VERDICT_ADMIN_TOKEN", token)
        .output_within(COMMAND_TIMEOUT)
        .expect("running verdict approvals")
}

/// Waits until exactly one held call's arguments mention `session_id`, and returns it as
/// `approvals list --json` shows it.
pub fn pending(admin_url: &str, token: &str, session_id: &str) -> Value {
    let start = Instant::now();
    loop {
        let output = approvals(admin_url, token, &["list", "--json"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let found: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .filter(|a: &Value| {
                a["arguments"]
                    .as_str()
                    .is_some_and(|s| s.contains(session_id))
            })
            .collect();
        if let [one] = found.as_slice() {
            return one.clone();
        }
        assert!(start.elapsed() < HOLD_TIMEOUT, "the call was never held");
        std::thread::sleep(Duration::from_millis(100));
    }
}
