//! The journal: where the gateway's signed events become durable before any call is forwarded
//! or refused, and where the shipper reads them back to send them to Kafka.
//!
//! A journal is a directory of segment files. Each segment is named after the seq of its first
//! record (`00000000000000000001.seg`, 20 digits so names sort in seq order), begins with an
//! 8-byte magic `VJOURNL1`, and holds records:
//!
//! ```text
//! u32 len          big-endian, length of the payload
//! u32 crc          CRC-32 (IEEE) of seq ‖ payload
//! u64 seq          big-endian, the event's seq in its chain
//! payload          `len` bytes: the event envelope exactly as signed and shipped
//! ```
//!
//! A record is whole or it is not there: the writer appends records and never rewrites them; on
//! open it scans the last segment, and a record cut short by a crash (or with a bad checksum) is
//! truncated away with a warning that names the file, offset and byte count — never silently
//! skipped. Readers stop at an incomplete record and see it once it is complete.
//!
//! This crate owns the file format and nothing else: it does not sign, decide or ship. The gateway
//! owns what goes in ([`JournalWriter`]), the shipper and `verdict verify --journal` read it
//! ([`JournalReader`]), and [`ShippedMark`] records how far a shipper's broker acknowledged.
//! [`JournalLock`] keeps a journal to one writing process.

mod lock;
mod reader;
mod record;
mod segment;
mod shipped;
mod writer;

pub use lock::{JournalLock, LOCK_FILE};
pub use reader::JournalReader;
pub use record::{Record, MAX_PAYLOAD};
pub use shipped::ShippedMark;
pub use writer::{JournalWriter, Recovery, SyncPoint};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Deletes segments fully acknowledged by the broker (every record at or below `shipped_seq`)
/// and older than `min_age`; returns what it removed. The newest segment always stays.
pub fn prune(
    dir: &Path,
    shipped_seq: u64,
    min_age: Duration,
) -> Result<Vec<PathBuf>, JournalError> {
    segment::prune(dir, shipped_seq, min_age)
}

/// Everything that can go wrong with a journal. I/O errors name the file they concern.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}: not a journal segment (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("journal {path}: corrupt record at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("journal record of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("an earlier fsync of the journal failed ({0}); written records may not be on disk, so it refuses writes until the gateway restarts and rescans it")]
    Poisoned(String),
    #[error("journal {dir} is locked by another writer ({holder}); one process appends to a chain at a time")]
    Locked { dir: PathBuf, holder: String },
    #[error("journal record seq {got} does not follow {last}")]
    OutOfOrder { last: u64, got: u64 },
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
