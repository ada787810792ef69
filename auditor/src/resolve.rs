//! Deciding what to store for an event that is not simply the chain's next one, against the rows
//! already stored: the rule that keeps redelivery harmless without hiding a replay or a fork.
//!
//! The `events` table is keyed by `(chain_id, seq)` and a later row replaces an earlier one, so
//! the auditor never writes a *different* envelope at a key that holds a row: a fork or
//! a replay goes to `findings` only, with the offending bytes as evidence.
//!
//! The rule, for a trusted event placed at or below the chain head, given the row stored
//! at its `(chain_id, seq)` — in ClickHouse or earlier in the same batch:
//!
//! 1. **Redelivery** — the stored row has the same hash *and* the same Kafka partition and offset:
//!    this very message was stored before (a crash or rebalance between insert and offset
//!    commit). Nothing is written, no finding.
//! 2. **Replay** — same hash, different partition/offset: the same event was sent again.
//! 3. **Fork** — a row with a different hash is stored there.
//! 4. Nothing stored there: a **late arrival**. The verifier has already classified it
//!    when it remembered the gap (`reorder` or `fork`); when the seq is older than its memory
//!    (`stale`, e.g. after a restart), the link is checked against the stored neighbours
//!    (`seq - 1`'s hash is its `prev_hash`, `seq + 1`'s `prev_hash` is its hash): `reorder` if
//!    both hold where known, else `fork`. The event is stored as `out_of_order` (the key is free).
//!
//! A chain's *next* event needs no look-up, except up to the highest seq stored above the
//! persisted head (rows a crash kept the head insert from covering): there rules 1 to 3 apply
//! too, so a redelivered tail is skipped, never written twice.
//!
//! Untrusted events (bad signature, unknown or disallowed key, malformed) are never stored in
//! `events`: they yield their finding, with the offending bytes as evidence, and nothing else.
//! `events` is the table of trusted material only, so a forgery can neither occupy the key of a
//! genuine event that arrives later nor be answered by a read path as if it were one. A Kafka
//! offset below the committed one cannot be delivered, so the only repeats the auditor sees are
//! the uncommitted tail, which rule 1 absorbs.

use verdict_proto::verify::{EventStatus, Verdict};
use verdict_proto::{BreakKind, Finding, SignedEvent, ZERO_HASH};
use verdict_schema::SourcePosition;

/// A stored (or just written) event, as far as the rule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub hash: String,
    pub prev_hash: String,
    pub source: SourcePosition,
}

/// The stored rows around one seq: the row at the seq and its neighbours.
#[derive(Debug, Default, Clone, Copy)]
pub struct Around<'a> {
    pub at: Option<&'a Known>,
    pub before: Option<&'a Known>,
    pub after: Option<&'a Known>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Store the event with this status, and the finding if any.
    Store {
        status: EventStatus,
        finding: Option<Finding>,
    },
    /// Record the finding only; the row stored at the key stays.
    FindingOnly(Finding),
    /// A redelivery of the stored row: nothing to write.
    Skip,
}

/// The finding for `event` (hash `hash`) at a key holding the row `known`: a replay of
/// the same event, or a fork. Based on the verifier's `finding` where it made one.
fn repeat(event: &SignedEvent, hash: &str, known: &Known, finding: Option<&Finding>) -> Finding {
    let (kind, detail) = if known.hash == hash {
        (
            BreakKind::Replay,
            format!(
                "seq {} already stored from partition {} offset {}",
                event.seq, known.source.partition, known.source.offset
            ),
        )
    } else {
        (
            BreakKind::Fork,
            format!("seq {} is stored with another hash", event.seq),
        )
    };
    match finding {
        Some(f) => Finding {
            kind,
            detail,
            ..f.clone()
        },
        None => Finding {
            kind,
            chain_id: event.chain_id.clone(),
            seq: event.seq,
            last_seq: event.seq,
            detail,
        },
    }
}

