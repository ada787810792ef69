//! Every policy in force is in the trail: a signed `PolicyLoaded` event before any decision
//! made under it.
//!
//! Decisions carry the policy's hash only. Without the text, "why was this call denied?" needs
//! the policy files kept somewhere else, and a replay cannot tell where the gateway restarted
//! (which empties its rate-limit windows). So the gateway records, when it starts (with or
//! without a policy) and on every reload, the policy's text (secret argument values as hashes,
//! see `verdict_policy::record`), its source path, and the pins in force: the lock file's hash,
//! every pinned fingerprint, and on a reload which pins changed — the trail of `verdict policy
//! pin` accepting a changed tool.

use crate::audit::{event, Audit, EventBuilder, RecordError, Recorder};
use std::path::Path;
use std::sync::Arc;
use verdict_policy::pin::LockFile;
use verdict_policy::record::{self, RELOAD, START};
use verdict_policy::Policy;
use verdict_proto::pb;

/// Records the policies the gateway loads.
#[derive(Clone)]
pub struct PolicyTrail {
    events: EventBuilder,
    recorder: Arc<Recorder>,
}

impl PolicyTrail {
    pub fn new(audit: &Audit) -> Self {
        Self {
            events: audit.events.clone(),
            recorder: Arc::clone(&audit.recorder),
        }
    }

    /// Journals that `policy` (`None`: no policy configured) from `source` is in force from now
    /// on; `before` is the lock file in force until now (`None` at start). Returns the seq.
    pub async fn record(
        &self,
        policy: Option<&Policy>,
        source: &Path,
        before: Option<&LockFile>,
    ) -> Result<u64, RecordError> {
        let body = event::policy_loaded(self.loaded(policy, source, before));
        self.recorder.record(&body).await
    }

    fn loaded(
        &self,
        policy: Option<&Policy>,
        source: &Path,
        before: Option<&LockFile>,
    ) -> pb::PolicyLoaded {
        let reason = match before {
            None => START,
            Some(_) => RELOAD,
        };
        let mut loaded = pb::PolicyLoaded {
            reason: reason.into(),
            source: source.display().to_string(),
            ..Default::default()
        };
        let Some(policy) = policy else {
            return loaded;
        };
        let text = record::for_trail(policy.text(), |key| self.events.is_sensitive(key));
        let lock = policy.lock();
        loaded.policy_sha256 = policy.sha256.to_vec();
        loaded.policy_text = text.text;
        loaded.redacted_arguments = text.redacted_arguments;
        if !lock.tools.is_empty() {
            loaded.lock_sha256 = lock.sha256().to_vec();
        }
        loaded.pins = lock
            .tools
            .iter()
            .map(|(tool, pinned)| pb::PinnedTool {
                tool: tool.clone(),
                sha256: hex::decode(&pinned.sha256).unwrap_or_default(),
            })
            .collect();
        loaded.repinned = before.map(|b| b.repinned(lock)).unwrap_or_default();
        loaded
    }
}
