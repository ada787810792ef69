//! One writer per chain: an exclusive lock on the journal directory.
//!
//! Two processes appending to one journal fork its chain (both continue from the same head), and
//! the auditor then files one of them as forks and replays, so an agent silently drops out of the
//! answer to "who tried". The writer therefore holds an exclusive `flock` on `<dir>/LOCK` for as
//! long as it lives; the OS releases it when the process exits, crashed or not, so a stale lock
//! never blocks a restart. The file records the holder (pid and mode) so a refused second process
//! can say who holds the chain. Readers (the shipper, `verdict verify --journal`) take no lock.

use crate::JournalError;
use std::fs::{File, OpenOptions, Permissions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The lock file's name inside the journal directory.
pub const LOCK_FILE: &str = "LOCK";

/// An exclusive lock on a journal directory, released when dropped or when the process ends.
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
}

impl JournalLock {
    /// Takes the lock on `dir` (created if missing) for this process, recording its pid and
    /// `mode` (e.g. `http`, `stdio`); fails with [`JournalError::Locked`] naming the holder if
    /// another process has it.
    pub fn acquire(dir: &Path, mode: &str) -> Result<Self, JournalError> {
        crate::writer::create_private_dir(dir)?;
        let path = dir.join(LOCK_FILE);
        // Not truncated on open: until the lock is ours, the holder's record must stay readable.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(JournalError::io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(JournalError::Locked {
                    dir: dir.to_owned(),
                    holder: holder(&mut file),
                })
            }
            Err(TryLockError::Error(source)) => return Err(JournalError::Io { path, source }),
        }
        record_holder(&mut file, &path, mode)?;
        Ok(Self { _file: file })
    }
}

fn record_holder(file: &mut File, path: &Path, mode: &str) -> Result<(), JournalError> {
    file.set_permissions(Permissions::from_mode(0o600))
        .and_then(|()| file.set_len(0))
        .and_then(|()| write!(file, "pid {}, mode {mode}", std::process::id()))
        .and_then(|()| file.sync_data())
        .map_err(JournalError::io(path))
}

/// What the holder wrote into the lock file (bounded; it is only shown in an error message).
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.take(256).read_to_string(&mut text);
    match text.trim() {
        "" => "holder unknown".into(),
        holder => holder.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = JournalLock::acquire(dir.path(), "http").unwrap();
        let refused = JournalLock::acquire(dir.path(), "stdio").unwrap_err();
        let expected = format!("pid {}, mode http", std::process::id());
        assert!(
            matches!(&refused, JournalError::Locked { holder, .. } if *holder == expected),
            "{refused}"
        );
        let mode = std::fs::metadata(dir.path().join(LOCK_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(first);
        JournalLock::acquire(dir.path(), "stdio").unwrap();
    }
}
