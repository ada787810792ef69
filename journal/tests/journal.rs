//! The journal's promises: what was appended reads back in order, across segments and restarts;
//! a torn tail is cut off at every possible cut point; readers wait at an incomplete record.

use std::fs::OpenOptions;
use std::time::Duration;
use verdict_journal::{JournalReader, JournalWriter};

fn payload(seq: u64) -> Vec<u8> {
    format!("event {seq} 세션 삭제 {}", "x".repeat((seq % 50) as usize)).into_bytes()
}

fn write(dir: &std::path::Path, seqs: std::ops::RangeInclusive<u64>, segment_bytes: u64) {
    let (mut writer, _) = JournalWriter::open(dir, segment_bytes).unwrap();
    for seq in seqs {
        writer.append(&[(seq, &payload(seq))]).unwrap();
    }
}

fn read_all(dir: &std::path::Path) -> Vec<u64> {
    let mut reader = JournalReader::open(dir).unwrap();
    let mut seqs = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        assert_eq!(record.payload, payload(record.seq));
        seqs.push(record.seq);
    }
    seqs
}

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn appends_read_back_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1..=500, 4096);
    let (writer, recovery) = JournalWriter::open(dir.path(), 4096).unwrap();
    assert_eq!(writer.last_seq(), 500);
    assert!(recovery.truncated.is_none());
    drop(writer);
    write(dir.path(), 501..=700, 4096);
    assert!(segment_files(dir.path()).len() > 10, "rolled over");
    assert_eq!(read_all(dir.path()), (1..=700).collect::<Vec<_>>());

    let mut reader = JournalReader::open(dir.path()).unwrap();
    reader.seek_after(333).unwrap();
    assert_eq!(reader.next_record().unwrap().unwrap().seq, 334);
    reader.seek_after(700).unwrap();
    assert!(reader.next_record().unwrap().is_none());
}

#[test]
fn out_of_order_seq_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writer, _) = JournalWriter::open(dir.path(), 1 << 20).unwrap();
    writer.append(&[(1, b"a")]).unwrap();
    assert!(writer.append(&[(3, b"c")]).is_err());
    assert!(writer.append(&[(1, b"a")]).is_err());
    writer.append(&[(2, b"b"), (3, b"c")]).unwrap();
    assert_eq!(writer.last_seq(), 3);
}

#[test]
fn a_torn_tail_is_cut_off_at_every_cut_point() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1..=20, 1 << 20);
    let segment = segment_files(dir.path()).pop().unwrap();
    let full = std::fs::read(&segment).unwrap();
    let last_len = 16 + payload(20).len();
    for cut in (full.len() - last_len)..full.len() {
        std::fs::write(&segment, &full[..cut]).unwrap();
        let (writer, recovery) = JournalWriter::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(writer.last_seq(), 19, "cut at {cut}");
        let cut_off = cut - (full.len() - last_len);
        assert_eq!(
            recovery.truncated.is_some(),
            cut_off > 0,
            "a cut inside the record is reported"
        );
        assert_eq!(recovery.last.unwrap().seq, 19);
        drop(writer);
        let torn: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".torn-"))
            .collect();
        assert_eq!(
            torn.len(),
            usize::from(cut_off > 0),
            "the cut bytes are kept: {torn:?}"
        );
        for name in torn {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        assert_eq!(read_all(dir.path()), (1..=19).collect::<Vec<_>>());
    }
    // And the journal continues from there.
    write(dir.path(), 20..=25, 1 << 20);
    assert_eq!(read_all(dir.path()), (1..=25).collect::<Vec<_>>());
}

#[test]
fn a_flipped_byte_is_reported_not_skipped_and_not_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1..=10, 1 << 20);
    let segment = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[8 + 16 + 3] ^= 0x40; // inside record 1's payload
    std::fs::write(&segment, &bytes).unwrap();
    let mut reader = JournalReader::open(dir.path()).unwrap();
    let first = reader.next_record().unwrap().unwrap();
    assert!(first.damaged && first.seq == 1 && first.offset == 8);
    assert!(!reader.next_record().unwrap().unwrap().damaged);
    // The writer keeps it (it is not a torn tail) and continues after the last record.
    let (writer, recovery) = JournalWriter::open(dir.path(), 1 << 20).unwrap();
    assert!(recovery.truncated.is_none());
    assert_eq!(writer.last_seq(), 10);
}

#[test]
fn a_reader_waits_at_an_incomplete_record() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1..=3, 1 << 20);
    let segment = segment_files(dir.path()).pop().unwrap();
    let mut reader = JournalReader::open(dir.path()).unwrap();
    for _ in 0..3 {
        reader.next_record().unwrap().unwrap();
    }
    // Half a record, as a writer mid-write leaves it.
    let mut framed = Vec::new();
    framed.extend_from_slice(&(payload(4).len() as u32).to_be_bytes());
    framed.extend_from_slice(&[0; 4]);
    use std::io::Write;
    OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&framed)
        .unwrap();
    assert!(reader.next_record().unwrap().is_none());
    // The writer recovers (cuts the half record) and writes it whole.
    write(dir.path(), 4..=4, 1 << 20);
    assert_eq!(reader.next_record().unwrap().unwrap().seq, 4);
}

#[test]
fn prune_removes_only_shipped_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1..=300, 2048);
    let before = segment_files(dir.path());
    let removed = verdict_journal::prune(dir.path(), 150, Duration::ZERO).unwrap();
    assert!(!removed.is_empty());
    let after = segment_files(dir.path());
    assert_eq!(before.len(), after.len() + removed.len());
    let seqs = read_all(dir.path());
    assert!(
        seqs[0] <= 151,
        "nothing unshipped removed: starts at {}",
        seqs[0]
    );
    assert_eq!(*seqs.last().unwrap(), 300);
    assert!(
        verdict_journal::prune(dir.path(), 300, Duration::from_secs(3600))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_limited_reader_does_not_pass_the_limit_and_reports_an_unread_tail() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1..=5, 1 << 20);
    let mut reader = JournalReader::open(dir.path()).unwrap();
    for seq in 1..=3 {
        assert_eq!(reader.next_record_upto(3).unwrap().unwrap().seq, seq);
    }
    assert!(
        reader.next_record_upto(3).unwrap().is_none(),
        "seq 4 is past the limit"
    );
    assert_eq!(
        reader.next_record_upto(5).unwrap().unwrap().seq,
        4,
        "not skipped"
    );
    reader.next_record().unwrap().unwrap();
    assert!(reader.unread_tail().is_none());
    let segment = segment_files(dir.path()).pop().unwrap();
    use std::io::Write;
    OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&[1, 2, 3])
        .unwrap();
    assert!(reader.next_record().unwrap().is_none());
    let (_, _, bytes) = reader.unread_tail().unwrap();
    assert_eq!(bytes, 3);
}

#[test]
fn journal_files_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested").join("journal");
    write(&dir, 1..=200, 1024);
    let last = segment_files(&dir).pop().unwrap();
    OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .set_len(std::fs::metadata(&last).unwrap().len() - 3)
        .unwrap();
    write(&dir, 200..=200, 1024);
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&root.path().join("nested")), 0o700);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        files.len() > 2,
        "rolled segments and a torn tail: {files:?}"
    );
    assert!(files.iter().any(|f| f.to_string_lossy().contains(".torn-")));
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}
