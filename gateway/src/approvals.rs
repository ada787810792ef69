//! Held calls: a `require_approval` decision parks the call here until a human decides it or its
//! timeout passes.
//!
//! An approval is the held call itself, not a permission for future calls: deciding an id takes it
//! out of the registry (used once) and releases exactly the call that was held — its agent,
//! session, upstream, tool, canonical-arguments hash and policy hash are fixed when it is held and
//! shown to the approver, who may require the arguments hash to match what they reviewed. A
//! decided, expired or unknown id is simply not found, so nothing can be approved twice or
//! replayed onto another call.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;
use verdict_proto::pb;

/// A human's decision on a held call, already recorded as event `seq`.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub approved: bool,
    pub approver: String,
    pub reason: String,
    pub seq: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecideError {
    #[error("no pending approval {0} (decided, expired, or never existed)")]
    NotFound(String),
    #[error("approval {0} holds a call with other arguments than the ones reviewed")]
    ArgumentsDiffer(String),
}

struct Held {
    info: pb::PendingApproval,
    /// The `approval_requested` decision, from which the later steps' events are made.
    request: pb::Decision,
    resolve: oneshot::Sender<Resolution>,
}

#[derive(Default)]
pub struct Approvals {
    pending: Mutex<HashMap<String, Held>>,
}

/// A claimed approval: the held call's description, and the way to release it.
/// Dropped without [`Claimed::resolve`] (the approver's request was cancelled mid-decision), the
/// held call is released as refused, never left waiting.
pub struct Claimed {
    pub info: pb::PendingApproval,
    pub request: pb::Decision,
    resolve: oneshot::Sender<Resolution>,
}

impl Claimed {
    /// Releases the held call with `resolution` (a call whose agent went away just ignores it).
    pub fn resolve(self, resolution: Resolution) {
        let _ = self.resolve.send(resolution);
    }
}

impl Approvals {
    /// Parks a call; the receiver yields the human's decision.
    pub fn hold(
        &self,
        info: pb::PendingApproval,
        request: pb::Decision,
    ) -> oneshot::Receiver<Resolution> {
        let (resolve, decided) = oneshot::channel();
        let id = info.approval_id.clone();
        self.lock().insert(
            id,
            Held {
                info,
                request,
                resolve,
            },
        );
        decided
    }

    /// Pending approvals, oldest first.
    pub fn list(&self) -> Vec<pb::PendingApproval> {
        let mut list: Vec<_> = self.lock().values().map(|h| h.info.clone()).collect();
        list.sort_by_key(|i| i.requested_unix_nanos);
        list
    }

    /// Takes approval `id` out of the registry for deciding (once). With `reviewed_sha256`
    /// non-empty, the held call's arguments hash must equal it.
    pub fn claim(&self, id: &str, reviewed_sha256: &[u8]) -> Result<Claimed, DecideError> {
        let mut pending = self.lock();
        let held = pending
            .get(id)
            .ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
        if !reviewed_sha256.is_empty() && held.info.arguments_sha256 != reviewed_sha256 {
            return Err(DecideError::ArgumentsDiffer(id.to_owned()));
        }
        let held = pending.remove(id).expect("checked above");
        Ok(Claimed {
            info: held.info,
            request: held.request,
            resolve: held.resolve,
        })
    }

    /// Withdraws `id` (timeout, or the agent went away). False if someone claimed it first: its
    /// decision is on the way.
    pub fn withdraw(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.pending.lock().expect("approvals lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, sha: u8) -> pb::PendingApproval {
        pb::PendingApproval {
            approval_id: id.into(),
            arguments_sha256: vec![sha; 32],
            ..Default::default()
        }
    }

    #[test]
    fn an_approval_is_used_once_and_bound_to_its_arguments() {
        let approvals = Approvals::default();
        let mut decided = approvals.hold(info("a1", 1), pb::Decision::default());
        assert_eq!(approvals.list().len(), 1);
        assert_eq!(
            approvals.claim("a1", &[2; 32]).err(),
            Some(DecideError::ArgumentsDiffer("a1".into()))
        );
        let claimed = approvals.claim("a1", &[1; 32]).ok().unwrap();
        assert!(
            matches!(approvals.claim("a1", &[]), Err(DecideError::NotFound(_))),
            "used once"
        );
        assert!(!approvals.withdraw("a1"), "the timeout finds it claimed");
        claimed.resolve(Resolution {
            approved: true,
            approver: "alice".into(),
            reason: String::new(),
            seq: 9,
        });
        assert_eq!(decided.try_recv().unwrap().approver, "alice");
        assert!(approvals.list().is_empty());
    }
}
