//! The processes under test: the sample server over HTTP and a gateway in front of it, each on an
//! OS-chosen loopback port, killed when dropped.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cpu::Watched;

pub const API_KEY: &str = "loadgen-key";

pub struct Stack {
    pub upstream_url: String,
    pub gateway_url: String,
    /// The upstream's and the gateway's pids, for their CPU time.
    pub watched: Watched,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub fn start(extra_gateway_config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let bin_dir: PathBuf = std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_owned();
        let mut children = Vec::new();
        let upstream_ready = dir.path().join("upstream.ready");
        children.push(
            Command::new(bin_dir.join("work-memory"))
                .args(["--http", "127.0.0.1:0", "--ready-file"])
                .arg(&upstream_ready)
                .stderr(Stdio::null())
                .spawn()
                .context("starting work-memory (build the workspace binaries first)")?,
        );
        let upstream = wait_for(&upstream_ready)?;
        let upstream_url = format!("http://{upstream}/mcp");
        let config = format!(
            "listen = \"127.0.0.1:0\"\n{extra_gateway_config}\n[[agents]]\nid = \"loadgen\"\napi_key_sha256 = \"{}\"\n[upstreams.memory]\nurl = \"{upstream_url}\"\n",
            verdict_service::credentials::digest(API_KEY)
        );
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config)?;
        let gateway_ready = dir.path().join("gateway.ready");
        children.push(
            Command::new(bin_dir.join("verdict-gateway"))
                .arg("--config")
                .arg(&config_path)
                .arg("--ready-file")
                .arg(&gateway_ready)
                .env("RUST_LOG", "warn")
                .spawn()
                .context("starting verdict-gateway")?,
        );
        let gateway = wait_for(&gateway_ready)?;
        let mut watched = Watched::default();
        watched.add("upstream", children[0].id());
        watched.add("gateway", children[1].id());
        Ok(Self {
            upstream_url,
            gateway_url: format!("http://{gateway}/mcp"),
            watched,
            children,
            _dir: dir,
        })
    }
}

fn wait_for(ready: &std::path::Path) -> anyhow::Result<String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(address) = std::fs::read_to_string(ready) {
            if !address.is_empty() {
                return Ok(address);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{} did not appear within 30 s", ready.display())
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
