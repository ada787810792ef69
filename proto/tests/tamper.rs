//! Tampering with any byte of a signed event is caught, with the right kind of finding, and only
//! the tampered event is reported: the untouched events around it still verify.

use verdict_proto::verify::EventStatus;
use verdict_proto::{
    BreakKind, ChainVerifier, ChainWriter, SecretKey, SignedEvent, TrustedKeys, Verdict,
};

fn chain(n: u64) -> (Vec<SignedEvent>, TrustedKeys) {
    let key = SecretKey::from_seed(&[42; 32]);
    let mut writer = ChainWriter::new("gw-1", key.clone());
    let events = (1..=n)
        .map(|i| writer.append(format!("body {i} 세션 삭제").into_bytes()))
        .collect();
    let mut keys = TrustedKeys::default();
    keys.add(key.public().clone(), None);
    (events, keys)
}

fn run(events: &[SignedEvent], keys: &TrustedKeys) -> Vec<Verdict> {
    ChainVerifier::new(keys.clone()).verify_batch(events)
}

/// Findings as (kind, seq, last_seq).
fn findings(verdicts: &[Verdict]) -> Vec<(BreakKind, u64, u64)> {
    verdicts
        .iter()
        .filter_map(|v| v.finding.as_ref())
        .map(|f| (f.kind, f.seq, f.last_seq))
        .collect()
}

fn assert_only(
    events: &[SignedEvent],
    keys: &TrustedKeys,
    expected: &[(BreakKind, u64, u64)],
) -> Vec<Verdict> {
    let verdicts = run(events, keys);
    assert_eq!(findings(&verdicts), expected);
    verdicts
}

#[test]
fn untouched_chain_verifies() {
    let (events, keys) = chain(200);
    let verdicts = assert_only(&events, &keys, &[]);
    assert!(verdicts.iter().all(|v| v.status == EventStatus::Verified));
}

#[test]
fn every_body_byte_flip_is_a_bad_signature() {
    let (events, keys) = chain(5);
    for i in 0..events[2].body.len() {
        let mut tampered = events.clone();
        tampered[2].body[i] ^= 0x01;
        let verdicts = assert_only(&tampered, &keys, &[(BreakKind::BadSignature, 3, 3)]);
        assert_eq!(verdicts[2].status, EventStatus::Untrusted);
        // The next event follows an untrusted one: stored as after_break, with no second finding.
        assert_eq!(verdicts[3].status, EventStatus::AfterBreak);
        assert_eq!(verdicts[4].status, EventStatus::Verified);
    }
}

#[test]
fn signature_seq_and_prev_hash_tampering_are_bad_signatures() {
    let (events, keys) = chain(5);
    for i in 0..64 {
        let mut tampered = events.clone();
        tampered[1].signature[i] ^= 0x80;
        assert_only(&tampered, &keys, &[(BreakKind::BadSignature, 2, 2)]);
    }
    for i in 0..32 {
        let mut tampered = events.clone();
        tampered[3].prev_hash[i] ^= 0x01;
        assert_only(&tampered, &keys, &[(BreakKind::BadSignature, 4, 4)]);
    }
    let mut tampered = events.clone();
    tampered[4].seq = 9;
    assert_only(&tampered, &keys, &[(BreakKind::BadSignature, 9, 9)]);
}

#[test]
fn claimed_hash_tampering_is_malformed() {
    let (events, keys) = chain(5);
    for i in 0..32 {
        let mut tampered = events.clone();
        tampered[2].hash[i] ^= 0x01;
        assert_only(&tampered, &keys, &[(BreakKind::Malformed, 3, 3)]);
    }
}

#[test]
fn dropped_event_is_a_gap_naming_the_missing_range() {
    let (mut events, keys) = chain(10);
    events.drain(3..5); // seqs 4 and 5
    let verdicts = assert_only(&events, &keys, &[(BreakKind::Gap, 4, 5)]);
    assert_eq!(verdicts[3].status, EventStatus::AfterBreak);
    assert!(verdicts[4..]
        .iter()
        .all(|v| v.status == EventStatus::Verified));
}

#[test]
fn swapped_pair_is_a_gap_then_a_reorder() {
    let (mut events, keys) = chain(6);
    events.swap(2, 3); // 1 2 4 3 5 6
    let verdicts = assert_only(
        &events,
        &keys,
        &[(BreakKind::Gap, 3, 3), (BreakKind::Reorder, 3, 3)],
    );
    assert_eq!(verdicts[3].status, EventStatus::OutOfOrder);
    assert_eq!(
        verdicts[4].status,
        EventStatus::Verified,
        "seq 5 links to seq 4"
    );
}

#[test]
fn replayed_event_is_a_replay() {
    let (mut events, keys) = chain(6);
    events.push(events[1].clone());
    assert_only(&events, &keys, &[(BreakKind::Replay, 2, 2)]);
}

#[test]
fn same_seq_with_another_body_is_a_fork() {
    let (mut events, keys) = chain(6);
    let key = SecretKey::from_seed(&[42; 32]);
    let mut rogue = ChainWriter::resume("gw-1", key, 2, events[1].hash);
    events.push(rogue.append(b"a different third event".to_vec()));
    assert_only(&events, &keys, &[(BreakKind::Fork, 3, 3)]);
}

#[test]
fn next_seq_that_links_elsewhere_is_a_fork() {
    let (events, keys) = chain(4);
    let key = SecretKey::from_seed(&[42; 32]);
    // A writer restarted from an old head: its seq 5 links to seq 3's hash, not seq 4's.
    let mut other = ChainWriter::resume("gw-1", key, 4, events[2].hash);
    let mut all = events.clone();
    all.push(other.append(b"forked".to_vec()));
    let verdicts = assert_only(&all, &keys, &[(BreakKind::Fork, 5, 5)]);
    assert_eq!(verdicts[4].status, EventStatus::AfterBreak);
}

#[test]
fn unknown_key_and_disallowed_key() {
    let (events, keys) = chain(5);
    let intruder = SecretKey::from_seed(&[9; 32]);
    let mut forged = ChainWriter::resume("gw-1", intruder.clone(), 2, events[1].hash);
    let mut tampered = events.clone();
    tampered[2] = forged.append(b"forged".to_vec());
    let verdicts = assert_only(&tampered, &keys, &[(BreakKind::UnknownKey, 3, 3)]);
    assert_eq!(verdicts[3].status, EventStatus::AfterBreak);

    let mut restricted = TrustedKeys::default();
    restricted.add(
        SecretKey::from_seed(&[42; 32]).public().clone(),
        Some(vec!["gw-2".into()]),
    );
    let verdicts = run(&events[..1], &restricted);
    assert_eq!(
        verdicts[0].finding.as_ref().unwrap().kind,
        BreakKind::KeyNotAllowedForChain
    );
}

#[test]
fn restored_head_continues_without_findings() {
    let (events, keys) = chain(8);
    let mut first = ChainVerifier::new(keys.clone());
    first.verify_batch(&events[..5]);
    let head = first.head("gw-1").unwrap();
    let mut second = ChainVerifier::new(keys);
    second.restore("gw-1", head);
    let verdicts = second.verify_batch(&events[5..]);
    assert!(verdicts
        .iter()
        .all(|v| v.status == EventStatus::Verified && v.finding.is_none()));
}

#[test]
fn batch_verification_isolates_the_bad_event_among_many() {
    let (mut events, keys) = chain(1000);
    events[637].signature[10] ^= 1;
    assert_only(&events, &keys, &[(BreakKind::BadSignature, 638, 638)]);
}
