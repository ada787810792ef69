//! Key rotation and revocation as every verifier sees them: a chain handed from key A to key B
//! by a `KeyRotation` signed with A verifies with only A trusted; A signing the chain after the
//! hand-over is `retired_key`; a key revoked from a time on signs nothing trusted after it (a
//! rotation it signs then included); a verifier resuming after a rotation re-learns it from the
//! stored event; and a forged rotation (signed by a stranger) hands nothing over.

use prost::Message;
use verdict_proto::pb::{self, event_body::Kind};
use verdict_proto::verify::EventStatus;
use verdict_proto::{BreakKind, ChainVerifier, ChainWriter, SecretKey, SignedEvent, TrustedKeys};

/// 2023: the rotation `hand_over` writes carries the wall clock, later than every event here.
const T0: i64 = 1_700_000_000_000_000_000;

fn body(i: i64) -> Vec<u8> {
    pb::EventBody {
        time_unix_nanos: T0 + i * 1_000_000_000,
        kind: Some(Kind::Checkpoint(pb::Checkpoint {
            reason: format!("event {i}"),
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

fn trusting(key: &SecretKey) -> TrustedKeys {
    let mut keys = TrustedKeys::default();
    keys.add(key.public().clone(), Some(vec!["gw".into()]));
    keys
}

/// Seqs 1..=3 signed by `a`, the rotation to `b` at seq 4, seqs 5..=8 signed by `b`.
fn rotated(a: &SecretKey, b: &SecretKey) -> Vec<SignedEvent> {
    let mut writer = ChainWriter::new("gw", a.clone());
    let mut events: Vec<SignedEvent> = (1..=3).map(|i| writer.append(body(i))).collect();
    events.push(writer.hand_over(b.clone(), "scheduled"));
    events.extend((5..=8).map(|i| writer.append(body(i))));
    events
}

fn kinds(verifier: &mut ChainVerifier, events: &[SignedEvent]) -> Vec<Option<BreakKind>> {
    verifier
        .verify_batch(events)
        .into_iter()
        .map(|v| v.finding.map(|f| f.kind))
        .collect()
}

#[test]
fn a_rotation_signed_by_the_old_key_hands_the_chain_to_the_new_one() {
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let events = rotated(&a, &b);
    assert_eq!(events[4].key_id, b.public().key_id());
    // In one batch, and event by event.
    assert!(kinds(&mut ChainVerifier::new(trusting(&a)), &events)
        .iter()
        .all(Option::is_none));
    let mut one_by_one = ChainVerifier::new(trusting(&a));
    for event in &events {
        assert_eq!(one_by_one.verify(event).status, EventStatus::Verified);
    }
    // Without the rotation event, B is a stranger.
    let mut without = ChainVerifier::new(trusting(&a));
    let mut skipped = events.clone();
    skipped.remove(3);
    assert_eq!(
        kinds(&mut without, &skipped)[3],
        Some(BreakKind::UnknownKey)
    );
}

#[test]
fn the_old_key_signing_after_the_hand_over_is_retired_key() {
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let mut events = rotated(&a, &b);
    // A thief holding A continues the chain after B's seq 8.
    let head = events.last().unwrap();
    let mut thief = ChainWriter::resume("gw", a.clone(), head.seq, head.hash);
    events.push(thief.append(body(9)));
    let found = kinds(&mut ChainVerifier::new(trusting(&a)), &events);
    assert_eq!(found[8], Some(BreakKind::RetiredKey));
    assert!(found[..8].iter().all(Option::is_none));
}

#[test]
fn a_revoked_key_signs_nothing_after_its_revocation_and_hands_nothing_over() {
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let mut writer = ChainWriter::new("gw", a.clone());
    let mut events: Vec<SignedEvent> = (1..=3).map(|i| writer.append(body(i))).collect();
    let mut keys = trusting(&a);
    // Revoked from seq 3's time on: seq 3 and everything A signs later is untrusted.
    keys.revoke(a.public().key_id(), T0 + 3 * 1_000_000_000);
    events.push(writer.hand_over(b.clone(), "stolen key's rotation"));
    events.push(writer.append(body(5)));
    let mut verifier = ChainVerifier::new(keys);
    let verdicts = verifier.verify_batch(&events);
    assert_eq!(verdicts[0].status, EventStatus::Verified);
    assert_eq!(verdicts[1].status, EventStatus::Verified);
    let found: Vec<_> = verdicts
        .iter()
        .map(|v| v.finding.as_ref().map(|f| f.kind))
        .collect();
    assert_eq!(found[2], Some(BreakKind::RevokedKey));
    // The rotation carries the wall-clock time (after the revocation): revoked, not applied.
    assert_eq!(found[3], Some(BreakKind::RevokedKey));
    assert_eq!(found[4], Some(BreakKind::UnknownKey));
}

#[test]
fn a_verifier_resuming_after_a_rotation_relearns_it_from_the_stored_event() {
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let events = rotated(&a, &b);
    let mut resumed = ChainVerifier::new(trusting(&a));
    resumed.restore(
        "gw",
        verdict_proto::verify::ChainHead {
            seq: 6,
            hash: events[5].hash,
        },
    );
    let mut forgetful = ChainVerifier::new(trusting(&a));
    forgetful.restore(
        "gw",
        verdict_proto::verify::ChainHead {
            seq: 6,
            hash: events[5].hash,
        },
    );
    assert_eq!(
        kinds(&mut forgetful, &events[6..7]),
        [Some(BreakKind::UnknownKey)]
    );
    resumed.restore_rotation(&events[3]).unwrap();
    assert_eq!(kinds(&mut resumed, &events[6..]), [None, None]);
    // A stored "rotation" that is not one, or is not signed by a trusted key, teaches nothing.
    assert!(resumed.restore_rotation(&events[1]).is_err());
    let stranger = SecretKey::generate();
    let forged = ChainWriter::resume("gw", stranger, 3, events[2].hash)
        .hand_over(SecretKey::generate(), "forged");
    let mut careful = ChainVerifier::new(trusting(&a));
    assert!(careful
        .restore_rotation(&forged)
        .unwrap_err()
        .starts_with("unknown_key"));
}

#[test]
fn a_rotation_forged_by_a_stranger_hands_nothing_over() {
    let a = SecretKey::generate();
    let mut writer = ChainWriter::new("gw", a.clone());
    let mut events: Vec<SignedEvent> = (1..=3).map(|i| writer.append(body(i))).collect();
    let (stranger, theirs) = (SecretKey::generate(), SecretKey::generate());
    let mut forger = ChainWriter::resume("gw", stranger, 3, events[2].hash);
    events.push(forger.hand_over(theirs, "forged"));
    events.push(forger.append(body(5)));
    let found = kinds(&mut ChainVerifier::new(trusting(&a)), &events);
    assert_eq!(found[3], Some(BreakKind::UnknownKey));
    assert_eq!(found[4], Some(BreakKind::UnknownKey));
}

/// A body that holds a rotation and then a decision decodes, as every reader decodes it, as the
/// decision (a oneof's last field wins): the verifier must not hand the chain over on it, or a
/// key holder could rotate the chain unseen by the rows and queries that show a decision.
#[test]
fn a_rotation_hidden_behind_a_decision_hands_nothing_over() {
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let rotation = pb::EventBody {
        time_unix_nanos: T0,
        kind: Some(Kind::KeyRotation(pb::KeyRotation {
            new_public_key: b.public().as_bytes().to_vec(),
            new_key_id: b.public().key_id().to_owned(),
            reason: String::new(),
        })),
    };
    let decision = pb::EventBody {
        time_unix_nanos: T0,
        kind: Some(Kind::Decision(pb::Decision::default())),
    };
    let mut hidden = rotation.encode_to_vec();
    hidden.extend(decision.encode_to_vec());
    let shown = pb::EventBody::decode(hidden.as_slice()).unwrap();
    assert!(matches!(shown.kind, Some(Kind::Decision(_))));
    let mut writer = ChainWriter::new("gw", a.clone());
    let first = writer.append(hidden);
    let mut by_b = ChainWriter::resume("gw", b, first.seq, first.hash);
    let next = by_b.append(body(2));
    let found = kinds(&mut ChainVerifier::new(trusting(&a)), &[first, next]);
    assert_eq!(found, [None, Some(BreakKind::UnknownKey)]);
}
