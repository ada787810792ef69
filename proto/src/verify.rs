//! Verifying chains: signatures, `seq` continuity and `prev_hash` linkage.
//!
//! One verifier serves the auditor (events from Kafka), the query service (re-verification from
//! stored rows) and the offline `verdict verify` (a journal or an export). It keeps per-chain
//! state in memory: the head, a window of recent hashes (to tell a replay from a fork), the
//! seqs skipped by a gap (to recognise a late arrival) and the seqs of untrusted events (so one
//! tampered event yields one finding, not a second "gap" finding after it).
//!
//! Every event gets a [`Verdict`]: a status to store it with and at most one [`Finding`].
//! Verification always continues after a break, from the newest trusted event.
//!
//! Keys change hands inside the chain: a trusted `KeyRotation` event that becomes the head
//! hands the chain to the key it names from the next seq on (the old key is then *retired* for
//! that chain: a later event it signs is `retired_key`), and a key revoked from a time on
//! (`TrustedKeys::revoke`) signs nothing trusted after it (`revoked_key`) — a rotation it signs
//! then included. A batch is verified in runs that end at each rotation, so the events after a
//! rotation are checked against the key it named.

use crate::envelope::SignedEvent;
use crate::hash::{Hash, ZERO_HASH};
use crate::keys::PublicKey;
use crate::pb;
use crate::trusted::TrustedKeys;
use ed25519_dalek::{Signature, VerifyingKey};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Signatures verified together; one bad signature costs re-verifying only its chunk.
const BATCH_CHUNK: usize = 64;
/// Recent (seq → hash) entries kept per chain to classify repeated seqs.
pub const DEFAULT_WINDOW: usize = 16_384;

/// What kind of break a finding reports. The names (see [`BreakKind::as_str`]) are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BreakKind {
    /// The signature does not verify over the recomputed hash (body, seq, prev_hash or
    /// signature altered).
    BadSignature,
    /// Signed with a key id that is not trusted.
    UnknownKey,
    /// Signed with a trusted key that is not allowed to sign this chain.
    KeyNotAllowedForChain,
    /// Not a decodable envelope, or internally inconsistent (claimed hash ≠ recomputed hash).
    Malformed,
    /// Seqs are missing before this event.
    Gap,
    /// Another event with the same seq, or a `prev_hash` that does not link to the event seen.
    Fork,
    /// An event seen before (same seq, same hash) arrived again.
    Replay,
    /// An event skipped by an earlier gap arrived late; it links correctly.
    Reorder,
    /// A seq at or below the head that is older than the verifier's window; the caller resolves
    /// it against stored rows (replay if the stored hash matches, fork otherwise).
    Stale,
    /// No checkpoint within the interval the chain promised.
    SilentChain,
    /// A checkpoint's Merkle root differs from the one the witness computed over the same events.
    TreeMismatch,
    /// Signed with a key that handed this chain over to another key at an earlier seq.
    RetiredKey,
    /// Signed with a key at a time after its revocation.
    RevokedKey,
}

impl BreakKind {
    pub const ALL: [BreakKind; 13] = [
        Self::BadSignature,
        Self::UnknownKey,
        Self::KeyNotAllowedForChain,
        Self::Malformed,
        Self::Gap,
        Self::Fork,
        Self::Replay,
        Self::Reorder,
        Self::Stale,
        Self::SilentChain,
        Self::TreeMismatch,
        Self::RetiredKey,
        Self::RevokedKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::UnknownKey => "unknown_key",
            Self::KeyNotAllowedForChain => "key_not_allowed_for_chain",
            Self::Malformed => "malformed",
            Self::Gap => "gap",
            Self::Fork => "fork",
            Self::Replay => "replay",
            Self::Reorder => "reorder",
            Self::Stale => "stale",
            Self::SilentChain => "silent_chain",
            Self::TreeMismatch => "tree_mismatch",
            Self::RetiredKey => "retired_key",
            Self::RevokedKey => "revoked_key",
        }
    }
}

/// One break, with the position it concerns. For a gap, `seq..=last_seq` is the missing range;
/// otherwise `last_seq == seq` is the offending event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: BreakKind,
    pub chain_id: String,
    pub seq: u64,
    pub last_seq: u64,
    pub detail: String,
}

