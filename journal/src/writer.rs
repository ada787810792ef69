//! Appending to the journal, segment rollover and crash recovery.
//!
//! The writer is used by one owner (the gateway's recorder thread), which appends groups of
//! records and learns of any failure synchronously: if a record could not be written, the caller
//! must not act as though it was (the gateway then fails closed). A failed append leaves no
//! partial record behind: the segment is cut back to its last whole record before the next write.
//! Files it creates are 0600 and directories 0700 (the owner's alone).
//!
//! Writing and syncing are separate steps so that one slow fsync (tens of milliseconds on some
//! disks) never holds up the next write: [`JournalWriter::append`] hands records to the OS, and a
//! [`SyncPoint`] taken after it forces them to disk, from whichever thread the owner chooses.
//! Once an fsync fails the journal is poisoned: the kernel may have dropped the dirty pages, so
//! nothing written since the last good fsync is known to be anywhere, and the writer refuses
//! every append until the journal is reopened and rescanned.

use crate::record::{self, MAX_PAYLOAD};
use crate::segment::{self, Segment, MAGIC};
use crate::{JournalError, Record};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

const PRIVATE_FILE_MODE: u32 = 0o600;
const PRIVATE_DIR_MODE: u32 = 0o700;

/// What opening found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The last whole record, from which the chain continues.
    pub last: Option<Record>,
    /// A damaged tail that was cut off (and kept as `<segment>.torn-<offset>`): (segment, offset,
    /// bytes removed, why).
    pub truncated: Option<(String, u64, u64, String)>,
}

/// The segment being written, shared with the sync points taken of it.
#[derive(Debug)]
struct OpenSegment {
    file: File,
    path: PathBuf,
}

pub struct JournalWriter {
    dir: PathBuf,
    segment: Segment,
    file: Arc<OpenSegment>,
    /// Length of the segment up to its last whole record.
    len: u64,
    /// A write failed after `len`: cut the file back before writing again.
    needs_repair: bool,
    segment_bytes: u64,
    last_seq: u64,
    /// Why an fsync failed, once one has: set by whichever thread synced.
    poisoned: Arc<OnceLock<String>>,
    buf: Vec<u8>,
}

/// What one fsync makes durable: the records appended to the journal when it was taken.
/// Taken with [`JournalWriter::sync_point`] after an append; synced from any thread.
#[derive(Debug, Clone)]
pub struct SyncPoint {
    segment: Arc<OpenSegment>,
    seq: u64,
    poisoned: Arc<OnceLock<String>>,
}

impl SyncPoint {
    /// Forces the records it covers to disk (earlier segments were synced when the writer rolled
    /// over) and returns the last one's seq. A failure poisons the journal.
    pub fn sync(&self) -> Result<u64, JournalError> {
        self.segment.file.sync_data().map_err(|e| {
            let _ = self.poisoned.set(e.to_string());
            JournalError::io(&self.segment.path)(e)
        })?;
        Ok(self.seq)
    }
}

