//! Reading the journal back in seq order: the shipper tails it, `verdict verify --journal`
//! checks it.
//!
//! The reader uses positioned reads, so it never disturbs the writer, and it treats a record that
//! is not yet complete at the end of the newest segment as "not there yet" rather than damage.

use crate::record::{Framed, HEADER_LEN, MAX_PAYLOAD};
use crate::segment::{self, Segment, MAGIC};
use crate::{record, JournalError, Record};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub struct JournalReader {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// Index into `segments` of the segment being read.
    current: usize,
    file: Option<File>,
    offset: u64,
    buf: Vec<u8>,
}

impl JournalReader {
    /// A reader positioned at the journal's first record.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        Ok(Self {
            dir: dir.to_owned(),
            segments: segment::list(dir)?,
            current: 0,
            file: None,
            offset: MAGIC.len() as u64,
            buf: Vec::new(),
        })
    }

    /// Bytes after the last whole record of the newest segment (a record still being written, or
    /// a cut-off or altered tail): `(segment, offset, bytes)`, for offline verification.
    pub fn unread_tail(&self) -> Option<(String, u64, u64)> {
        let segment = self.segments.last()?;
        let len = std::fs::metadata(&segment.path).ok()?.len();
        let at_last = self.current + 1 >= self.segments.len();
        (at_last && len > self.offset).then(|| (segment.name(), self.offset, len - self.offset))
    }

    /// Positions the reader at the first record with a seq above `seq`.
    pub fn seek_after(&mut self, seq: u64) -> Result<(), JournalError> {
        self.current = self
            .segments
            .iter()
            .rposition(|s| s.first_seq <= seq.saturating_add(1))
            .unwrap_or(0);
        self.file = None;
        self.offset = MAGIC.len() as u64;
        loop {
            let before = (self.current, self.offset);
            match self.peek()? {
                Some((record_seq, len, _)) if record_seq <= seq => self.offset += len,
                _ if (self.current, self.offset) != before => continue,
                _ => return Ok(()),
            }
        }
    }

    /// The next record, or `None` when the reader has reached the end of what is written so far
    /// (call again later to see newer records).
    pub fn next_record(&mut self) -> Result<Option<Record>, JournalError> {
        self.next_record_upto(u64::MAX)
    }

    /// The next record if its seq is at most `limit`, else `None` without moving on. A shipper
    /// passes the writer's committed seq, so it never sends bytes a failed write may yet cut off.
    pub fn next_record_upto(&mut self, limit: u64) -> Result<Option<Record>, JournalError> {
        loop {
            let before = (self.current, self.offset);
            match self.peek()? {
                Some((seq, _, _)) if seq > limit => return Ok(None),
                Some((seq, len, damaged)) => {
                    let payload = self.buf[HEADER_LEN..].to_vec();
                    let record = Record {
                        seq,
                        payload,
                        segment: self.segments[self.current].name(),
                        offset: self.offset,
                        damaged,
                    };
                    self.offset += len;
                    return Ok(Some(record));
                }
                // `peek` moved on to the next segment: look there.
                None if (self.current, self.offset) != before => continue,
                None => return Ok(None),
            }
        }
    }

    /// Reads the record at the current position into `buf`: its seq, framed length, and whether
    /// it is damaged. At the end of a segment that has a successor, moves to the successor and
    /// returns `None`.
    fn peek(&mut self) -> Result<Option<(u64, u64, bool)>, JournalError> {
        if self.current >= self.segments.len() {
            self.segments = segment::list(&self.dir)?;
            if self.current >= self.segments.len() {
                return Ok(None);
            }
        }
        let segment = self.segments[self.current].clone();
        if self.file.is_none() {
            let file = File::open(&segment.path).map_err(JournalError::io(&segment.path))?;
            let mut magic = [0u8; 8];
            if file.read_exact_at(&mut magic, 0).is_err() || &magic != MAGIC {
                return Err(JournalError::BadMagic {
                    path: segment.path.clone(),
                });
            }
            self.file = Some(file);
        }
        let file = self.file.as_ref().expect("opened above");
        match read_framed(file, self.offset, &mut self.buf)
            .map_err(JournalError::io(&segment.path))?
        {
            Framed::Whole { seq, len, .. } => Ok(Some((seq, len as u64, false))),
            Framed::Damaged { seq, len, .. } => Ok(Some((seq, len as u64, true))),
            Framed::Bad(reason) => Err(JournalError::Corrupt {
                path: segment.path.clone(),
                offset: self.offset,
                reason,
            }),
            Framed::Incomplete => {
                // The end of this segment. If a newer one exists, this one is finished: a partial
                // record here is damage; otherwise the writer may still be writing it.
                if self.current + 1 >= self.segments.len() {
                    self.segments = segment::list(&self.dir)?;
                }
                if self.current + 1 >= self.segments.len() {
                    return Ok(None);
                }
                let len = self
                    .file
                    .as_ref()
                    .expect("open")
                    .metadata()
                    .map_or(0, |m| m.len());
                if len > self.offset {
                    return Err(JournalError::Corrupt {
                        path: segment.path.clone(),
                        offset: self.offset,
                        reason: "record cut short in a finished segment".into(),
                    });
                }
                self.current += 1;
                self.file = None;
                self.offset = MAGIC.len() as u64;
                Ok(None)
            }
        }
    }
}

/// Reads the framed record at `offset` into `buf` (header and payload).
fn read_framed(file: &File, offset: u64, buf: &mut Vec<u8>) -> std::io::Result<Framed<'static>> {
    buf.resize(HEADER_LEN, 0);
    if !read_fully(file, buf, offset)? {
        return Ok(Framed::Incomplete);
    }
    let len = u32::from_be_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len <= MAX_PAYLOAD {
        buf.resize(HEADER_LEN + len, 0);
        if !read_fully(file, &mut buf[HEADER_LEN..], offset + HEADER_LEN as u64)? {
            return Ok(Framed::Incomplete);
        }
    }
    Ok(match record::decode(buf) {
        Framed::Whole { seq, len, .. } => Framed::Whole {
            seq,
            payload: &[],
            len,
        },
        Framed::Damaged { seq, len, .. } => Framed::Damaged {
            seq,
            payload: &[],
            len,
        },
        Framed::Incomplete => Framed::Incomplete,
        Framed::Bad(reason) => Framed::Bad(reason),
    })
}

/// Fills `buf` from `offset`; `false` when the file ends first.
fn read_fully(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<bool> {
    match file.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}
