//! Is this auditor actually reading the topic? Two questions the rest of the auditor must not
//! answer from its own silence.
//!
//! 1. **Caught up** ([`CaughtUp`]): a chain is *silent* only when the topic itself has nothing
//!    newer from it. The auditor knows that only for partitions it holds and has committed to the
//!    end (librdkafka's statistics: lag 0 against the high watermark). A chain on any other
//!    partition — revoked, never assigned, behind — is not judged at all; a chain whose partition
//!    is not known yet (restored from ClickHouse, not heard since) only when this auditor holds
//!    every partition of the topic, all caught up.
//! 2. **Stalled** ([`Watchdog`]): an auditor with nothing to read of its own — no partitions, or
//!    every partition it holds read to the end — while the group's committed offsets on the
//!    partitions it does *not* hold stand still below the topic's end, is not idle: those
//!    partitions have no reader. Seen twice: after a `kill -9` and restart, when the group handed
//!    the new member an empty assignment and never rebalanced again; and after the group's
//!    leader was killed, when the broker (tansu 0.6) expired it but kept the survivors' old
//!    assignments and handed the dead member's partitions to no one. Such an auditor reports
//!    unhealthy and rejoins the group with a fresh consumer (leaving first, so that it is the
//!    new leader and assigns every partition). Another auditor of the group that is making
//!    progress keeps the committed offsets moving, so one that legitimately holds less is never
//!    mistaken for a stuck one; a member that is alive but holds its partitions without storing
//!    them (waiting for a ClickHouse replica) is given a longer patience before the group is
//!    rebalanced around it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per partition, the consumer lag librdkafka last reported (`-1`: unknown), for every partition
/// of the topic it knows of. Written by the statistics callback, read by the main loop.
#[derive(Debug, Default)]
pub struct Lags(Mutex<BTreeMap<i32, i64>>);

impl Lags {
    pub fn set(&self, lags: BTreeMap<i32, i64>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = lags;
    }

    /// Which partitions this auditor may judge silence on, given its current assignment.
    pub fn caught_up(&self, assigned: &BTreeSet<i32>) -> CaughtUp {
        let lags = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let partitions: BTreeSet<i32> = assigned
            .iter()
            .copied()
            .filter(|p| lags.get(p) == Some(&0))
            .collect();
        let all = !lags.is_empty() && lags.keys().all(|p| partitions.contains(p));
        let holding = if assigned.is_empty() {
            Holding::Nothing
        } else if assigned.is_subset(&partitions) {
            Holding::CaughtUp
        } else {
            Holding::Reading
        };
        CaughtUp {
            partitions,
            all,
            holding,
        }
    }
}

/// The partitions this auditor holds and has read to the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaughtUp {
    partitions: BTreeSet<i32>,
    /// Every partition of the topic is among them.
    all: bool,
    /// What the auditor has to read of its own.
    holding: Holding,
}

impl CaughtUp {
    /// What the auditor has to read of its own.
    pub fn holding(&self) -> Holding {
        self.holding
    }

    /// Whether a chain last heard on `partition` (`None`: not heard since the heads were loaded)
    /// can be judged silent.
    pub fn covers(&self, partition: Option<i32>) -> bool {
        match partition {
            Some(p) => self.partitions.contains(&p),
            None => self.all,
        }
    }
}

/// What the group has committed and what the topic holds, summed over the partitions this
/// auditor does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub committed: i64,
    pub end: i64,
}

/// What this auditor has to read of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Holding {
    /// No partitions assigned.
    #[default]
    Nothing,
    /// Partitions assigned, every one read and committed to the topic's end.
    CaughtUp,
    /// Partitions assigned with messages still to read: busy, not stuck.
    Reading,
}

/// What the main loop should do after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// Stuck: report unhealthy and rejoin the group.
    Stalled,
}

/// Watches, while this auditor has nothing of its own to read, whether the group makes progress
/// on the partitions it does not hold.
#[derive(Debug)]
pub struct Watchdog {
    /// How long an empty assignment over a standing backlog is tolerated.
    empty: Duration,
    /// How long a caught-up assignment beside another member's standing backlog is tolerated.
    caught_up: Duration,
    /// Since when this auditor has had nothing to read, and the backlog then.
    idle: Option<(Instant, Option<Backlog>)>,
}

impl Watchdog {
    /// `empty`: the patience with an empty assignment (longer than a rebalance takes);
    /// `caught_up`: with a caught-up one (longer than another member may legitimately wait for
    /// ClickHouse with its partitions held).
    pub fn new(empty: Duration, caught_up: Duration) -> Self {
        Self {
            empty,
            caught_up,
            idle: None,
        }
    }

