//! A test `verdict-forwarder`: one config file per test (the query service's URL, a state dir
//! under the test's dir, the destinations given as TOML), started as the real binary with the
//! query token in its environment, so every forwarder test runs it the way an operator would.

use crate::bins::cargo_bin;
use crate::process::ServerProcess;
use crate::query::TOKEN;
use std::path::Path;
use std::process::Command;

/// Starts `verdict-forwarder` with `settings` (top-level TOML lines and `[[destinations]]`) and
/// `env`; its cursor and dead-letter files go to `dir/state`, its log to `dir/forwarder.log`.
pub fn start_forwarder(
    dir: &Path,
    query_url: &str,
    settings: &str,
    env: &[(&str, &str)],
) -> ServerProcess {
    let config = dir.join("forwarder.toml");
    let state = dir.join("state").display().to_string();
    std::fs::write(
        &config,
        format!("query_url = {query_url:?}\nstate_dir = {state:?}\n{settings}"),
    )
    .expect("writing forwarder.toml");
    let mut command = Command::new(cargo_bin("verdict-forwarder"));
    command
        .arg("--config")
        .arg(&config)
        .env("VERDICT_FORWARDER_QUERY_TOKEN", TOKEN)
        .envs(env.iter().copied());
    ServerProcess::spawn("verdict-forwarder", command, dir.join("forwarder.log"))
        .expect("starting verdict-forwarder")
}

/// The forwarder's metric `verdict_forwarder_<name>{destination="<destination>"}` scraped from
/// its `metrics_listen` port; `None` while it is not exposed yet.
pub async fn metric(port: u16, name: &str, destination: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("verdict_forwarder_{name}{{destination=\"{destination}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}