/// Whether [`resolve`] needs the stored rows for this verdict (forward placements and untrusted
/// events do not).
pub fn needs_lookup(verdict: &Verdict) -> bool {
    verdict.status == EventStatus::OutOfOrder
}

pub fn resolve(
    event: &SignedEvent,
    verdict: Verdict,
    source: SourcePosition,
    around: Around<'_>,
) -> Action {
    if verdict.status == EventStatus::Untrusted {
        return match verdict.finding {
            Some(finding) => Action::FindingOnly(finding),
            None => Action::Skip,
        };
    }
    let hash = hex::encode(event.hash);
    if around
        .at
        .is_some_and(|known| known.hash == hash && known.source == source)
    {
        return Action::Skip;
    }
    if !needs_lookup(&verdict) {
        // A forward event finds a trusted row at its key only after a restart from a head
        // persisted before rows that were stored anyway: the same event is a replay, another a
        // fork, and the stored row stays.
        return match around.at {
            Some(known) => Action::FindingOnly(repeat(event, &hash, known, None)),
            None => Action::Store {
                status: verdict.status,
                finding: verdict.finding,
            },
        };
    }
    let Some(finding) = verdict.finding else {
        // Out-of-order verdicts always carry a finding; store as judged otherwise.
        return Action::Store {
            status: verdict.status,
            finding: None,
        };
    };
    let retitled = |kind: BreakKind, detail: String| Finding {
        kind,
        detail,
        ..finding.clone()
    };
    match around.at {
        Some(known) => Action::FindingOnly(repeat(event, &hash, known, Some(&finding))),
        None if finding.kind == BreakKind::Stale => {
            let links = links(event, around);
            let (kind, how) = if links {
                (BreakKind::Reorder, "links with")
            } else {
                (BreakKind::Fork, "does not link with")
            };
            Action::Store {
                status: EventStatus::OutOfOrder,
                finding: Some(retitled(
                    kind,
                    format!("late seq {} {how} the stored neighbours", event.seq),
                )),
            }
        }
        None => Action::Store {
            status: EventStatus::OutOfOrder,
            finding: Some(finding),
        },
    }
}

