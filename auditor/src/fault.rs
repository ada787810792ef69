//! The fault-test hook: a chosen batch misbehaves at a chosen point of its store, so tests can
//! put an auditor exactly where its guarantees are hardest to keep — between the insert and the
//! offset commit, between the events and the chain heads, or storing slowly while its partitions
//! move to another auditor.
//!
//! `VERDICT_AUDITOR_FAULT` in the binary:
//! - `N`: abort right after the N-th batch is stored (events and heads), before its offsets are
//!   committed: the window the redelivery rule in [`crate::resolve`] exists for;
//! - `N:rows`: abort after its events, before its chain heads;
//! - a trailing `:pause` logs the same line and then waits there until the process is killed,
//!   so a test can SIGKILL it provably inside the batch while other auditors go on;
//! - `N:hold=SECS`: wait SECS before storing the N-th batch's events, then store it as usual: a
//!   slow ClickHouse insert, during which a rebalance must not move the batch's partitions.
//!
//! Several points are separated by commas (`2:hold=15,3:hold=15`: the auditor does not poll
//! during the first hold, so a rebalance is pending when the second batch goes in flight). Each
//! logs [`REACHED`] when it fires.

use std::time::Duration;

/// The line every fault logs when it fires.
pub const REACHED: &str = "VERDICT_AUDITOR_FAULT reached";

/// Where a batch's store stands when the hook is consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Start,
    RowsStored,
    HeadsStored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Abort once the rows are stored, before the heads (else once both are, before the commit);
    /// with `pause`, wait there to be killed.
    Abort { before_heads: bool, pause: bool },
    /// Wait this long before storing anything, then go on.
    Hold(Duration),
}

/// Which batch (1-based) misbehaves, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPoint {
    pub batch: u64,
    pub fault: Fault,
}

impl std::str::FromStr for FaultPoint {
    type Err = String;

    /// `N`, `N:rows`, `N:pause`, `N:rows:pause` or `N:hold=SECS`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (n, how) = text.split_once(':').unwrap_or((text, ""));
        let fault = match how {
            "" => abort(false, false),
            "rows" => abort(true, false),
            "pause" => abort(false, true),
            "rows:pause" => abort(true, true),
            _ => match how.strip_prefix("hold=").map(str::parse) {
                Some(Ok(secs)) => Fault::Hold(Duration::from_secs(secs)),
                _ => {
                    return Err(format!(
                        "{text:?}: expected N[:rows][:pause] or N:hold=SECS"
                    ))
                }
            },
        };
        let batch = n
            .parse()
            .map_err(|_| format!("{text:?}: expected a batch number"))?;
        Ok(Self { batch, fault })
    }
}

fn abort(before_heads: bool, pause: bool) -> Fault {
    Fault::Abort {
        before_heads,
        pause,
    }
}

/// The fault points of one auditor (none outside tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults(Vec<FaultPoint>);

impl std::str::FromStr for Faults {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl Faults {
    /// Fires the fault set for `batch` at `stage`, if any.
    pub async fn reach(&self, batch: u64, stage: Stage) {
        for point in self.0.iter().filter(|point| point.batch == batch) {
            point.fire(stage).await;
        }
    }
}

impl FaultPoint {
    async fn fire(&self, stage: Stage) {
        let batch = self.batch;
        match self.fault {
            Fault::Hold(hold) if stage == Stage::Start => {
                tracing::error!(
                    batch,
                    ?hold,
                    "{REACHED}: holding the batch before storing it"
                );
                tokio::time::sleep(hold).await;
            }
            Fault::Abort {
                before_heads,
                pause,
            } if stage == at(before_heads) => {
                tracing::error!(
                    batch,
                    before_heads,
                    pause,
                    "{REACHED}: stopping before commit"
                );
                if pause {
                    std::future::pending::<()>().await;
                }
                std::process::abort();
            }
            _ => {}
        }
    }
}

fn at(before_heads: bool) -> Stage {
    if before_heads {
        Stage::RowsStored
    } else {
        Stage::HeadsStored
    }
}

#[cfg(test)]
mod tests {
    use super::{abort, Fault, FaultPoint, Faults};
    use std::time::Duration;

    #[test]
    fn fault_points_parse_and_bad_ones_are_refused() {
        let point = |batch, fault| FaultPoint { batch, fault };
        assert_eq!("3".parse(), Ok(point(3, abort(false, false))));
        assert_eq!("3:rows".parse(), Ok(point(3, abort(true, false))));
        assert_eq!("3:pause".parse(), Ok(point(3, abort(false, true))));
        assert_eq!("3:rows:pause".parse(), Ok(point(3, abort(true, true))));
        let hold = Fault::Hold(Duration::from_secs(20));
        assert_eq!("2:hold=20".parse(), Ok(point(2, hold)));
        for bad in [
            "",
            "x",
            "3:pause:rows",
            "3:heads",
            "3:rows:",
            "3:hold",
            "3:hold=",
            "3:hold=-1",
            "x:hold=2",
        ] {
            assert!(bad.parse::<FaultPoint>().is_err(), "{bad:?}");
        }
        let two: Faults = "2:hold=15,3:rows".parse().unwrap();
        assert_eq!(
            two,
            Faults(vec![
                point(2, Fault::Hold(Duration::from_secs(15))),
                point(3, abort(true, false))
            ])
        );
        assert!("2:hold=15,".parse::<Faults>().is_err());
    }
}
