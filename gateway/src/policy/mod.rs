//! The gateway's side of the policy: the engine (`verdict_policy`) over a file that may change.
//!
//! [`PolicyDecider`] is the gateway's [`Decider`] over the current policy, with its rate-limit
//! state, reloaded on file change or SIGHUP (an invalid new file is logged and the old policy
//! stays). The engine itself — parsing, matching, risk classes, rate limits, pins — is the
//! `verdict-policy` crate, re-exported here, so replays outside the gateway run the same code.
//!
//! Every policy the gateway decides under is in the trail first ([`PolicyTrail`]): a reloaded
//! policy (or lock file) is installed only once its `PolicyLoaded` event is journaled; one the
//! journal refuses is not installed (the old one stays, and the reload is tried again).

pub use verdict_policy::{
    file, pin, rate, risk, schema_check, Policy, PolicyLoadError, RateLimit, Verdict, PIN_RULE,
};

mod trail;
pub use trail::PolicyTrail;

use crate::decision::{CallInfo, Decider, Decision};
use pin::{Fingerprint, LockFile};
use rate::RateLimiter;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How often the policy file's modification time is checked.
const RELOAD_POLL: Duration = Duration::from_secs(1);

/// The gateway's decider over a policy file that may change while the gateway runs.
#[derive(Debug)]
pub struct PolicyDecider {
    path: PathBuf,
    current: RwLock<Arc<Policy>>,
    /// SHA-256 of the file content last examined, valid or not: a change is a new hash, so a
    /// half-written file followed by the finished one within the same second is still seen.
    examined: std::sync::Mutex<Option<[u8; 32]>>,
    rates: RateLimiter,
}

impl PolicyDecider {
    pub fn load(path: &Path) -> Result<Self, PolicyLoadError> {
        let policy = Policy::load(path)?;
        let decider = Self {
            path: path.to_owned(),
            examined: std::sync::Mutex::new(None),
            current: RwLock::new(Arc::new(policy)),
            rates: RateLimiter::default(),
        };
        decider.content_changed();
        Ok(decider)
    }

    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.current.read().expect("policy lock"))
    }

    /// Where the policy is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file: the new policy when it or its lock file differs from the current one
    /// (not installed yet, see [`Self::install`]).
    pub fn changed(&self) -> Result<Option<Policy>, PolicyLoadError> {
        let policy = Policy::load(&self.path)?;
        let current = self.policy();
        let changed = current.sha256 != policy.sha256 || current.lock() != policy.lock();
        Ok(changed.then_some(policy))
    }

    /// Decides later calls under `policy` (rate-limit windows are kept: they count per rule id).
    pub fn install(&self, policy: Policy) {
        *self.current.write().expect("policy lock") = Arc::new(policy);
    }

    /// Reloads a changed policy once `trail` has recorded it; `Ok(false)` when nothing changed.
    async fn reload(&self, trail: &PolicyTrail) -> Result<bool, ReloadError> {
        let Some(policy) = self.changed()? else {
            return Ok(false);
        };
        let before = self.policy();
        trail
            .record(Some(&policy), &self.path, Some(before.lock()))
            .await?;
        self.install(policy);
        Ok(true)
    }

    /// True when the content of the policy file or its lock file differs from what was last
    /// examined (and notes it).
    fn content_changed(&self) -> bool {
        let hash = std::fs::read(&self.path).ok().map(|mut bytes| {
            bytes.extend(std::fs::read(LockFile::path_for(&self.path)).unwrap_or_default());
            Sha256::digest(&bytes).into()
        });
        let mut examined = self.examined.lock().expect("examined lock");
        let changed = *examined != hash;
        *examined = hash;
        changed
    }

    /// Reloads on SIGHUP and whenever the file's content changes (checked every second),
    /// recording each new policy in `trail` before any call is decided under it.
    pub fn watch(self: Arc<Self>, trail: PolicyTrail, on_change: impl Fn() + Send + 'static) {
        tokio::spawn(async move {
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .expect("SIGHUP handler");
            loop {
                let signalled = tokio::select! {
                    _ = hangup.recv() => true,
                    _ = tokio::time::sleep(RELOAD_POLL) => false,
                };
                if !self.content_changed() && !signalled {
                    continue;
                }
                match self.reload(&trail).await {
                    Ok(true) => {
                        tracing::info!(path = %self.path.display(), policy_sha256 = %hex::encode(self.policy().sha256), pinned = self.policy().lock().tools.len(), "policy reloaded");
                        on_change();
                    }
                    Ok(false) => {}
                    Err(ReloadError::Invalid(error)) => {
                        tracing::error!(%error, "invalid policy; keeping the previous one")
                    }
                    Err(ReloadError::Unrecorded(error)) => {
                        tracing::error!(%error, "the new policy could not be recorded; keeping the previous one until it can");
                        // Examined again at the next poll.
                        *self.examined.lock().expect("examined lock") = None;
                    }
                }
            }
        });
    }
}

/// Why a changed policy was not installed.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] PolicyLoadError),
    #[error(transparent)]
    Unrecorded(#[from] crate::audit::RecordError),
}

impl Decider for PolicyDecider {
    fn decide(&self, call: &CallInfo<'_>) -> Decision {
        self.policy().decide(call, &self.rates, Instant::now())
    }

    fn hides(&self, tool: &str, exposed: &str) -> bool {
        self.policy().hides(&[tool, exposed])
    }

    fn pinned(&self, upstream: &str, tool: &str) -> Option<Fingerprint> {
        let policy = self.policy();
        policy
            .pins()
            .pins(upstream, tool)
            .then(|| policy.lock().get(upstream, tool).cloned())
            .flatten()
    }
}

#[cfg(test)]
mod tests;
