//! Policy replay: what a draft policy would have decided about the calls already recorded.
//!
//! Every recorded tool call is re-decided with the gateway's own engine (`verdict-policy`, the
//! same [`Policy::decide_partly`] the gateway's decisions reduce to), from the signed envelope
//! only: the agent, session, upstream, tool, risk class and arguments are read from the body bytes
//! the gateway signed, never from the row's columns, which someone with write access to
//! ClickHouse could change without detection. [`crate::replay_stream`] verifies each envelope
//! first; a row that does not verify is counted as untrusted and not replayed.
//!
//! What a recorded call cannot tell is never guessed. Arguments stored as a hash only (or values
//! redacted) leave argument rules open: such a call is *undecidable* when the rules those
//! arguments could select decide differently, and decided otherwise. A call a pin decided is
//! undecidable too (the catalog and lock file of that moment are not replayed).
//!
//! Rate limits are replayed in recorded time order per chain — one gateway, one limiter, as live
//! — with the recorded timestamps as the clock, so a window opens and closes where it did. A
//! gateway start (its `PolicyLoaded` event with reason `start`) empties that chain's windows, as
//! the restart emptied the gateway's; a reload keeps them (the gateway keeps its windows, counted
//! per rule id). Known limits: the tool's risk class is the one recorded (after the overrides of
//! the policy then in force); the rules see the tool's upstream name (the name agents saw is not
//! recorded where names collided).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use verdict_policy::rate::RateLimiter;
use verdict_policy::record::START;
use verdict_policy::{CallInfo, Decision, Policy, RiskName, PIN_RULE};
use verdict_proto::pb::{self, event_body::Kind, DecisionKind, Redaction};
use verdict_proto::SignedEvent;

/// What the gateway writes in place of a redacted value (`gateway/src/audit/event.rs`).
const REDACTED: &str = "[redacted]";

/// The recorded rulings a replay re-decides: a call's first decision (later approval steps and
/// outcomes follow from it).
pub const REPLAYED: [DecisionKind; 5] = [
    DecisionKind::Allow,
    DecisionKind::Deny,
    DecisionKind::Hide,
    DecisionKind::RateLimited,
    DecisionKind::ApprovalRequested,
];

/// One group of changes: recorded ruling, draft ruling (unspecified: undecidable), the draft's
/// rule, agent and tool.
type ChangeKey = (i32, i32, String, String, String);

/// A running replay of one draft over events given in per-chain seq order.
pub struct Replay {
    draft: Policy,
    samples: usize,
    clocks: HashMap<String, ChainClock>,
    /// Per chain: the seqs at which the gateway started (its windows emptied).
    starts: HashMap<String, BTreeSet<u64>>,
    changes: BTreeMap<ChangeKey, pb::ReplayChange>,
    summary: pb::ReplaySummary,
}

/// One chain's rate-limit state, with its recorded time mapped onto an [`Instant`].
struct ChainClock {
    rates: RateLimiter,
    base: Instant,
    first_nanos: i64,
    /// The seq of the last call replayed.
    last_seq: u64,
}

impl ChainClock {
    fn at(&self, nanos: i64) -> Instant {
        let since = u64::try_from(nanos.saturating_sub(self.first_nanos)).unwrap_or(0);
        self.base + Duration::from_nanos(since)
    }
}

/// A recorded call as the replay reads it from its decision.
struct Recorded<'a> {
    decision: &'a pb::Decision,
    kind: DecisionKind,
    arguments: serde_json::Value,
    /// Why some arguments are unknown, if they are.
    unknown: Option<&'static str>,
}

impl Replay {
    pub fn new(draft: Policy, samples: usize) -> Self {
        let summary = pb::ReplaySummary {
            policy_sha256: draft.sha256.to_vec(),
            ..Default::default()
        };
        Self {
            draft,
            samples,
            clocks: HashMap::new(),
            starts: HashMap::new(),
            changes: BTreeMap::new(),
            summary,
        }
    }

    /// Calls examined so far.
    pub fn calls(&self) -> u64 {
        self.summary.calls
    }

    /// A stored row whose envelope did not verify.
    pub fn untrusted(&mut self) {
        self.summary.untrusted += 1;
    }

    /// Notes a verified `PolicyLoaded` event of a replayed chain; a gateway start empties the
    /// chain's rate-limit windows for the calls after it. Give every one before the calls.
    pub fn policy_loaded(&mut self, event: &SignedEvent) {
        let Ok(pb::EventBody {
            kind: Some(Kind::PolicyLoaded(loaded)),
            ..
        }) = event.decode_body()
        else {
            return;
        };
        let starts = self.starts.entry(event.chain_id.clone()).or_default();
        if loaded.reason == START && starts.insert(event.seq) {
            self.summary.restarts += 1;
        }
    }

