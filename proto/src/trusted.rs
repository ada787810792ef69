//! Which public keys are trusted, and for which chains: the one type, config shape and loader
//! used by every verifier — the auditor, the query service's VerifyChain and `verdict verify`.
//!
//! One loader, so the same chain gets the same verdict everywhere: a key scoped to some chains
//! (`chains = [...]`) signs only those for all three, and an event it signs for another chain is
//! `key_not_allowed_for_chain` in the auditor, in VerifyChain and offline alike.
//!
//! In a config file (TOML) an entry is either a path (trusted for every chain) or a table:
//!
//! ```toml
//! trusted_keys = ["gw-1.pub", { path = "gw-2.pub", chains = ["gw-2"] }]
//! trusted_keys_dir = "keys/"   # every *.pub / *.pem in it, for every chain
//! ```
//!
//! A key is **revoked** from a time on with `{ path = "gw-1.pub", chains = ["gw-1"], revoked_from =
//! "2026-12-01T12:00:00Z" }` (RFC 3339): events it signs that claim a later time are
//! `revoked_key` findings, the ones before stay verifiable. A revoked entry must name its chains
//! (or say `trusted = false`, to revoke a key known only through a rotation): revoking never
//! trusts a key for every chain. The time is the event's own, which
//! its signer chose: a thief who backdates must still fork the chain at seqs already taken (a
//! `fork` finding) or append behind the genuine gateway's head, and the auditor's witness has
//! signed heads the genuine history is checked against.

use crate::envelope::SignedEvent;
use crate::keys::{KeyError, PublicKey};
use crate::verify::BreakKind;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Trusted public keys, each optionally restricted to the chains it may sign.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: HashMap<String, (PublicKey, Option<HashSet<String>>)>,
    /// key_id → the first event time (Unix nanoseconds) the key may no longer sign.
    revoked: HashMap<String, i64>,
}

impl TrustedKeys {
    /// `chains = None` lets the key sign any chain. Keys were checked for weakness when built.
    pub fn add(&mut self, key: PublicKey, chains: Option<Vec<String>>) {
        let chains = chains.map(|c| c.into_iter().collect());
        self.keys.insert(key.key_id().to_owned(), (key, chains));
    }

    /// Reads every key of `entries`, then every `*.pub` / `*.pem` file of `dir` (for any chain).
    pub fn load(entries: &[TrustedKey], dir: Option<&Path>) -> Result<Self, TrustError> {
        let mut keys = Self::default();
        for entry in entries {
            let (path, chains, revoked_from, trusted) = match entry {
                TrustedKey::Path(path) => (path, None, None, true),
                TrustedKey::Scoped {
                    path,
                    chains,
                    revoked_from,
                    trusted,
                } => (path, chains.clone(), revoked_from.as_deref(), *trusted),
            };
            let key = PublicKey::read_pem_file(path)?;
            if let Some(from) = revoked_from {
                // Revoking must never widen trust: a revoked key is trusted only for the chains
                // named (before its revocation), or not at all.
                if trusted && chains.is_none() {
                    return Err(TrustError::RevokedUnscoped(path.clone()));
                }
                keys.revoke(key.key_id(), parse_rfc3339(from)?);
            }
            if trusted {
                keys.add(key, chains);
            }
        }
        if let Some(dir) = dir {
            for path in key_files(dir)? {
                keys.add(PublicKey::read_pem_file(&path)?, None);
            }
        }
        Ok(keys)
    }

    /// Events signed with `key_id` whose time is `from_unix_nanos` or later are not trusted
    /// (`revoked_key`), whether the key is configured or was handed a chain by a rotation.
    pub fn revoke(&mut self, key_id: &str, from_unix_nanos: i64) {
        self.revoked.insert(key_id.to_owned(), from_unix_nanos);
    }

    /// Whether an event of `time_unix_nanos` signed with `key_id` falls after its revocation.
    pub(crate) fn revoked(&self, key_id: &str, time_unix_nanos: i64) -> Option<i64> {
        self.revoked
            .get(key_id)
            .copied()
            .filter(|from| time_unix_nanos >= *from)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether a key with this id is trusted (for any chain).
    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn key_for(&self, event: &SignedEvent) -> Result<&PublicKey, BreakKind> {
        let (key, chains) = self.keys.get(&event.key_id).ok_or(BreakKind::UnknownKey)?;
        match chains {
            Some(allowed) if !allowed.contains(&event.chain_id) => {
                Err(BreakKind::KeyNotAllowedForChain)
            }
            _ => Ok(key),
        }
    }
}

/// One configured key: a path (any chain), or a path with the only chains it may sign.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum TrustedKey {
    Path(PathBuf),
    Scoped {
        path: PathBuf,
        #[serde(default)]
        chains: Option<Vec<String>>,
        /// RFC 3339: events the key signs from this time on are `revoked_key` findings.
        #[serde(default)]
        revoked_from: Option<String>,
        /// `false`: only the revocation applies (for a key this verifier knows through a chain's
        /// `KeyRotation`, not from its configuration); the key is not trusted by this entry.
        #[serde(default = "trusted_by_default")]
        trusted: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("trusted key: {0}")]
    Key(#[from] KeyError),
    #[error("trusted key {0}: revoked_from needs `chains` (the chains it signed before) or `trusted = false`: revoking must not trust it for every chain")]
    RevokedUnscoped(PathBuf),
    #[error("revoked_from {0:?} is not an RFC 3339 time (e.g. 2026-12-01T12:00:00Z)")]
    RevokedFrom(String),
    #[error("reading the trusted keys directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn trusted_by_default() -> bool {
    true
}

/// Unix nanoseconds of an RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Result<i64, TrustError> {
    let bad = || TrustError::RevokedFrom(text.to_owned());
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    i64::try_from(time.unix_timestamp_nanos()).map_err(|_| bad())
}

