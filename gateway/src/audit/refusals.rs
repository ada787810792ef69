//! Refusals of strangers, counted rather than journaled one by one.
//!
//! A request refused before anyone was authenticated (no or unknown API key, a non-local Origin,
//! a bad admin token) costs a stranger nothing to send. Journaling each as a signed, fsynced
//! event let one client without a key fill the journal's disk, after which the fail-closed gateway
//! refused every agent. So such refusals are tallied here in memory — per source address and
//! reason, with first and last time seen — and the recorder journals **one** signed
//! `DECISION_KIND_REFUSED` event per interval with the tallies ([`RefusalLedger::take_event`]).
//!
//! Memory is bounded: at most [`MAX_TALLIES`] (source, reason) tallies per interval; refusals from
//! further sources are counted under the source `other`. A source refused more than
//! `per_source_limit` times within one interval is answered with HTTP 429 and the connection is
//! closed ([`Admission::Throttled`]); it is still counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use verdict_proto::pb::{self, event_body::Kind};

/// (source, reason) tallies kept per interval; past it, new sources count as `other`.
pub const MAX_TALLIES: usize = 1024;
/// Sources named as targets of the aggregate event (the busiest first).
const MAX_TARGET_SOURCES: usize = 32;

/// Why a stranger's request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalReason {
    NoKey,
    UnknownKey,
    Origin,
    AdminToken,
}

impl RefusalReason {
    pub fn rule_id(self) -> &'static str {
        match self {
            Self::NoKey | Self::UnknownKey => "gateway.auth",
            Self::Origin => "gateway.origin",
            Self::AdminToken => "admin.auth",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Self::NoKey => "authentication failed: no bearer API key",
            Self::UnknownKey => "authentication failed: unknown API key",
            Self::Origin => "request from a non-local Origin (DNS rebinding guard)",
            Self::AdminToken => "admin API: missing or unknown admin token",
        }
    }

    /// The label used in metrics, e.g. `unknown_key`.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoKey => "no_key",
            Self::UnknownKey => "unknown_key",
            Self::Origin => "origin",
            Self::AdminToken => "admin_token",
        }
    }
}

/// What to do with a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Refuse it as usual (401, 403, UNAUTHENTICATED).
    Refuse,
    /// The source is over its limit for this interval: 429, and close the connection.
    Throttled,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    count: u64,
    first: i64,
    last: i64,
}

#[derive(Debug, Default)]
struct Interval {
    /// `None` is every source past [`MAX_TALLIES`].
    tallies: HashMap<(Option<IpAddr>, RefusalReason), Tally>,
    per_source: HashMap<IpAddr, u64>,
    started: i64,
}

/// The tallies of the current interval.
#[derive(Debug)]
pub struct RefusalLedger {
    interval: Mutex<Interval>,
    per_source_limit: u64,
}

impl RefusalLedger {
    pub fn new(per_source_limit: u64) -> Self {
        Self {
            interval: Mutex::new(Interval {
                started: verdict_proto::now_unix_nanos(),
                ..Default::default()
            }),
            per_source_limit,
        }
    }

    /// Counts one refusal of `source`.
    pub fn note(&self, source: IpAddr, reason: RefusalReason) -> Admission {
        let now = verdict_proto::now_unix_nanos();
        let mut interval = self.interval.lock().expect("refusal lock");
        let tracked = interval.tallies.len() < MAX_TALLIES
            || interval.tallies.contains_key(&(Some(source), reason));
        let key = (tracked.then_some(source), reason);
        interval
            .tallies
            .entry(key)
            .and_modify(|t| {
                t.count += 1;
                t.last = now;
            })
            .or_insert(Tally {
                count: 1,
                first: now,
                last: now,
            });
        if !tracked {
            return Admission::Refuse;
        }
        let seen = interval.per_source.entry(source).or_default();
        *seen += 1;
        if *seen > self.per_source_limit {
            Admission::Throttled
        } else {
            Admission::Refuse
        }
    }

    /// Starts a new throttling interval but keeps the tallies, for when the journal has no room
    /// to spare for them: they go into the first aggregate event written after.
    pub fn carry_over(&self) {
        self.interval
            .lock()
            .expect("refusal lock")
            .per_source
            .clear();
    }

    /// The aggregate event of the interval that ends now (`None` if nothing was refused), and a
    /// fresh interval.
    pub fn take_event(&self) -> Option<pb::EventBody> {
        let now = verdict_proto::now_unix_nanos();
        let ended = {
            let mut interval = self.interval.lock().expect("refusal lock");
            std::mem::replace(
                &mut *interval,
                Interval {
                    started: now,
                    ..Default::default()
                },
            )
        };
        if ended.tallies.is_empty() {
            return None;
        }
        let seconds = (now - ended.started).max(0) / 1_000_000_000;
        Some(aggregate(ended.tallies, seconds))
    }
}