fn links(event: &SignedEvent, around: Around<'_>) -> bool {
    let prev_ok = if event.seq == 1 {
        event.prev_hash == ZERO_HASH
    } else {
        around
            .before
            .is_none_or(|known| known.hash == hex::encode(event.prev_hash))
    };
    let next_ok = around
        .after
        .is_none_or(|known| known.prev_hash == hex::encode(event.hash));
    prev_ok && next_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_proto::{ChainWriter, SecretKey};

    const HERE: SourcePosition = SourcePosition {
        partition: 0,
        offset: 7,
    };
    const ELSEWHERE: SourcePosition = SourcePosition {
        partition: 0,
        offset: 99,
    };

    fn known(event: &SignedEvent, source: SourcePosition) -> Known {
        Known {
            hash: hex::encode(event.hash),
            prev_hash: hex::encode(event.prev_hash),
            source,
        }
    }

    fn stale(event: &SignedEvent) -> Verdict {
        Verdict {
            status: EventStatus::OutOfOrder,
            finding: Some(Finding {
                kind: BreakKind::Stale,
                chain_id: event.chain_id.clone(),
                seq: event.seq,
                last_seq: event.seq,
                detail: String::new(),
            }),
        }
    }

    fn kind(action: &Action) -> Option<BreakKind> {
        match action {
            Action::Store { finding, .. } => finding.as_ref().map(|f| f.kind),
            Action::FindingOnly(f) => Some(f.kind),
            Action::Skip => None,
        }
    }

    fn chain() -> Vec<SignedEvent> {
        let mut writer = ChainWriter::new("gw", SecretKey::from_seed(&[5; 32]));
        (0..4).map(|i| writer.append(vec![i])).collect()
    }

    #[test]
    fn the_same_message_again_is_a_silent_redelivery() {
        let events = chain();
        let at = known(&events[1], HERE);
        let around = Around {
            at: Some(&at),
            ..Around::default()
        };
        assert_eq!(
            resolve(&events[1], stale(&events[1]), HERE, around),
            Action::Skip
        );
    }

    #[test]
    fn a_forward_event_already_stored_above_the_restored_head_is_not_written_twice() {
        let events = chain();
        let forward = Verdict {
            status: EventStatus::Verified,
            finding: None,
        };
        let same = known(&events[2], HERE);
        let stored = |at| Around {
            at: Some(at),
            ..Around::default()
        };
        assert_eq!(
            resolve(&events[2], forward.clone(), HERE, stored(&same)),
            Action::Skip
        );
        let replay = resolve(&events[2], forward.clone(), ELSEWHERE, stored(&same));
        assert!(matches!(replay, Action::FindingOnly(ref f) if f.kind == BreakKind::Replay));
        let other = known(&events[3], HERE);
        let fork = resolve(&events[2], forward.clone(), ELSEWHERE, stored(&other));
        assert!(matches!(fork, Action::FindingOnly(ref f) if f.kind == BreakKind::Fork));
        assert!(matches!(
            resolve(&events[2], forward, HERE, Around::default()),
            Action::Store {
                status: EventStatus::Verified,
                finding: None
            }
        ));
    }

    #[test]
    fn the_same_event_at_another_offset_is_a_replay_and_a_different_one_a_fork() {
        let events = chain();
        let at = known(&events[1], ELSEWHERE);
        let around = Around {
            at: Some(&at),
            ..Around::default()
        };
        let replay = resolve(&events[1], stale(&events[1]), HERE, around);
        assert!(matches!(replay, Action::FindingOnly(ref f) if f.kind == BreakKind::Replay));
        let mut other =
            ChainWriter::resume("gw", SecretKey::from_seed(&[5; 32]), 1, events[0].hash);
        let forged = other.append(b"other".to_vec());
        let fork = resolve(&forged, stale(&forged), HERE, around);
        assert!(matches!(fork, Action::FindingOnly(ref f) if f.kind == BreakKind::Fork));
    }

    #[test]
    fn a_late_event_is_stored_and_checked_against_its_stored_neighbours() {
        let events = chain();
        let (before, after) = (known(&events[0], ELSEWHERE), known(&events[2], ELSEWHERE));
        let around = Around {
            at: None,
            before: Some(&before),
            after: Some(&after),
        };
        let late = resolve(&events[1], stale(&events[1]), HERE, around);
        assert_eq!(kind(&late), Some(BreakKind::Reorder));
        assert!(matches!(
            late,
            Action::Store {
                status: EventStatus::OutOfOrder,
                ..
            }
        ));
        let mut other =
            ChainWriter::resume("gw", SecretKey::from_seed(&[5; 32]), 1, events[0].hash);
        let forged = other.append(b"other".to_vec());
        assert_eq!(
            kind(&resolve(&forged, stale(&forged), HERE, around)),
            Some(BreakKind::Fork)
        );
    }

    #[test]
    fn an_untrusted_event_is_a_finding_and_never_a_stored_row() {
        let events = chain();
        let at = known(&events[1], ELSEWHERE);
        let untrusted = Verdict {
            status: EventStatus::Untrusted,
            finding: Some(Finding {
                kind: BreakKind::UnknownKey,
                ..stale(&events[1]).finding.unwrap()
            }),
        };
        let occupied = Around {
            at: Some(&at),
            ..Around::default()
        };
        let mut forged = events[1].clone();
        forged.body.push(0);
        assert!(matches!(
            resolve(&forged, untrusted.clone(), HERE, occupied),
            Action::FindingOnly(_)
        ));
        // Also where nothing is stored yet: the genuine event may still arrive.
        assert!(matches!(
            resolve(&forged, untrusted, HERE, Around::default()),
            Action::FindingOnly(ref f) if f.kind == BreakKind::UnknownKey
        ));
    }
}