    /// Re-decides `event` if it records a call's first ruling (anything else is passed over).
    pub fn add(&mut self, event: &SignedEvent) {
        let Ok(pb::EventBody {
            time_unix_nanos,
            kind: Some(Kind::Decision(decision)),
        }) = event.decode_body()
        else {
            return;
        };
        let Some(recorded) = Recorded::read(&decision) else {
            return;
        };
        self.note_time(time_unix_nanos);
        let clock = self
            .clocks
            .entry(event.chain_id.clone())
            .or_insert_with(|| ChainClock {
                rates: RateLimiter::default(),
                base: Instant::now(),
                first_nanos: time_unix_nanos,
                last_seq: event.seq,
            });
        let restarted = self.starts.get(&event.chain_id).is_some_and(|starts| {
            starts
                .range(clock.last_seq.saturating_add(1)..)
                .next()
                .is_some_and(|&start| start < event.seq)
        });
        if restarted {
            clock.rates = RateLimiter::default();
        }
        clock.last_seq = event.seq;
        let now = clock.at(time_unix_nanos);
        let outcome = recorded.redecide(&self.draft, &[], &clock.rates, now);
        self.count(
            &recorded,
            outcome,
            format!("{}:{}", event.chain_id, event.seq),
        );
    }

    fn note_time(&mut self, nanos: i64) {
        let s = &mut self.summary;
        if s.first_unix_nanos == 0 || nanos < s.first_unix_nanos {
            s.first_unix_nanos = nanos;
        }
        s.last_unix_nanos = s.last_unix_nanos.max(nanos);
    }

    fn count(&mut self, recorded: &Recorded<'_>, outcome: Outcome, sample: String) {
        self.summary.calls += 1;
        let (draft, rule_id, detail) = match outcome {
            Ok(decision) if decision.ruling.kind() == recorded.kind => {
                self.summary.unchanged += 1;
                return;
            }
            Ok(decision) => {
                self.summary.changed += 1;
                (decision.ruling.kind(), decision.rule_id, String::new())
            }
            Err(undecided) => {
                self.summary.undecidable += 1;
                (
                    DecisionKind::Unspecified,
                    undecided.rule_ids,
                    undecided.detail,
                )
            }
        };
        let actor = recorded.decision.actor.as_ref();
        let agent = actor.map(|a| a.agent_id.clone()).unwrap_or_default();
        let tool = recorded.decision.tool.clone();
        let key = (recorded.kind as i32, draft as i32, rule_id, agent, tool);
        let change = self
            .changes
            .entry(key.clone())
            .or_insert_with(|| pb::ReplayChange {
                recorded: key.0,
                draft: key.1,
                rule_id: key.2,
                agent_id: key.3,
                tool: key.4,
                undecidable: draft == DecisionKind::Unspecified,
                detail,
                ..Default::default()
            });
        change.count += 1;
        if change.samples.len() < self.samples {
            change.samples.push(sample);
        }
    }

    /// The changes, grouped and ordered, and the summary.
    pub fn finish(self) -> (Vec<pb::ReplayChange>, pb::ReplaySummary) {
        (self.changes.into_values().collect(), self.summary)
    }
}

/// What the draft makes of one recorded call.
type Outcome = Result<Decision, Undecided>;

/// A call the draft cannot re-decide: the rules that could decide it, joined, and why the call
/// cannot tell.
struct Undecided {
    rule_ids: String,
    detail: String,
}

/// A policy to explain a call under, and the argument keys whose values its text does not hold
/// (redacted in a recorded policy: rules on them cannot tell).
pub struct Under<'a> {
    pub policy: &'a Policy,
    pub unknown: &'a [String],
}