impl JournalWriter {
    /// Opens (or creates) the journal in `dir`, cutting off a torn tail. Segments roll over once
    /// they exceed `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Self, Recovery), JournalError> {
        create_private_dir(dir)?;
        let segments = segment::list(dir)?;
        let mut recovery = Recovery::default();
        let segment = match segments.last() {
            None => Segment::new(dir, 1),
            Some(last) => last.clone(),
        };
        if segments.is_empty() {
            create_segment(&segment)?;
        }
        let scan = segment::scan(&segment)?;
        let actual = fs::metadata(&segment.path)
            .map_err(JournalError::io(&segment.path))?
            .len();
        if let Some(reason) = scan.stopped {
            let removed = actual - scan.valid_len;
            tracing::warn!(segment = %segment.name(), offset = scan.valid_len, bytes = removed, %reason,
                "journal tail damaged (crash during a write?); cutting it off");
            preserve_tail(&segment.path, scan.valid_len)?;
            recovery.truncated = Some((segment.name(), scan.valid_len, removed, reason));
            if scan.valid_len == 0 {
                create_segment(&segment)?;
            } else {
                truncate(&segment.path, scan.valid_len)?;
            }
        }
        recovery.last = match scan.records.into_iter().last() {
            Some(record) => Some(record),
            // An empty last segment (rolled over just before a crash): the previous one ends it.
            None if segments.len() >= 2 => segment::scan(&segments[segments.len() - 2])?
                .records
                .into_iter()
                .last(),
            None => None,
        };
        let len = scan.valid_len.max(MAGIC.len() as u64);
        let file = open_append(&segment.path)?;
        let writer = Self {
            dir: dir.to_owned(),
            segment,
            file,
            len,
            needs_repair: false,
            segment_bytes,
            last_seq: recovery.last.as_ref().map_or(0, |r| r.seq),
            poisoned: Arc::default(),
            buf: Vec::new(),
        };
        Ok((writer, recovery))
    }

    /// Seq of the last record written (0 for an empty journal).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// A sync point covering every record appended so far.
    pub fn sync_point(&self) -> SyncPoint {
        SyncPoint {
            segment: Arc::clone(&self.file),
            seq: self.last_seq,
            poisoned: Arc::clone(&self.poisoned),
        }
    }

    /// Appends `records` (seq, payload) in one write; seqs must continue the journal. On success
    /// the records are in the OS (a [`SyncPoint`] puts them on disk); on error none of them
    /// counts and the next append retries from the same place.
    pub fn append(&mut self, records: &[(u64, &[u8])]) -> Result<(), JournalError> {
        let mut expected = self.last_seq;
        for (seq, payload) in records {
            if *seq != expected + 1 {
                return Err(JournalError::OutOfOrder {
                    last: expected,
                    got: *seq,
                });
            }
            if payload.len() > MAX_PAYLOAD {
                return Err(JournalError::TooLarge(payload.len()));
            }
            expected = *seq;
        }
        let Some((first_seq, _)) = records.first() else {
            return Ok(());
        };
        if let Some(reason) = self.poisoned.get() {
            return Err(JournalError::Poisoned(reason.clone()));
        }
        if self.needs_repair {
            truncate(&self.segment.path, self.len)?;
            self.needs_repair = false;
        }
        if self.len >= self.segment_bytes {
            self.roll(*first_seq)?;
        }
        self.buf.clear();
        for (seq, payload) in records {
            record::encode(*seq, payload, &mut self.buf);
        }
        if let Err(e) = (&self.file.file).write_all(&self.buf) {
            self.needs_repair = true;
            return Err(JournalError::io(&self.segment.path)(e));
        }
        self.len += self.buf.len() as u64;
        self.last_seq = expected;
        Ok(())
    }

    /// Forces every record appended so far to disk, on this thread (before a rollover, and
    /// when the writer is dropped).
    fn sync(&self) -> Result<(), JournalError> {
        self.sync_point().sync().map(drop)
    }

    fn roll(&mut self, first_seq: u64) -> Result<(), JournalError> {
        self.sync()?;
        let next = Segment::new(&self.dir, first_seq);
        create_segment(&next)?;
        self.file = open_append(&next.path)?;
        self.segment = next;
        self.len = MAGIC.len() as u64;
        // The new name must survive a crash, or recovery would miss the segment.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(JournalError::io(&self.dir))
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "journal: final fsync failed");
        }
    }
}

/// Creates `dir` (and its parents) readable by this user only, if it does not exist yet.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), JournalError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(JournalError::io(dir))
}

/// Copies the bytes past `offset` to `<segment>.torn-<offset>` before they are cut off, so that
/// what a crash left behind can still be examined.
fn preserve_tail(path: &Path, offset: u64) -> Result<(), JournalError> {
    let bytes = fs::read(path).map_err(JournalError::io(path))?;
    let tail = bytes.get(offset as usize..).unwrap_or_default();
    if tail.is_empty() {
        return Ok(());
    }
    let mut kept = path.as_os_str().to_owned();
    kept.push(format!(".torn-{offset}"));
    let kept = PathBuf::from(kept);
    create_private(&kept)
        .and_then(|mut file| file.write_all(tail))
        .map_err(JournalError::io(kept))
}

/// Creates (or truncates) `path` readable by the gateway's user only: events carry arguments,
/// targets and agents' addresses, which other local users have no business reading.
fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
}

fn create_segment(segment: &Segment) -> Result<(), JournalError> {
    let mut file = create_private(&segment.path).map_err(JournalError::io(&segment.path))?;
    file.write_all(MAGIC)
        .and_then(|()| file.sync_all())
        .map_err(JournalError::io(&segment.path))
}

fn open_append(path: &Path) -> Result<Arc<OpenSegment>, JournalError> {
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(JournalError::io(path))?;
    Ok(Arc::new(OpenSegment {
        file,
        path: path.to_owned(),
    }))
}

fn truncate(path: &Path, len: u64) -> Result<(), JournalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(JournalError::io(path))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(JournalError::io(path))
}
