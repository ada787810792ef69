//! The journal's disk space, watched so that the gateway alarms well before the disk is full and
//! keeps the last of it for decisions.
//!
//! A gateway that cannot write its journal refuses every call (fail closed), so a full disk is an
//! outage. Two thresholds on the free space of the journal's file system (what an unprivileged
//! writer may use): below `alarm_free_bytes` the gateway warns in the log, `/healthz` says
//! `degraded` and the `journal_space` metric rises; below `min_free_bytes` (the reserve) it also
//! stops journaling the aggregated refusals of strangers — they are kept counted in memory and
//! written once there is room — so only decisions about authenticated agents use the reserve.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// How much room the journal has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpaceLevel {
    Ample = 0,
    /// Below the alarm threshold.
    Low = 1,
    /// Below the reserve: only decisions are written.
    Reserved = 2,
}

impl SpaceLevel {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Ample,
            1 => Self::Low,
            _ => Self::Reserved,
        }
    }
}

/// Free space of the journal's file system, checked periodically.
#[derive(Debug)]
pub struct SpaceWatch {
    dir: PathBuf,
    reserve_bytes: u64,
    alarm_bytes: u64,
    free: AtomicU64,
    level: AtomicU8,
}

impl SpaceWatch {
    pub fn new(dir: PathBuf, reserve_bytes: u64, alarm_bytes: u64) -> Self {
        Self {
            dir,
            reserve_bytes,
            alarm_bytes: alarm_bytes.max(reserve_bytes),
            free: AtomicU64::new(u64::MAX),
            level: AtomicU8::new(SpaceLevel::Ample as u8),
        }
    }

    /// Measures the free space now and logs a change of level.
    pub fn check(&self) -> SpaceLevel {
        let free = match rustix::fs::statvfs(&self.dir) {
            Ok(stat) => stat.f_bavail.saturating_mul(stat.f_frsize),
            Err(error) => {
                tracing::warn!(%error, "cannot measure the journal's free space");
                return self.level();
            }
        };
        self.free.store(free, Ordering::Relaxed);
        let level = if free < self.reserve_bytes {
            SpaceLevel::Reserved
        } else if free < self.alarm_bytes {
            SpaceLevel::Low
        } else {
            SpaceLevel::Ample
        };
        let before = SpaceLevel::from_u8(self.level.swap(level as u8, Ordering::Relaxed));
        if before != level {
            self.log_change(level, free);
        }
        level
    }

    fn log_change(&self, level: SpaceLevel, free: u64) {
        let (free_mib, alarm_mib, reserve_mib) =
            (free >> 20, self.alarm_bytes >> 20, self.reserve_bytes >> 20);
        match level {
            SpaceLevel::Ample => tracing::info!(free_mib, "journal disk space is ample again"),
            SpaceLevel::Low => tracing::warn!(
                free_mib,
                alarm_mib,
                "journal disk space low: free some, or the gateway will refuse every call once the disk is full"
            ),
            SpaceLevel::Reserved => tracing::error!(
                free_mib,
                reserve_mib,
                "journal disk space below the reserve: refusals of unauthenticated requests are counted but not journaled until there is room"
            ),
        }
    }

    pub fn level(&self) -> SpaceLevel {
        SpaceLevel::from_u8(self.level.load(Ordering::Relaxed))
    }

    /// Free bytes at the last check.
    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// What `/healthz` says when the level is not ample (no paths).
    pub fn describe(&self) -> Option<String> {
        let free_mib = self.free_bytes() >> 20;
        match self.level() {
            SpaceLevel::Ample => None,
            SpaceLevel::Low => Some(format!(
                "journal disk space low: {free_mib} MiB free, alarm below {} MiB",
                self.alarm_bytes >> 20
            )),
            SpaceLevel::Reserved => Some(format!(
                "journal disk space below the reserve: {free_mib} MiB free, {} MiB kept for decisions; unauthenticated refusals are only counted",
                self.reserve_bytes >> 20
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_thresholds() {
        let dir = std::env::temp_dir();
        let ample = SpaceWatch::new(dir.clone(), 0, 0);
        assert_eq!(ample.check(), SpaceLevel::Ample);
        assert!(ample.describe().is_none());
        let low = SpaceWatch::new(dir.clone(), 0, u64::MAX);
        assert_eq!(low.check(), SpaceLevel::Low);
        let reserved = SpaceWatch::new(dir, u64::MAX, 0);
        assert_eq!(reserved.check(), SpaceLevel::Reserved);
        assert!(reserved.describe().unwrap().contains("reserve"));
    }
}