/// `event` (a verified envelope) re-decided alone under `draft` (without one: the record only);
/// `None` when it records no tool call's first ruling.
pub fn explain(draft: Option<Under<'_>>, event: &SignedEvent) -> Option<pb::ReplayExplanation> {
    let body = event.decode_body().ok()?;
    let Some(Kind::Decision(decision)) = &body.kind else {
        return None;
    };
    let recorded = Recorded::read(decision)?;
    let mut explanation = pb::ReplayExplanation {
        chain_id: event.chain_id.clone(),
        seq: event.seq,
        time_unix_nanos: body.time_unix_nanos,
        recorded: Some(decision.clone()),
        ..Default::default()
    };
    let Some(Under {
        policy: draft,
        unknown,
    }) = draft
    else {
        return Some(explanation);
    };
    let (upstream, tool) = (&decision.upstream, &decision.tool);
    explanation.candidate_rules = draft
        .rules_for(upstream, [tool, tool])
        .into_iter()
        .map(str::to_owned)
        .collect();
    match recorded.redecide(draft, unknown, &RateLimiter::default(), Instant::now()) {
        Ok(decided) => {
            explanation.draft = decided.ruling.kind() as i32;
            explanation.rule_id = decided.rule_id;
            explanation.reason = decided.reason;
        }
        Err(undecided) => {
            explanation.rule_id = undecided.rule_ids;
            explanation.detail = undecided.detail;
        }
    }
    Some(explanation)
}

impl<'a> Recorded<'a> {
    /// The call a decision records, if it is a tool call's first ruling.
    fn read(decision: &'a pb::Decision) -> Option<Self> {
        let kind = DecisionKind::try_from(decision.decision).ok()?;
        if decision.method != "tools/call" || !REPLAYED.contains(&kind) {
            return None;
        }
        let stored = match decision.redaction() {
            Redaction::Full | Redaction::Redacted => {
                serde_json::from_str(&decision.arguments_json).ok()
            }
            Redaction::Hash | Redaction::Unspecified => None,
        };
        let (arguments, unknown) = match stored {
            Some(arguments) if decision.redaction() == Redaction::Redacted => {
                (arguments, Some("arguments redacted"))
            }
            Some(arguments) => (arguments, None),
            None => (
                serde_json::Value::Null,
                Some("arguments stored as a hash only"),
            ),
        };
        Some(Self {
            decision,
            kind,
            arguments,
            unknown,
        })
    }

    /// The call under `draft`, whose text does not hold the values it matches under the
    /// argument keys `unknown_in_draft`.
    fn redecide(
        &self,
        draft: &Policy,
        unknown_in_draft: &[String],
        rates: &RateLimiter,
        now: Instant,
    ) -> Outcome {
        if self.decision.rule_id == PIN_RULE {
            return Err(Undecided {
                rule_ids: PIN_RULE.into(),
                detail: "a tool pin decided it; pins are not replayed".into(),
            });
        }
        let actor = self.decision.actor.clone().unwrap_or_default();
        let call = CallInfo {
            agent: &actor.agent_id,
            session: &actor.session,
            upstream: &self.decision.upstream,
            tool: &self.decision.tool,
            exposed: &self.decision.tool,
            // Unrecorded only on events no tool call writes; `write` is the engine's class for a
            // tool nothing describes.
            risk: RiskName::from_class(self.decision.risk()).unwrap_or(RiskName::Write),
            arguments: &self.arguments,
            fingerprint: None,
        };
        // A value the draft's text does not hold matters only where the call has the argument
        // (or its arguments are not known).
        let hidden_in_draft = |key: &str| {
            unknown_in_draft.iter().any(|k| k == key)
                && (self.arguments.is_null() || self.arguments.get(key).is_some())
        };
        let unknown = |key: &str| {
            hidden_in_draft(key)
                || match (self.unknown, self.arguments.get(key)) {
                    (None, _) => false,
                    (Some(_), None) => self.arguments.is_null(),
                    (Some(_), Some(value)) => holds_redacted(value),
                }
        };
        draft
            .decide_partly(&call, unknown, rates, now)
            .map_err(|undecidable| Undecided {
                rule_ids: undecidable.rule_ids.join(" | "),
                detail: self
                    .unknown
                    .unwrap_or("the policy's values for these arguments are recorded as hashes")
                    .into(),
            })
    }
}