/// How an event is stored after verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventStatus {
    /// Trusted signature, linked to the verified chain.
    Verified,
    /// Trusted signature and now the chain head, but its link to the previous event could not be
    /// verified (it follows a gap, a fork or an untrusted event).
    AfterBreak,
    /// Trusted signature, but not the next event (reorder, replay, fork of an old seq, stale).
    OutOfOrder,
    /// Not trusted: bad signature, unknown or disallowed key, malformed.
    Untrusted,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::AfterBreak => "after_break",
            Self::OutOfOrder => "out_of_order",
            Self::Untrusted => "untrusted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: EventStatus,
    pub finding: Option<Finding>,
}

/// The newest trusted event of a chain: what the auditor persists to resume exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: Hash,
}

#[derive(Debug, Default)]
struct ChainState {
    head: Option<ChainHead>,
    /// seq → (hash, prev_hash) of recent trusted events.
    window: BTreeMap<u64, (Hash, Hash)>,
    /// Seqs skipped by a gap and not seen since.
    missing: BTreeSet<u64>,
    /// Seqs at which an untrusted event stood in for the real one.
    untrusted: BTreeSet<u64>,
    /// Keys handed this chain by rotations: each signs from its seq on.
    handed: Vec<(u64, PublicKey)>,
    /// key_id → the seq of the rotation by which it handed this chain over.
    retired: HashMap<String, u64>,
}

/// What the verifier reads of a body: its time and a key rotation. The body is decoded whole, as
/// every reader decodes it (a oneof's last field wins), so no body is a rotation here and a
/// decision to the auditor's rows and queries.
#[derive(Clone, Default)]
struct BodyPeek {
    time_unix_nanos: i64,
    key_rotation: Option<pb::KeyRotation>,
}

/// An undecodable body has no time it could claim: for revocation it counts as after any.
fn peek(event: &SignedEvent) -> BodyPeek {
    match event.decode_body() {
        Ok(body) => BodyPeek {
            time_unix_nanos: body.time_unix_nanos,
            key_rotation: match body.kind {
                Some(pb::event_body::Kind::KeyRotation(rotation)) => Some(rotation),
                _ => None,
            },
        },
        Err(_) => BodyPeek {
            time_unix_nanos: i64::MAX,
            key_rotation: None,
        },
    }
}

type Trust = Result<(), (BreakKind, String)>;

/// Verifies events of any number of chains, in arrival order.
#[derive(Debug)]
pub struct ChainVerifier {
    keys: TrustedKeys,
    chains: HashMap<String, ChainState>,
    window: usize,
}

impl ChainVerifier {
    pub fn new(keys: TrustedKeys) -> Self {
        Self {
            keys,
            chains: HashMap::new(),
            window: DEFAULT_WINDOW,
        }
    }

    /// Continues a chain from a persisted head instead of expecting seq 1.
    pub fn restore(&mut self, chain_id: &str, head: ChainHead) {
        let state = self.chains.entry(chain_id.to_owned()).or_default();
        state.head = Some(head);
    }

    pub fn head(&self, chain_id: &str) -> Option<ChainHead> {
        self.chains.get(chain_id).and_then(|s| s.head)
    }

    /// Chain ids this verifier has seen or restored.
    pub fn chain_ids(&self) -> impl Iterator<Item = &str> {
        self.chains.keys().map(String::as_str)
    }

    pub fn verify(&mut self, event: &SignedEvent) -> Verdict {
        self.verify_batch(std::slice::from_ref(event)).remove(0)
    }

    /// Verifies `events` in order; signatures are batch-verified first, in runs that end at
    /// each key rotation.
    pub fn verify_batch(&mut self, events: &[SignedEvent]) -> Vec<Verdict> {
        let peeks: Vec<BodyPeek> = events.par_iter().map(peek).collect();
        let mut verdicts = Vec::with_capacity(events.len());
        let mut start = 0;
        while start < events.len() {
            let end = peeks[start..]
                .iter()
                .position(|p| p.key_rotation.is_some())
                .map_or(events.len(), |i| start + i + 1);
            let trust = self.check_trust(&events[start..end], &peeks[start..end]);
            for ((event, peek), trust) in
                events[start..end].iter().zip(&peeks[start..end]).zip(trust)
            {
                let verdict = self.place(event, trust);
                if let (Some(rotation), EventStatus::Verified | EventStatus::AfterBreak) =
                    (&peek.key_rotation, verdict.status)
                {
                    self.hand_over(event, rotation);
                }
                verdicts.push(verdict);
            }
            start = end;
        }
        verdicts
    }

