//! Syslog over TLS (RFC 5425): the receiver is authenticated against the CA the destination
//! names, and only that CA, never the system's roots: a SIEM's collector usually has a
//! certificate from the organisation's own CA, and trusting every public CA as well would let
//! anyone with a public certificate for the name receive the trail. rustls with the ring
//! provider, as the query service's TLS.

use crate::config::SyslogTls;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.ca {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("tls.server_name {0:?} is not a DNS name or IP address")]
    ServerName(String),
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS client for one destination: its trusted CA and the name the receiver must prove.
pub struct TlsClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl TlsClient {
    pub fn new(settings: &SyslogTls) -> Result<Self, TlsError> {
        let ca_error = |reason: String| TlsError::Ca {
            path: settings.ca.clone(),
            reason,
        };
        let mut roots = RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(&settings.ca).map_err(|e| ca_error(e.to_string()))?
        {
            let cert = cert.map_err(|e| ca_error(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(ca_error("no certificate in the file".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(settings.server_name.clone())
            .map_err(|_| TlsError::ServerName(settings.server_name.clone()))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The TLS handshake over `tcp`; fails when the receiver's certificate is not signed by the
    /// CA or not issued for the name.
    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.server_name.clone(), tcp).await
    }
}
