//! The shipped mark: the highest seq a shipper's broker acknowledged, kept beside the segments so
//! a restarted shipper resumes after it instead of resending the whole journal.
//!
//! Written by rename of a fully written temp file, so a crash leaves the old mark or the new one,
//! never half of one. A mark that lags behind the broker only means some events are sent again,
//! which consumers deduplicate by `(chain_id, seq)`; a mark ahead of the broker would lose events,
//! so it is only ever written after the acknowledgement.

use crate::JournalError;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ShippedMark {
    path: PathBuf,
}

impl ShippedMark {
    /// The mark of the shipper named `name` (one per destination) in journal `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            path: dir.join(format!("shipped-{name}")),
        }
    }

    /// The acknowledged seq; 0 when nothing was shipped yet.
    pub fn load(&self) -> Result<u64, JournalError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse().map_err(|_| JournalError::Corrupt {
                path: self.path.clone(),
                offset: 0,
                reason: format!("shipped mark {:?} is not a seq", text.trim()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(JournalError::io(&self.path)(e)),
        }
    }

    pub fn store(&self, seq: u64) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("tmp");
        let mut file = fs::File::create(&tmp).map_err(JournalError::io(&tmp))?;
        writeln!(file, "{seq}").map_err(JournalError::io(&tmp))?;
        file.sync_data().map_err(JournalError::io(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(JournalError::io(&self.path))
    }
}
