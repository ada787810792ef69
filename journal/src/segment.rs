//! Segment files: naming, listing, and reading one segment's records.
//!
//! Names carry the first seq of the segment, so finding where a seq lives is a directory listing,
//! not a scan of every file.

use crate::record::{self, Framed};
use crate::{JournalError, Record};
use std::fs;
use std::path::{Path, PathBuf};

pub(crate) const MAGIC: &[u8; 8] = b"VJOURNL1";
const SUFFIX: &str = ".seg";

/// A segment file and the seq of its first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub first_seq: u64,
    pub path: PathBuf,
}

impl Segment {
    pub fn new(dir: &Path, first_seq: u64) -> Self {
        Self {
            first_seq,
            path: dir.join(format!("{first_seq:020}{SUFFIX}")),
        }
    }

    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The journal's segments in seq order. Other files (the shipped mark, keys) are ignored.
pub(crate) fn list(dir: &Path) -> Result<Vec<Segment>, JournalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(JournalError::io(dir))? {
        let entry = entry.map_err(JournalError::io(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
            continue;
        };
        if let Ok(first_seq) = stem.parse() {
            segments.push(Segment {
                first_seq,
                path: entry.path(),
            });
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// The result of scanning a segment's bytes from the start.
pub(crate) struct Scan {
    pub records: Vec<Record>,
    /// Bytes up to the end of the last whole record.
    pub valid_len: u64,
    /// Why scanning stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

/// Reads every whole record of `segment`.
pub(crate) fn scan(segment: &Segment) -> Result<Scan, JournalError> {
    let bytes = fs::read(&segment.path).map_err(JournalError::io(&segment.path))?;
    if bytes.len() < MAGIC.len() {
        // A crash between creating the file and writing the magic leaves a short file.
        return Ok(Scan {
            records: Vec::new(),
            valid_len: 0,
            stopped: (!bytes.is_empty()).then(|| "segment header cut short".to_owned()),
        });
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(JournalError::BadMagic {
            path: segment.path.clone(),
        });
    }
    let mut offset = MAGIC.len();
    let mut records = Vec::new();
    let name = segment.name();
    let stopped = loop {
        if offset == bytes.len() {
            break None;
        }
        match record::decode(&bytes[offset..]) {
            Framed::Whole { seq, payload, len } => {
                records.push(Record {
                    seq,
                    payload: payload.to_vec(),
                    segment: name.clone(),
                    offset: offset as u64,
                    damaged: false,
                });
                offset += len;
            }
            // A damaged record at the very end is a torn write; inside the file it is damage
            // that the verifier must see, so it stays.
            Framed::Damaged { len, .. } if offset + len == bytes.len() => {
                break Some("last record's checksum does not match (torn write)".to_owned())
            }
            Framed::Damaged { seq, payload, len } => {
                tracing::error!(segment = %name, offset, seq, "journal record damaged (checksum mismatch); kept for the verifier");
                records.push(Record {
                    seq,
                    payload: payload.to_vec(),
                    segment: name.clone(),
                    offset: offset as u64,
                    damaged: true,
                });
                offset += len;
            }
            Framed::Incomplete => break Some("record cut short".to_owned()),
            Framed::Bad(reason) => break Some(reason),
        }
    };
    Ok(Scan {
        records,
        valid_len: offset as u64,
        stopped,
    })
}

/// Removes segments whose every record is at or below `shipped_seq` and that were last written
/// more than `min_age` ago. The newest segment is never removed (the writer appends to it).
pub(crate) fn prune(
    dir: &Path,
    shipped_seq: u64,
    min_age: std::time::Duration,
) -> Result<Vec<PathBuf>, JournalError> {
    let segments = list(dir)?;
    let mut removed = Vec::new();
    for pair in segments.windows(2) {
        let (segment, next) = (&pair[0], &pair[1]);
        if next.first_seq.saturating_sub(1) > shipped_seq {
            break;
        }
        let age = fs::metadata(&segment.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if age >= min_age {
            fs::remove_file(&segment.path).map_err(JournalError::io(&segment.path))?;
            removed.push(segment.path.clone());
        }
    }
    Ok(removed)
}