/// The key files of `dir`, sorted.
fn key_files(dir: &Path) -> Result<Vec<PathBuf>, TrustError> {
    let io = |source| TrustError::Dir {
        path: dir.to_owned(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "pub" || e == "pem"));
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::write_keypair;
    use crate::{ChainVerifier, ChainWriter, SecretKey};

    #[test]
    fn entries_are_paths_or_scoped_tables() {
        #[derive(Deserialize)]
        struct Config {
            trusted_keys: Vec<TrustedKey>,
        }
        let config: Config = serde_json::from_str(
            r#"{"trusted_keys": ["a.pub", {"path": "b.pub", "chains": ["gw-2"]}, {"path": "c.pub"}]}"#,
        )
        .unwrap();
        let misspelt = serde_json::from_str::<Config>(
            r#"{"trusted_keys": [{"path": "b.pub", "chainz": ["x"]}]}"#,
        );
        assert!(
            misspelt.is_err(),
            "a misspelt scope must not widen the key's trust"
        );
        assert_eq!(
            config.trusted_keys,
            vec![
                TrustedKey::Path("a.pub".into()),
                TrustedKey::Scoped {
                    path: "b.pub".into(),
                    chains: Some(vec!["gw-2".into()]),
                    revoked_from: None,
                    trusted: true,
                },
                TrustedKey::Scoped {
                    path: "c.pub".into(),
                    chains: None,
                    revoked_from: None,
                    trusted: true,
                },
            ]
        );
    }

    #[test]
    fn a_scoped_key_signs_only_its_chains_and_a_directory_adds_keys_for_any() {
        let dir = tempfile::tempdir().unwrap();
        let scoped = SecretKey::generate();
        let (_, scoped_pub) = write_keypair(&dir.path().join("scoped"), &scoped, false).unwrap();
        let any = SecretKey::generate();
        write_keypair(&dir.path().join("many"), &any, false).unwrap();
        let keys = TrustedKeys::load(
            &[TrustedKey::Scoped {
                path: scoped_pub,
                chains: Some(vec!["gw-1".into()]),
                revoked_from: None,
                trusted: true,
            }],
            Some(&dir.path().join("many")),
        )
        .unwrap();
        assert_eq!(keys.len(), 2);
        let mut verifier = ChainVerifier::new(keys);
        let own = ChainWriter::new("gw-1", scoped.clone()).append(vec![1]);
        let other = ChainWriter::new("gw-2", scoped).append(vec![1]);
        assert!(verifier.verify(&own).finding.is_none());
        assert_eq!(
            verifier.verify(&other).finding.map(|f| f.kind),
            Some(BreakKind::KeyNotAllowedForChain)
        );
        let anywhere = ChainWriter::new("gw-3", any).append(vec![1]);
        assert!(verifier.verify(&anywhere).finding.is_none());
    }

    #[test]
    fn revoking_never_widens_trust() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let (_, public) = write_keypair(&dir.path().join("k"), &key, false).unwrap();
        let entry = |chains: Option<Vec<String>>, trusted| TrustedKey::Scoped {
            path: public.clone(),
            chains,
            revoked_from: Some("2026-12-01T00:00:00Z".into()),
            trusted,
        };
        let unscoped = TrustedKeys::load(&[entry(None, true)], None);
        assert!(matches!(unscoped, Err(TrustError::RevokedUnscoped(_))));
        let revoke_only = TrustedKeys::load(&[entry(None, false)], None).unwrap();
        assert!(!revoke_only.contains(key.public().key_id()));
        assert!(revoke_only
            .revoked(key.public().key_id(), i64::MAX)
            .is_some());
        let scoped = TrustedKeys::load(&[entry(Some(vec!["gw-1".into()]), true)], None).unwrap();
        assert!(scoped.contains(key.public().key_id()));
    }
}
