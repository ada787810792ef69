//! Is this auditor actually reading the topic? Two questions the rest of the auditor must not
//! answer from its own silence.
//!
//! 1. **Caught up** ([`CaughtUp`]): a chain is *silent* only when the topic itself has nothing
//!    newer from it. The auditor knows that only for partitions it holds and has committed to the
//!    end (librdkafka's statistics: lag 0 against the high watermark). A chain on any other
//!    partition — revoked, never assigned, behind — is not judged at all; a chain whose partition
//!    is not known yet (restored from ClickHouse, not heard since) only when this auditor holds
//!    every partition of the topic, all caught up.
//! 2. **Stalled** ([`Watchdog`]): a consumer with no partitions while the group's committed
//!    offsets stand still below the topic's end is not idle, it is stuck — seen after a `kill -9`
//!    and restart, when the group handed the new member an empty assignment and never rebalanced
//!    again. Such an auditor reports unhealthy and rejoins the group with a fresh consumer.
//!    Another auditor of the group that is making progress keeps the committed offsets moving,
//!    so an auditor that legitimately holds nothing is never mistaken for a stuck one.

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
        CaughtUp { partitions, all }
    }
}

/// The partitions this auditor holds and has read to the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaughtUp {
    partitions: BTreeSet<i32>,
    /// Every partition of the topic is among them.
    all: bool,
}

impl CaughtUp {
    /// Whether a chain last heard on `partition` (`None`: not heard since the heads were loaded)
    /// can be judged silent.
    pub fn covers(&self, partition: Option<i32>) -> bool {
        match partition {
            Some(p) => self.partitions.contains(&p),
            None => self.all,
        }
    }
}

/// What the group has committed and what the topic holds, summed over its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub committed: i64,
    pub end: i64,
}

/// What the main loop should do after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// Stuck: report unhealthy and rejoin the group.
    Stalled,
}

/// Watches for an empty assignment while the group makes no progress on a backlog.
#[derive(Debug)]
pub struct Watchdog {
    patience: Duration,
    /// Since when the assignment is empty, and the backlog then.
    idle: Option<(Instant, Option<Backlog>)>,
}

impl Watchdog {
    /// `patience`: how long an empty assignment over a standing backlog is tolerated (longer than
    /// a rebalance takes).
    pub fn new(patience: Duration) -> Self {
        Self {
            patience,
            idle: None,
        }
    }

    /// Whether the watchdog wants a backlog reading now (the assignment has been empty for its
    /// patience).
    pub fn due(&mut self, assigned: bool) -> bool {
        if assigned {
            self.idle = None;
            return false;
        }
        let (since, _) = self.idle.get_or_insert((Instant::now(), None));
        since.elapsed() >= self.patience
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
        let mut dog = Watchdog::new(Duration::ZERO);
        assert!(!dog.due(true));
        assert!(dog.due(false));
        let standing = Backlog {
            committed: 10,
            end: 50,
        };
        assert_eq!(
            dog.judge(standing),
            Verdict::Fine,
            "first reading: baseline"
        );
        assert!(dog.due(false));
        let moving = Backlog {
            committed: 20,
            end: 60,
        };
        assert_eq!(
            dog.judge(moving),
            Verdict::Fine,
            "another member is reading"
        );
        assert!(dog.due(false));
        assert_eq!(dog.judge(moving), Verdict::Stalled);
        assert!(dog.due(false));
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
}
