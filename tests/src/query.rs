//! The real `verdict-query` binary for tests: started against a test ClickHouse on a port the OS
//! chose (`listen = "127.0.0.1:0"`, reported through `--ready-file`), killed on drop, plus a
//! gRPC client and the test token.

use crate::bins::cargo_bin;
use crate::process::{OutputWithin, ServerProcess, COMMAND_TIMEOUT};
use crate::Result;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use tonic::transport::Channel;
use verdict_proto::pb::{self, audit_query_client::AuditQueryClient};

/// The query token the test service accepts (id `test`).
pub const TOKEN: &str = "test-query-token";
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct QueryService {
    pub port: u16,
    pub dir: tempfile::TempDir,
    process: ServerProcess,
}

impl QueryService {
    /// Starts `verdict-query` for the ClickHouse at `clickhouse_url`, trusting `public_key`
    /// (a PEM file) for `VerifyChain` on every chain. `extra` is appended to the TOML config
    /// (with no `public_key`, it may set `trusted_keys` itself).
    pub fn start(clickhouse_url: &str, public_key: Option<&Path>, extra: &str) -> Result<Self> {
        Self::start_with_env(clickhouse_url, public_key, extra, &[])
    }

    /// [`QueryService::start`] with environment overrides (`VERDICT_QUERY_…`).
    pub fn start_with_env(
        clickhouse_url: &str,
        public_key: Option<&Path>,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let program = cargo_bin("verdict-query");
        Self::spawn(&program, clickhouse_url, public_key, extra, env)
    }

    /// Another build of `verdict-query` (`program`), to compare with this one on the same data.
    pub fn start_program(program: &Path, clickhouse_url: &str) -> Result<Self> {
        Self::spawn(program, clickhouse_url, None, "", &[])
    }

    fn spawn(
        program: &Path,
        clickhouse_url: &str,
        public_key: Option<&Path>,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = public_key
            .map(|p| format!("trusted_keys = [{:?}]\n", p.display().to_string()))
            .unwrap_or_default();
        let config = format!(
            "listen = \"127.0.0.1:0\"\n\
             {keys}\
             {extra}\n\
             [clickhouse]\nurl = \"{clickhouse_url}\"\n\
             [[tokens]]\nid = \"test\"\nsha256 = \"{}\"\n",
            verdict_service::credentials::digest(TOKEN)
        );
        let path = dir.path().join("query.toml");
        std::fs::write(&path, config).expect("writing query.toml");
        let ready = dir.path().join("ready");
        let mut command = Command::new(program);
        command
            .arg("--config")
            .arg(&path)
            .arg("--ready-file")
            .arg(&ready)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn");
        let mut process =
            ServerProcess::spawn("verdict-query", command, dir.path().join("query.log"))?;
        let mut port = 0;
        process.wait_ready(START_TIMEOUT, || {
            port = std::fs::read_to_string(&ready)
                .ok()
                .and_then(|a| a.rsplit(':').next().and_then(|p| p.trim().parse().ok()))
                .unwrap_or(0);
            port != 0
        })?;
        Ok(Self { port, dir, process })
    }

    /// [`Self::start`] for `Follow` tests: trusting `public_key`, looking for new rows every
    /// 50 ms while a follower is caught up.
    pub fn following(clickhouse_url: &str, public_key: &Path) -> Self {
        Self::start(
            clickhouse_url,
            Some(public_key),
            "[limits]\nfollow_poll_millis = 50\n",
        )
        .expect("verdict-query")
    }

    /// `http://127.0.0.1:PORT`, for `--query-url` and tonic.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn client(&self) -> AuditQueryClient<Channel> {
        AuditQueryClient::connect(self.url())
            .await
            .expect("connecting to verdict-query")
            .max_decoding_message_size(64 << 20)
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail(50)
    }
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ASCII token"),
    );
    request
}

/// `VerifyChain` over the whole of `chain_id`, as the test token.
pub async fn verify_whole_chain(
    client: &mut AuditQueryClient<Channel>,
    chain_id: &str,
) -> pb::VerifyChainReport {
    client
        .verify_chain(authed(
            pb::VerifyChainRequest {
                chain_id: chain_id.into(),
                from_seq: 0,
                to_seq: 0,
            },
            TOKEN,
        ))
        .await
        .expect("VerifyChain")
        .into_inner()
}

/// The first page of findings, as the test token.
pub async fn findings(client: &mut AuditQueryClient<Channel>) -> Vec<pb::Finding> {
    client
        .list_findings(authed(pb::ListFindingsRequest::default(), TOKEN))
        .await
        .expect("ListFindings")
        .into_inner()
        .findings
}

/// `WhoTried` with `filter`, as the test token.
pub async fn who_tried(
    client: &mut AuditQueryClient<Channel>,
    filter: pb::EventFilter,
    grouped: bool,
    limit: u32,
) -> pb::WhoTriedResponse {
    client
        .who_tried(authed(
            pb::WhoTriedRequest {
                filter: Some(filter),
                grouped,
                limit,
            },
            TOKEN,
        ))
        .await
        .expect("WhoTried")
        .into_inner()
}

/// A `ReplayPolicy` stream read to its end, as the test token: the changes and the summary.
pub async fn replay_policy(
    client: &mut AuditQueryClient<Channel>,
    request: pb::ReplayPolicyRequest,
) -> (Vec<pb::ReplayChange>, pb::ReplaySummary) {
    let mut stream = client
        .replay_policy(authed(request, TOKEN))
        .await
        .expect("ReplayPolicy")
        .into_inner();
    let mut changes = Vec::new();
    while let Some(message) = stream.message().await.expect("a replay message") {
        match message.kind {
            Some(pb::replay_message::Kind::Change(change)) => changes.push(change),
            Some(pb::replay_message::Kind::Summary(summary)) => return (changes, summary),
            _ => {}
        }
    }
    panic!("the replay stream ended without its summary")
}

/// Runs the `verdict` CLI against `service` with the test token.
pub fn verdict_cli(args: &[&str], service: &QueryService) -> Output {
    Command::new(cargo_bin("verdict"))
        .args(args)
        .env("VERDICT_QUERY_URL", service.url())
        .env("VERDICT_QUERY_TOKEN", TOKEN)
        .output_within(COMMAND_TIMEOUT)
        .expect("running verdict")
}
