//! Ed25519 keys, their fingerprints and their files.
//!
//! Key files are PEM: the private key as PKCS#8 (`-----BEGIN PRIVATE KEY-----`), the public key as
//! SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`), the formats `openssl pkey` reads and
//! writes (the private key as PKCS#8 v1, which OpenSSL 3.0 reads too), so a third party needs no Verdict code to inspect them. Private key files are created
//! with mode 0600 and never overwritten unless asked. Secret material is never formatted: the
//! `Debug` impl of [`SecretKey`] prints only the key id.

use crate::hash::sha256;
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// File names written by [`write_keypair`].
pub const PRIVATE_KEY_FILE: &str = "verdict.key";
pub const PUBLIC_KEY_FILE: &str = "verdict.pub";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists { path: PathBuf },
    #[error("{path}: not a valid Ed25519 {what} PEM file ({reason})")]
    BadFile {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("public key must be 32 bytes, got {0}")]
    BadLength(usize),
    #[error("public key is not a valid Ed25519 point")]
    BadPoint,
    #[error("public key {key_id} is a weak (small-order) key and cannot be trusted")]
    Weak { key_id: String },
}

/// A signing key. Cloning is deliberate and rare (one per chain writer).
#[derive(Clone)]
pub struct SecretKey {
    key: SigningKey,
    public: PublicKey,
}

impl SecretKey {
    pub fn generate() -> Self {
        Self::from_seed(&SigningKey::generate(&mut rand_core::OsRng).to_bytes())
    }

    /// A key from its 32-byte seed (RFC 8032 private key). Used by golden vectors and tests.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let public = PublicKey::from_verifying_key(key.verifying_key());
        Self { key, public }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    pub fn read_pem_file(path: &Path) -> Result<Self, KeyError> {
        let text = read(path)?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::BadFile {
            path: path.to_owned(),
            what: "private key",
            reason: e.to_string(),
        })?;
        Ok(Self::from_seed(&key.to_bytes()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public.key_id())
    }
}

/// A verifying key with its fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    key_id: String,
}

impl PublicKey {
    fn from_verifying_key(key: VerifyingKey) -> Self {
        let key_id = key_id_of(key.as_bytes());
        Self { key, key_id }
    }

    /// A public key from its raw 32 bytes; rejects invalid points and weak keys, so the batch
    /// verifier (which does not check weakness) only ever sees keys checked here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let raw: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::BadLength(bytes.len()))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::BadPoint)?;
        Self::checked(key)
    }

    fn checked(key: VerifyingKey) -> Result<Self, KeyError> {
        let public = Self::from_verifying_key(key);
        if key.is_weak() {
            return Err(KeyError::Weak {
                key_id: public.key_id,
            });
        }
        Ok(public)
    }

    pub fn read_pem_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read(path)?).map_err(|reason| KeyError::BadFile {
            path: path.to_owned(),
            what: "public key",
            reason,
        })
    }

    /// Parses SubjectPublicKeyInfo PEM; the error is a human-readable reason.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        let key = VerifyingKey::from_public_key_pem(text).map_err(|e| e.to_string())?;
        Self::checked(key).map_err(|e| e.to_string())
    }

    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("encoding a 32-byte key into SPKI cannot fail")
    }

    /// Lowercase hex of the first 8 bytes of SHA-256 of the raw public key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Strict single verification (rejects non-canonical and small-order signatures).
    pub fn verify_strict(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id)
    }
}

/// The key id of raw public key bytes.
pub fn key_id_of(public: &[u8; 32]) -> String {
    hex::encode(&sha256(public)[..8])
}

/// Writes `verdict.key` (PKCS#8 PEM, mode 0600) and `verdict.pub` (SPKI PEM, mode 0644) into
/// `dir`, creating it if needed. Refuses to replace existing files unless `force` is set.
pub fn write_keypair(
    dir: &Path,
    key: &SecretKey,
    force: bool,
) -> Result<(PathBuf, PathBuf), KeyError> {
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    if !force {
        for path in [&private_path, &public_path] {
            if path.exists() {
                return Err(KeyError::Exists { path: path.clone() });
            }
        }
    }
    // PKCS#8 v1 (RFC 8410: the seed only). The v2 form with the public key embedded is what
    // `SigningKey::to_pkcs8_pem` writes, and OpenSSL 3.0/3.1 `openssl pkey` cannot read it.
    let private_pem = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .expect("encoding a 32-byte seed into PKCS#8 cannot fail");
    write_file(&private_path, private_pem.as_bytes(), 0o600)?;
    write_file(&public_path, key.public.to_pem().as_bytes(), 0o644)?;
    Ok((private_path, public_path))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    // Remove first so an existing file's looser mode is never inherited by `--force`.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keypair_files_round_trip_with_private_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let (private, public) = write_keypair(dir.path(), &key, false).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let read_back = SecretKey::read_pem_file(&private).unwrap();
        assert_eq!(read_back.public(), key.public());
        assert_eq!(&PublicKey::read_pem_file(&public).unwrap(), key.public());
        assert_eq!(key.public().key_id().len(), 16);
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let first = SecretKey::generate();
        write_keypair(dir.path(), &first, false).unwrap();
        let err = write_keypair(dir.path(), &SecretKey::generate(), false).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        let kept = SecretKey::read_pem_file(&dir.path().join(PRIVATE_KEY_FILE)).unwrap();
        assert_eq!(kept.public(), first.public());
        write_keypair(dir.path(), &SecretKey::generate(), true).unwrap();
    }

    #[test]
    fn rejects_wrong_lengths_and_weak_keys() {
        assert!(matches!(
            PublicKey::from_bytes(&[0; 31]),
            Err(KeyError::BadLength(31))
        ));
        // The identity point (y = 1) is a small-order point.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            PublicKey::from_bytes(&identity),
            Err(KeyError::Weak { .. })
        ));
    }

    #[test]
    fn debug_never_prints_secret_material() {
        let key = SecretKey::from_seed(&[7; 32]);
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("SecretKey({})", key.public().key_id()));
    }
}