/// Whether a redacted value is (or contains) the redaction marker.
fn holds_redacted(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text == REDACTED,
        serde_json::Value::Array(items) => items.iter().any(holds_redacted),
        serde_json::Value::Object(map) => map.values().any(holds_redacted),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use verdict_proto::{ChainWriter, SecretKey};

    fn call(agent: &str, tool: &str, arguments: Option<&str>, kind: DecisionKind) -> pb::EventBody {
        let redaction = if arguments.is_some() {
            Redaction::Full
        } else {
            Redaction::Hash
        };
        pb::EventBody {
            time_unix_nanos: 1_750_000_000_000_000_000,
            kind: Some(Kind::Decision(pb::Decision {
                actor: Some(pb::Actor {
                    agent_id: agent.into(),
                    session: "s".into(),
                    ..Default::default()
                }),
                upstream: "memory".into(),
                method: "tools/call".into(),
                tool: tool.into(),
                risk: pb::RiskClass::Write as i32,
                redaction: redaction as i32,
                arguments_json: arguments.unwrap_or_default().into(),
                decision: kind as i32,
                rule_id: "recorded".into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn counts_changes_per_rule_agent_and_tool_and_never_guesses_hashed_arguments() {
        let draft = Policy::from_text(
            r#"{"version":"1","default":"allow","rules":[
            {"id":"no-secret","match":{"tool":"add","arguments":{"project":{"glob":"secret-*"}}},"action":"deny"},
            {"id":"reads","match":{"tool":"list"},"action":"allow","rate_limit":{"max":2,"window":3600}}]}"#,
        )
        .unwrap();
        let mut writer = ChainWriter::new("c", SecretKey::generate());
        let mut replay = Replay::new(draft, 1);
        let allow = DecisionKind::Allow;
        for body in [
            call("a", "add", Some(r#"{"project":"secret-x"}"#), allow),
            call("a", "add", Some(r#"{"project":"secret-y"}"#), allow),
            call("a", "add", Some(r#"{"project":"notes"}"#), allow),
            call("a", "add", None, allow),
            call("b", "list", None, allow),
            call("b", "list", None, allow),
            call("b", "list", None, allow),
            call("b", "list", None, DecisionKind::Deny),
        ] {
            replay.add(&writer.append(prost::Message::encode_to_vec(&body)));
        }
        let (changes, summary) = replay.finish();
        assert_eq!(
            (
                summary.calls,
                summary.unchanged,
                summary.changed,
                summary.undecidable
            ),
            (8, 3, 4, 1)
        );
        let got: Vec<_> = changes
            .iter()
            .map(|c| {
                (
                    c.recorded,
                    c.draft,
                    c.rule_id.as_str(),
                    c.agent_id.as_str(),
                    c.count,
                    c.samples.len(),
                )
            })
            .collect();
        let (a, d, r) = (
            allow as i32,
            DecisionKind::Deny as i32,
            DecisionKind::RateLimited as i32,
        );
        assert_eq!(
            got,
            [
                (a, 0, "no-secret | default", "a", 1, 1),
                (a, d, "no-secret", "a", 2, 1),
                (a, r, "reads", "b", 1, 1),
                (d, r, "reads", "b", 1, 1),
            ]
        );
        assert!(changes[0].undecidable);
        assert_eq!(changes[0].detail, "arguments stored as a hash only");
        assert_eq!(changes[1].samples, ["c:1"]);
    }

    #[test]
    fn a_gateway_start_empties_the_chains_windows_and_a_reload_does_not() {
        let draft = Policy::from_text(
            r#"{"version":"1","default":"allow","rules":[
            {"id":"reads","match":{"tool":"list"},"action":"allow","rate_limit":{"max":2,"window":3600}}]}"#,
        )
        .unwrap();
        let loaded = |reason: &str| pb::EventBody {
            time_unix_nanos: 1_750_000_000_000_000_000,
            kind: Some(Kind::PolicyLoaded(pb::PolicyLoaded {
                reason: reason.into(),
                ..Default::default()
            })),
        };
        let mut writer = ChainWriter::new("c", SecretKey::generate());
        let mut events = Vec::new();
        let mut append = |body: pb::EventBody| {
            events.push(writer.append(prost::Message::encode_to_vec(&body)));
        };
        // Live: two calls allowed, the third limited; a reload keeps the window (the fourth is
        // limited too); a restart empties it (the fifth is allowed).
        let (allow, limited) = (DecisionKind::Allow, DecisionKind::RateLimited);
        for kind in [allow, allow, limited] {
            append(call("b", "list", None, kind));
        }
        append(loaded(verdict_policy::record::RELOAD));
        append(call("b", "list", None, limited));
        append(loaded(START));
        append(call("b", "list", None, allow));
        let mut replay = Replay::new(draft, 1);
        for event in &events {
            replay.policy_loaded(event);
        }
        for event in &events {
            replay.add(event);
        }
        let (changes, summary) = replay.finish();
        assert_eq!((summary.calls, summary.unchanged), (5, 5), "{changes:?}");
        assert_eq!(summary.restarts, 1);
    }

    #[test]
    fn only_redacted_values_are_unknown() {
        assert!(holds_redacted(&json!({"token": "[redacted]"})));
        assert!(holds_redacted(&json!(["x", "[redacted]"])));
        assert!(!holds_redacted(&json!({"project": "notes"})));
    }
}