    /// Re-applies a stored rotation event, for a verifier that resumes a chain after it (from a
    /// persisted head) instead of reading it from seq 1: its signature must verify against the
    /// keys this verifier trusts for the chain at that seq.
    pub fn restore_rotation(&mut self, event: &SignedEvent) -> Result<(), String> {
        let peek = peek(event);
        let rotation = peek.key_rotation.as_ref().ok_or("not a key rotation")?;
        self.check_trust(std::slice::from_ref(event), std::slice::from_ref(&peek))
            .remove(0)
            .map_err(|(kind, detail)| format!("{}: {detail}", kind.as_str()))?;
        self.hand_over(event, rotation);
        Ok(())
    }

    /// Hands `event`'s chain from its signer to the key `rotation` names, from the next seq on.
    fn hand_over(&mut self, event: &SignedEvent, rotation: &pb::KeyRotation) {
        let state = self.chains.entry(event.chain_id.clone()).or_default();
        state.retired.insert(event.key_id.clone(), event.seq);
        // A rotation naming no valid key hands nothing over: later events are `unknown_key`.
        if let Ok(key) = PublicKey::from_bytes(&rotation.new_public_key) {
            state.retired.remove(key.key_id());
            state.handed.push((event.seq.saturating_add(1), key));
        }
    }

    /// The key that may sign `event` at its seq and time, or why none may.
    fn key_for(
        &self,
        event: &SignedEvent,
        time_unix_nanos: i64,
    ) -> Result<&PublicKey, (BreakKind, String)> {
        let state = self.chains.get(&event.chain_id);
        let retired = state.and_then(|s| s.retired.get(&event.key_id));
        if let Some(&at) = retired.filter(|&&at| event.seq > at) {
            let detail = format!("key_id {} handed this chain over at seq {at}", event.key_id);
            return Err((BreakKind::RetiredKey, detail));
        }
        let handed = state.and_then(|s| {
            s.handed
                .iter()
                .rev()
                .find(|(from, key)| event.seq >= *from && key.key_id() == event.key_id)
        });
        let key = match handed {
            Some((_, key)) => key,
            None => self
                .keys
                .key_for(event)
                .map_err(|kind| (kind, format!("key_id {}", event.key_id)))?,
        };
        match self.keys.revoked(&event.key_id, time_unix_nanos) {
            Some(from) => Err((
                BreakKind::RevokedKey,
                format!(
                    "key_id {} is revoked from {from} ns; the event claims {time_unix_nanos} ns",
                    event.key_id
                ),
            )),
            None => Ok(key),
        }
    }

    /// Signature, key and hash-consistency checks, independent of chain position.
    fn check_trust(&self, events: &[SignedEvent], peeks: &[BodyPeek]) -> Vec<Trust> {
        let hashes: Vec<Hash> = events.par_iter().map(SignedEvent::computed_hash).collect();
        let mut trust: Vec<Trust> = Vec::with_capacity(events.len());
        let mut keyed = Vec::with_capacity(events.len());
        for (i, (event, peek)) in events.iter().zip(peeks).enumerate() {
            match self.key_for(event, peek.time_unix_nanos) {
                Ok(key) => {
                    trust.push(Ok(()));
                    keyed.push((i, key.verifying_key()));
                }
                Err(why) => trust.push(Err(why)),
            }
        }
        // Chunks verify independently: on every core (the auditor's batches are thousands).
        let bad: Vec<usize> = keyed
            .par_chunks(BATCH_CHUNK)
            .flat_map_iter(|chunk| bad_signatures(chunk, events, &hashes))
            .collect();
        for i in bad {
            trust[i] = Err((
                BreakKind::BadSignature,
                "signature does not verify over the recomputed hash".into(),
            ));
        }
        for (i, event) in events.iter().enumerate() {
            if trust[i].is_ok() && hashes[i] != event.hash {
                trust[i] = Err((
                    BreakKind::Malformed,
                    "claimed hash differs from the recomputed hash".into(),
                ));
            }
        }
        trust
    }