/// The `DECISION_KIND_REFUSED` body for `tallies`, the busiest sources first.
fn aggregate(
    tallies: HashMap<(Option<IpAddr>, RefusalReason), Tally>,
    seconds: i64,
) -> pb::EventBody {
    let mut counts: Vec<_> = tallies.into_iter().collect();
    counts.sort_by(|(ka, a), (kb, b)| b.count.cmp(&a.count).then(ka.cmp(kb)));
    let total: u64 = counts.iter().map(|(_, t)| t.count).sum();
    let mut by_reason: Vec<(RefusalReason, u64)> = Vec::new();
    for ((_, reason), tally) in &counts {
        match by_reason.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += tally.count,
            None => by_reason.push((*reason, tally.count)),
        }
    }
    let summary: Vec<String> = by_reason
        .iter()
        .map(|(reason, n)| format!("{n} × {}", reason.text()))
        .collect();
    let source_name = |source: &Option<IpAddr>| source.map_or("other".into(), |ip| ip.to_string());
    let mut sources: Vec<String> = Vec::new();
    for ((source, _), _) in &counts {
        let name = source_name(source);
        if sources.len() < MAX_TARGET_SOURCES && !sources.contains(&name) {
            sources.push(name);
        }
    }
    let decision = pb::Decision {
        actor: Some(pb::Actor {
            transport: "http".into(),
            ..Default::default()
        }),
        decision: pb::DecisionKind::Refused as i32,
        rule_id: "gateway.refusals".into(),
        reason: format!(
            "{total} requests refused without authentication in {seconds} s: {}",
            summary.join("; ")
        ),
        targets: sources
            .into_iter()
            .map(|value| pb::Target {
                name: "source".into(),
                value,
            })
            .collect(),
        refusals: counts
            .iter()
            .map(|((source, reason), tally)| pb::RefusalCount {
                source: source_name(source),
                rule_id: reason.rule_id().into(),
                reason: reason.text().into(),
                count: tally.count,
                first_unix_nanos: tally.first,
                last_unix_nanos: tally.last,
            })
            .collect(),
        ..Default::default()
    };
    pb::EventBody {
        time_unix_nanos: verdict_proto::now_unix_nanos(),
        kind: Some(Kind::Decision(decision)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn refusals(body: &pb::EventBody) -> &pb::Decision {
        match &body.kind {
            Some(Kind::Decision(d)) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn many_refusals_make_one_bounded_event() {
        let ledger = RefusalLedger::new(u64::MAX);
        let a: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..10_000 {
            ledger.note(a, RefusalReason::NoKey);
        }
        for i in 0..5_000u32 {
            ledger.note(IpAddr::from(i.to_be_bytes()), RefusalReason::UnknownKey);
        }
        let body = ledger.take_event().unwrap();
        let d = refusals(&body);
        assert_eq!(d.decision, pb::DecisionKind::Refused as i32);
        assert_eq!(d.refusals.iter().map(|r| r.count).sum::<u64>(), 15_000);
        assert_eq!(d.refusals.len(), MAX_TALLIES + 1, "the rest count as other");
        assert_eq!(d.refusals[0].source, "10.0.0.1");
        assert_eq!(d.refusals[0].count, 10_000);
        assert!(d.refusals.iter().any(|r| r.source == "other"));
        assert_eq!(d.targets.len(), MAX_TARGET_SOURCES);
        assert!(
            d.reason.starts_with("15000 requests refused"),
            "{}",
            d.reason
        );
        assert!(body.encoded_len() < 128 << 10);
        assert!(ledger.take_event().is_none(), "a fresh interval");
    }

    #[test]
    fn a_source_past_its_limit_is_throttled_until_the_next_interval() {
        let ledger = RefusalLedger::new(3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let seen: Vec<_> = (0..5)
            .map(|_| ledger.note(a, RefusalReason::NoKey))
            .collect();
        assert_eq!(seen[2], Admission::Refuse);
        assert_eq!(seen[3], Admission::Throttled);
        assert_eq!(ledger.note(b, RefusalReason::Origin), Admission::Refuse);
        ledger.carry_over();
        assert_eq!(ledger.note(a, RefusalReason::NoKey), Admission::Refuse);
        let body = ledger.take_event().unwrap();
        assert_eq!(
            refusals(&body).refusals[0].count,
            6,
            "carried over, not lost"
        );
    }
}
