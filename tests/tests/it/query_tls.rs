//! The query service serving TLS itself, with and without client certificates (mTLS): a private
//! CA made here (rcgen), a server certificate for 127.0.0.1, and the `verdict` CLI and a tonic
//! client connecting over `https://`. A plaintext client, a client that does not trust the CA,
//! and (with `client_ca`) a client without a certificate are all refused.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use verdict_proto::pb::{self, audit_query_client::AuditQueryClient};
use verdict_tests::audit_rows;
use verdict_tests::bins::cargo_bin;
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::query::{authed, QueryService, TOKEN};
use verdict_tests::ClickHouse;

/// How long a refused client may take to learn it (a plaintext client to a TLS port gets no
/// answer at all).
const REFUSAL_WAIT: Duration = Duration::from_secs(3);

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca_cert.pem());
        for (name, sans) in [
            ("server", vec!["127.0.0.1".to_owned()]),
            ("client", vec!["siem".to_owned()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(sans)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    fn tls_config(&self, client_ca: bool) -> String {
        let mut config = format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            self.path("server.pem"),
            self.path("server.key")
        );
        if client_ca {
            config += &format!("client_ca = {:?}\n", self.path("ca.pem"));
        }
        config
    }
}

async fn findings_over(channel: Channel) -> Result<usize, tonic::Status> {
    let mut client = AuditQueryClient::new(channel);
    let reply = client
        .list_findings(authed(pb::ListFindingsRequest::default(), TOKEN))
        .await?;
    Ok(reply.into_inner().findings.len())
}

async fn tls_channel(url: &str, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(url.to_owned())
        .unwrap()
        .timeout(REFUSAL_WAIT)
        .tls_config(tls)?
        .connect()
        .await
}

fn cli_findings(url: &str, extra: &[&str]) -> std::process::Output {
    Command::new(cargo_bin("verdict"))
        .args(["findings", "--query-url", url])
        .args(extra)
        .env("VERDICT_QUERY_TOKEN", TOKEN)
        .output_within(COMMAND_TIMEOUT)
        .expect("running verdict")
}

/// A query service serving TLS (requiring client certificates with `client_ca`) over a real,
/// empty ClickHouse.
async fn tls_service(client_ca: bool) -> (ClickHouse, Pki, QueryService) {
    let clickhouse = ClickHouse::start().expect("clickhouse");
    audit_rows::migrate(&clickhouse.client()).await.unwrap();
    let pki = Pki::new();
    let service = QueryService::start(&clickhouse.url(), None, &pki.tls_config(client_ca)).unwrap();
    (clickhouse, pki, service)
}

fn https(service: &QueryService) -> String {
    format!("https://127.0.0.1:{}", service.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_tls_and_refuses_what_it_must() {
    let (_clickhouse, pki, service) = tls_service(false).await;
    let url = https(&service);

    let trusting = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.read("ca.pem")));
    let channel = tls_channel(&url, trusting).await.expect("TLS handshake");
    assert_eq!(findings_over(channel).await.unwrap(), 0);

    // Plaintext gRPC to the TLS port fails; so does a client that does not trust the CA.
    let plain = Channel::from_shared(service.url())
        .unwrap()
        .timeout(REFUSAL_WAIT)
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            findings_over(channel).await.is_err(),
            "plaintext was served"
        );
    }
    let stranger =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.read("client.pem")));
    if let Ok(channel) = tls_channel(&url, stranger).await {
        assert!(
            findings_over(channel).await.is_err(),
            "untrusted server accepted"
        );
    }

    // The CLI over https:// with --ca-cert.
    let out = cli_findings(&url, &["--ca-cert", &pki.path("ca.pem"), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli_findings(&url, &[]);
    assert!(
        !out.status.success(),
        "the system roots do not trust a private CA"
    );
    assert_path_mentioned(&out, "query service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_ca_only_clients_with_a_certificate_get_in() {
    let (_clickhouse, pki, service) = tls_service(true).await;
    let url = https(&service);
    let ca = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.read("ca.pem")));

    if let Ok(channel) = tls_channel(&url, ca()).await {
        assert!(
            findings_over(channel).await.is_err(),
            "a client without a certificate was served"
        );
    }
    let identity = Identity::from_pem(pki.read("client.pem"), pki.read("client.key"));
    let channel = tls_channel(&url, ca().identity(identity)).await.unwrap();
    assert_eq!(findings_over(channel).await.unwrap(), 0);

    let out = cli_findings(
        &url,
        &[
            "--ca-cert",
            &pki.path("ca.pem"),
            "--client-cert",
            &pki.path("client.pem"),
            "--client-key",
            &pki.path("client.key"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The CLI's error names what it could not reach.
fn assert_path_mentioned(out: &std::process::Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(what), "stderr: {stderr}");
}

#[test]
fn a_missing_certificate_file_is_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let config = dir.path().join("query.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n[tls]\ncert = {:?}\nkey = {:?}\n[[tokens]]\nid = \"t\"\nsha256 = \"{}\"\n",
            missing.display().to_string(),
            missing.display().to_string(),
            verdict_service::credentials::digest(TOKEN)
        ),
    )
    .unwrap();
    let out = Command::new(cargo_bin("verdict-query"))
        .arg("--config")
        .arg(&config)
        .output_within(COMMAND_TIMEOUT)
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&missing.display().to_string())
            || stderr.contains(Path::new("nope.pem").to_str().unwrap()),
        "stderr: {stderr}"
    );
}