    fn place(&mut self, event: &SignedEvent, trust: Trust) -> Verdict {
        let window = self.window;
        let state = self.chains.entry(event.chain_id.clone()).or_default();
        let finding = |kind, last_seq, detail: String| Finding {
            kind,
            chain_id: event.chain_id.clone(),
            seq: event.seq,
            last_seq,
            detail,
        };
        if let Err((kind, detail)) = trust {
            state.untrusted.insert(event.seq);
            return verdict(
                EventStatus::Untrusted,
                Some(finding(kind, event.seq, detail)),
            );
        }
        let head_seq = state.head.map_or(0, |h| h.seq);
        let head_hash = state.head.map_or(ZERO_HASH, |h| h.hash);
        if event.seq == head_seq + 1 {
            let linked = event.prev_hash == head_hash;
            let replaced_untrusted = state.untrusted.remove(&head_seq);
            state.advance(event, window);
            return match (linked, replaced_untrusted) {
                (true, _) => verdict(EventStatus::Verified, None),
                (false, true) => verdict(EventStatus::AfterBreak, None),
                (false, false) => verdict(
                    EventStatus::AfterBreak,
                    Some(finding(
                        BreakKind::Fork,
                        event.seq,
                        "prev_hash does not link to the previous event".into(),
                    )),
                ),
            };
        }
        if event.seq > head_seq + 1 {
            let skipped = head_seq + 1..event.seq;
            state.missing.extend(skipped.clone());
            let unexplained: Vec<u64> = skipped.filter(|s| !state.untrusted.remove(s)).collect();
            state.advance(event, window);
            let gap = match (unexplained.first(), unexplained.last()) {
                (Some(&first), Some(&last)) => Some(Finding {
                    seq: first,
                    ..finding(
                        BreakKind::Gap,
                        last,
                        format!(
                            "{} event(s) missing before seq {}",
                            unexplained.len(),
                            event.seq
                        ),
                    )
                }),
                _ => None,
            };
            return verdict(EventStatus::AfterBreak, gap);
        }
        // At or below the head: a late arrival, a replay, a fork of an old seq, or too old to tell.
        let kind = if state.missing.remove(&event.seq) {
            if state.links_with_neighbours(event) {
                BreakKind::Reorder
            } else {
                BreakKind::Fork
            }
        } else {
            match state.window.get(&event.seq) {
                Some((hash, _)) if *hash == event.hash => BreakKind::Replay,
                Some(_) => BreakKind::Fork,
                None => BreakKind::Stale,
            }
        };
        if kind == BreakKind::Reorder {
            state.remember(event, window);
        }
        let detail = format!("seq {} arrived after head seq {head_seq}", event.seq);
        verdict(
            EventStatus::OutOfOrder,
            Some(finding(kind, event.seq, detail)),
        )
    }
}

impl ChainState {
    fn advance(&mut self, event: &SignedEvent, window: usize) {
        self.head = Some(ChainHead {
            seq: event.seq,
            hash: event.hash,
        });
        self.remember(event, window);
    }

    fn remember(&mut self, event: &SignedEvent, window: usize) {
        self.window.insert(event.seq, (event.hash, event.prev_hash));
        while self.window.len() > window {
            self.window.pop_first();
        }
        while self.missing.len() > window {
            self.missing.pop_first();
        }
        while self.untrusted.len() > window {
            self.untrusted.pop_first();
        }
    }

    /// A late event links if the known previous event's hash is its `prev_hash` and the known
    /// next event's `prev_hash` is its hash.
    fn links_with_neighbours(&self, event: &SignedEvent) -> bool {
        let prev_ok = match event.seq {
            1 => event.prev_hash == ZERO_HASH,
            s => self
                .window
                .get(&(s - 1))
                .is_none_or(|(hash, _)| *hash == event.prev_hash),
        };
        let next_ok = self
            .window
            .get(&(event.seq + 1))
            .is_none_or(|(_, prev)| *prev == event.hash);
        prev_ok && next_ok
    }
}

fn verdict(status: EventStatus, finding: Option<Finding>) -> Verdict {
    Verdict { status, finding }
}

/// The events of `chunk` whose signature does not verify: none when the chunk batch-verifies,
/// else each is checked alone.
fn bad_signatures(
    chunk: &[(usize, &VerifyingKey)],
    events: &[SignedEvent],
    hashes: &[Hash],
) -> Vec<usize> {
    if batch_ok(chunk, events, hashes) {
        return Vec::new();
    }
    chunk
        .iter()
        .filter(|&&(i, key)| {
            let sig = Signature::from_bytes(&events[i].signature);
            key.verify_strict(&hashes[i], &sig).is_err()
        })
        .map(|&(i, _)| i)
        .collect()
}

fn batch_ok(chunk: &[(usize, &VerifyingKey)], events: &[SignedEvent], hashes: &[Hash]) -> bool {
    let messages: Vec<&[u8]> = chunk.iter().map(|&(i, _)| hashes[i].as_slice()).collect();
    let signatures: Vec<Signature> = chunk
        .iter()
        .map(|&(i, _)| Signature::from_bytes(&events[i].signature))
        .collect();
    let keys: Vec<VerifyingKey> = chunk.iter().map(|&(_, key)| *key).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}
