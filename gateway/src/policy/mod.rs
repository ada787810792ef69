//! The gateway's side of the policy: the engine (`verdict_policy`) over a file that may change.
//!
//! [`PolicyDecider`] is the gateway's [`Decider`] over the current policy, with its rate-limit
//! state, reloaded on file change or SIGHUP (an invalid new file is logged and the old policy
//! stays). The engine itself — parsing, matching, risk classes, rate limits, pins — is the
//! `verdict-policy` crate, re-exported here, so replays outside the gateway run the same code.

pub use verdict_policy::{
    file, pin, rate, risk, schema_check, Policy, PolicyLoadError, RateLimit, Verdict, PIN_RULE,
};

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

    /// Re-reads the file; on error the old policy stays and the error is returned.
    pub fn reload(&self) -> Result<bool, PolicyLoadError> {
        let policy = Policy::load(&self.path)?;
        let mut current = self.current.write().expect("policy lock");
        let changed = current.sha256 != policy.sha256 || current.lock() != policy.lock();
        *current = Arc::new(policy);
        Ok(changed)
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

    /// Reloads on SIGHUP and whenever the file's content changes (checked every second).
    pub fn watch(self: Arc<Self>, on_change: impl Fn() + Send + 'static) {
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
                match self.reload() {
                    Ok(true) => {
                        tracing::info!(path = %self.path.display(), policy_sha256 = %hex::encode(self.policy().sha256), pinned = self.policy().lock().tools.len(), "policy reloaded");
                        on_change();
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%error, "invalid policy; keeping the previous one")
                    }
                }
            }
        });
    }
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
