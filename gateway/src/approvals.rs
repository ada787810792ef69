//! Held calls: a `require_approval` decision parks the call here until a human decides it or its
//! timeout passes.
//!
//! An approval is the held call itself, not a permission for future calls: deciding an id takes it
//! out of the registry (used once) and releases exactly the call that was held — its agent,
//! session, upstream, tool, canonical-arguments hash and policy hash are fixed when it is held and
//! shown to the approver, who may require the arguments hash to match what they reviewed. A
//! decided, expired or unknown id is simply not found, so nothing can be approved twice or
//! replayed onto another call.
//!
//! With `approval_webhook` set, people hear about held calls where they already are: a
//! Slack-compatible message (`text`, plus the structured `verdict` object) is posted when a call
//! is held (agent, tool, targets, arguments digest, rule, expiry, the command that approves it)
//! and again when it is approved, rejected or withdrawn. One task posts them in order, so a
//! decision is never announced before its hold. Notifications are a convenience, not the record:
//! a full queue or a webhook that stays down drops them (logged); the audit trail has the events.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use verdict_proto::pb;
use verdict_proto::Label;

/// Notifications waiting to be posted at most.
const NOTIFY_QUEUE: usize = 1024;
const NOTIFY_ATTEMPTS: u32 = 3;
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

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
    notifier: Option<Notifier>,
}

/// Posts notifications to the approval webhook, in order, from one task started on first use.
#[derive(Clone)]
struct Notifier {
    url: String,
    queue: Arc<OnceLock<mpsc::Sender<Value>>>,
}

impl Notifier {
    fn send(&self, message: Value) {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(NOTIFY_QUEUE);
            tokio::spawn(post_in_order(self.url.clone(), rx));
            tx
        });
        if queue.try_send(message).is_err() {
            tracing::warn!("approval notification dropped: the webhook queue is full");
        }
    }
}

async fn post_in_order(url: String, mut queue: mpsc::Receiver<Value>) {
    let client = reqwest::Client::builder()
        .timeout(NOTIFY_TIMEOUT)
        .build()
        .unwrap_or_default();
    while let Some(message) = queue.recv().await {
        for attempt in 1..=NOTIFY_ATTEMPTS {
            match client.post(&url).json(&message).send().await {
                Ok(response) if response.status().is_success() => break,
                Ok(response) => {
                    tracing::warn!(status = %response.status(), attempt, "approval webhook refused a notification")
                }
                Err(error) => tracing::warn!(%error, attempt, "approval webhook unreachable"),
            }
            tokio::time::sleep(Duration::from_millis(500) * attempt).await;
        }
    }
}

/// The notification of a held call.
fn held_message(info: &pb::PendingApproval, request: &pb::Decision) -> Value {
    let targets: Vec<String> = request
        .targets
        .iter()
        .map(|t| format!("{}={}", t.name, t.value))
        .collect();
    let command = format!("verdict approvals approve {}", info.approval_id);
    let text = format!(
        "Verdict: call held for approval. Agent {} wants {} on {} (targets: {}), rule {}. Approve with `{command}` (or reject) before it expires.",
        info.agent_id,
        info.tool,
        info.upstream,
        if targets.is_empty() { "none".into() } else { targets.join(", ") },
        info.rule_id,
    );
    json!({
        "text": text,
        "verdict": {
            "event": "approval_requested",
            "approval_id": info.approval_id,
            "agent": info.agent_id,
            "session": info.session,
            "upstream": info.upstream,
            "tool": info.tool,
            "risk": pb::RiskClass::label_of(info.risk),
            "targets": targets,
            "arguments_sha256": hex::encode(&info.arguments_sha256),
            "rule": info.rule_id,
            "reason": info.reason,
            "expires_unix_nanos": info.expires_unix_nanos,
            "approve_command": command,
            "chain_id": info.chain_id,
            "seq": info.seq,
        },
    })
}

/// The notification of a held call's end: `event` approved, rejected or withdrawn.
fn decided_message(info: &pb::PendingApproval, event: &str, by: &str, reason: &str) -> Value {
    json!({
        "text": format!("Verdict: approval {} for {} by agent {}: {event}{}{}", info.approval_id, info.tool, info.agent_id,
            if by.is_empty() { String::new() } else { format!(" by {by}") },
            if reason.is_empty() { String::new() } else { format!(" ({reason})") }),
        "verdict": {
            "event": event,
            "approval_id": info.approval_id,
            "agent": info.agent_id,
            "tool": info.tool,
            "approver": by,
            "reason": reason,
        },
    })
}

/// A claimed approval: the held call's description, and the way to release it.
/// Dropped without [`Claimed::resolve`] (the approver's request was cancelled mid-decision), the
/// held call is released as refused, never left waiting.
pub struct Claimed {
    pub info: pb::PendingApproval,
    pub request: pb::Decision,
    resolve: oneshot::Sender<Resolution>,
    notifier: Option<Notifier>,
}

impl Claimed {
    /// Releases the held call with `resolution` (a call whose agent went away just ignores it).
    pub fn resolve(self, resolution: Resolution) {
        if let Some(notifier) = &self.notifier {
            let event = if resolution.approved {
                "approved"
            } else {
                "rejected"
            };
            notifier.send(decided_message(
                &self.info,
                event,
                &resolution.approver,
                &resolution.reason,
            ));
        }
        let _ = self.resolve.send(resolution);
    }
}

impl Approvals {
    /// A registry that posts notifications to `webhook` when set.
    pub fn notifying(webhook: Option<String>) -> Self {
        Self {
            pending: Mutex::default(),
            notifier: webhook.map(|url| Notifier {
                url,
                queue: Arc::default(),
            }),
        }
    }

    /// Parks a call; the receiver yields the human's decision.
    pub fn hold(
        &self,
        info: pb::PendingApproval,
        request: pb::Decision,
    ) -> oneshot::Receiver<Resolution> {
        let (resolve, decided) = oneshot::channel();
        if let Some(notifier) = &self.notifier {
            notifier.send(held_message(&info, &request));
        }
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
            notifier: self.notifier.clone(),
        })
    }

    /// Withdraws `id` (timeout, or the agent went away). False if someone claimed it first: its
    /// decision is on the way.
    pub fn withdraw(&self, id: &str) -> bool {
        let Some(held) = self.lock().remove(id) else {
            return false;
        };
        if let Some(notifier) = &self.notifier {
            notifier.send(decided_message(
                &held.info,
                "withdrawn",
                "",
                "expired or cancelled",
            ));
        }
        true
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
