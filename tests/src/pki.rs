//! Private certificate authorities for TLS tests (rcgen): a CA written as a PEM file, and
//! certificates it issues for given names, each with its key, in a test's temp dir. Real X.509
//! that rustls, GnuTLS (rsyslog) and OpenSSL accept.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

/// A CA whose certificate is `<dir>/<name>.pem`.
pub struct Ca {
    pub cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA certificate");
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).expect("writing the CA certificate");
        Self {
            cert: path,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses): `(<dir>/<name>.pem,
    /// <dir>/<name>.key)`.
    pub fn issue(&self, dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("certificate params")
            .signed_by(&key, &self.issuer)
            .expect("certificate");
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("writing the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("writing the key");
        (cert_path, key_path)
    }
}
