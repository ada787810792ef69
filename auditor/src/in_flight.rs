//! The batch being stored, reachable from both places that must finish it: the main loop, and
//! the consumer's revoke callback.
//!
//! Why the callback: a batch's offsets are committed only after its rows are stored. If its
//! partitions moved to another auditor while it was still being stored, the new owner would
//! read them from the last committed offset, load chain heads that do not include the batch
//! yet, and store the same events a second time — which `FINAL` hides in `events` but the
//! hourly sums in `event_counts` cannot. So, as Kafka's consumer contract prescribes for
//! `onPartitionsRevoked`, the revoke callback finishes the batch in flight and commits it
//! before the group may hand its partitions on: a group coordinator does not assign them while a
//! member has not rejoined, and a member rejoins only once its callback returns.
//!
//! The guarantee is bounded: a coordinator waits for a member only up to the rebalance timeout
//! (librdkafka's `max.poll.interval.ms`, 300 s), so a batch that cannot be stored for longer
//! (ClickHouse down) may land after the new owner's rows; and tansu 0.6 completes a rebalance
//! once the group's leader has rejoined, without waiting for the others (README, "A rebalance
//! while a batch is in flight").

use crate::store::Stopped;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::task::{JoinError, JoinHandle};

/// Partition → next offset to read: what a stored batch lets the auditor commit.
pub type Offsets = BTreeMap<i32, i64>;

/// A batch that could not be stored (its offsets stay uncommitted).
#[derive(Debug, thiserror::Error)]
pub enum StoreFailed {
    #[error(transparent)]
    Stopped(#[from] Stopped),
    #[error("the task storing a batch failed: {0}")]
    Task(#[from] JoinError),
}

/// The task storing a batch; it yields the offsets to commit.
pub type Task = JoinHandle<Result<Offsets, Stopped>>;

/// At most one batch being stored.
#[derive(Debug, Default)]
pub struct InFlight {
    task: Mutex<Option<Task>>,
    /// A failure met by the revoke callback, which cannot return it: the main loop's next
    /// [`InFlight::finish`] does.
    failed: Mutex<Option<StoreFailed>>,
}

impl InFlight {
    /// Hands over the task storing the next batch; the previous one must be finished.
    pub fn start(&self, task: Task) {
        let previous = lock(&self.task).replace(task);
        debug_assert!(previous.is_none(), "a batch was still in flight");
    }

    /// Waits until the batch in flight, if any, is stored and returns its offsets to commit.
    pub async fn finish(&self) -> Result<Option<Offsets>, StoreFailed> {
        if let Some(failed) = lock(&self.failed).take() {
            return Err(failed);
        }
        let task = lock(&self.task).take();
        match task {
            Some(task) => Ok(Some(task.await??)),
            None => Ok(None),
        }
    }

    /// [`InFlight::finish`] from a synchronous callback running on the runtime (librdkafka's
    /// rebalance callback, served inside the main loop's poll): blocks this thread only. A
    /// failure is kept for the main loop, and nothing is returned to commit.
    pub fn finish_blocking(&self) -> Option<Offsets> {
        let task = lock(&self.task).take()?;
        let runtime = tokio::runtime::Handle::current();
        let outcome = tokio::task::block_in_place(|| runtime.block_on(task));
        match outcome
            .map_err(StoreFailed::from)
            .and_then(|stored| Ok(stored?))
        {
            Ok(offsets) => Some(offsets),
            Err(failed) => {
                *lock(&self.failed) = Some(failed);
                None
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::{InFlight, Offsets, StoreFailed};
    use crate::store::Stopped;
    use std::time::Duration;

    fn offsets(next: i64) -> Offsets {
        Offsets::from([(0, next)])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_callback_waits_for_the_batch_and_the_loop_then_has_nothing_to_commit() {
        let in_flight = InFlight::default();
        in_flight.start(tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(offsets(7))
        }));
        assert_eq!(in_flight.finish_blocking(), Some(offsets(7)));
        assert_eq!(in_flight.finish().await.unwrap(), None);
        assert_eq!(in_flight.finish_blocking(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_the_callback_met_is_the_loops_next_error() {
        let in_flight = InFlight::default();
        in_flight.start(tokio::spawn(async { Err(Stopped) }));
        assert_eq!(in_flight.finish_blocking(), None);
        assert!(matches!(
            in_flight.finish().await,
            Err(StoreFailed::Stopped(Stopped))
        ));
        assert_eq!(in_flight.finish().await.unwrap(), None);
    }
}