    /// Whether the watchdog wants a backlog reading now (this auditor has had nothing to read
    /// for its patience).
    pub fn due(&mut self, holding: Holding) -> bool {
        let patience = match holding {
            Holding::Reading => {
                self.idle = None;
                return false;
            }
            Holding::Nothing => self.empty,
            Holding::CaughtUp => self.caught_up,
        };
        let (since, _) = self.idle.get_or_insert((Instant::now(), None));
        since.elapsed() >= patience
    }

    /// Judges a backlog reading taken because [`Watchdog::due`] said so. The first reading is
    /// the baseline; a later one is a stall when nothing was committed since and unread
    /// messages remain.
    pub fn judge(&mut self, backlog: Backlog) -> Verdict {
        let Some((since, baseline)) = self.idle.as_mut() else {
            return Verdict::Fine;
        };
        match baseline.replace(backlog) {
            Some(before)
                if before.committed == backlog.committed && backlog.end > backlog.committed =>
            {
                self.idle = None;
                Verdict::Stalled
            }
            _ => {
                *since = Instant::now();
                Verdict::Fine
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_judged_only_on_partitions_held_and_read_to_the_end() {
        let lags = Lags::default();
        lags.set(BTreeMap::from([(0, 0), (1, 5), (2, 0)]));
        let held = lags.caught_up(&BTreeSet::from([0, 1]));
        assert!(held.covers(Some(0)));
        assert!(!held.covers(Some(1)), "behind");
        assert!(!held.covers(Some(2)), "not held");
        assert!(!held.covers(None), "not every partition");
        let all = lags.caught_up(&BTreeSet::from([0, 1, 2]));
        assert!(!all.covers(None), "partition 1 is behind");
        lags.set(BTreeMap::from([(0, 0), (1, 0), (2, 0)]));
        assert!(lags.caught_up(&BTreeSet::from([0, 1, 2])).covers(None));
        assert!(!Lags::default().caught_up(&BTreeSet::new()).covers(None));
    }

    #[test]
    fn an_empty_assignment_is_a_stall_only_while_the_group_makes_no_progress() {
        let mut dog = Watchdog::new(Duration::ZERO, Duration::ZERO);
        assert!(!dog.due(Holding::Reading));
        assert!(dog.due(Holding::Nothing));
        let standing = Backlog {
            committed: 10,
            end: 50,
        };
        assert_eq!(
            dog.judge(standing),
            Verdict::Fine,
            "first reading: baseline"
        );
        assert!(dog.due(Holding::Nothing));
        let moving = Backlog {
            committed: 20,
            end: 60,
        };
        assert_eq!(
            dog.judge(moving),
            Verdict::Fine,
            "another member is reading"
        );
        assert!(dog.due(Holding::Nothing));
        assert_eq!(dog.judge(moving), Verdict::Stalled);
        assert!(dog.due(Holding::Nothing));
        let done = Backlog {
            committed: 60,
            end: 60,
        };
        assert_eq!(dog.judge(done), Verdict::Fine);
        assert_eq!(
            dog.judge(done),
            Verdict::Fine,
            "nothing to read is idle, not stuck"
        );
    }

    #[test]
    fn a_caught_up_auditor_beside_partitions_no_one_reads_is_stalled_after_its_patience() {
        let lags = Lags::default();
        lags.set(BTreeMap::from([(0, 7), (1, 7), (2, 0), (3, 0)]));
        let holding = lags.caught_up(&BTreeSet::from([2, 3])).holding();
        assert_eq!(holding, Holding::CaughtUp);
        assert_eq!(
            lags.caught_up(&BTreeSet::from([1, 2])).holding(),
            Holding::Reading
        );
        assert_eq!(lags.caught_up(&BTreeSet::new()).holding(), Holding::Nothing);

        let mut dog = Watchdog::new(Duration::ZERO, Duration::from_secs(3600));
        assert!(!dog.due(holding), "a caught-up auditor waits longer");
        let mut dog = Watchdog::new(Duration::from_secs(3600), Duration::ZERO);
        assert!(dog.due(holding));
        let orphaned = Backlog {
            committed: 100,
            end: 114,
        };
        assert_eq!(dog.judge(orphaned), Verdict::Fine, "baseline");
        assert!(dog.due(holding));
        assert_eq!(dog.judge(orphaned), Verdict::Stalled);
        assert!(dog.due(holding));
        assert_eq!(dog.judge(orphaned), Verdict::Fine, "a new baseline");
        assert!(!dog.due(Holding::Reading), "busy with its own");
        assert_eq!(dog.judge(orphaned), Verdict::Fine, "nothing was due");
    }
}
