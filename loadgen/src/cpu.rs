//! CPU time per process, read from `/proc`, so the report can say what one call cost each
//! process (the gateway, the upstream, a peer) next to the latency it added.
//!
//! Wall-clock latency on a shared 2-core machine mostly measures the neighbours; CPU time per
//! call is what a process itself spends and stays comparable between runs. `/proc/PID/stat`'s
//! `utime` and `stime` cover every thread of the process, including threads that have exited.

use std::collections::BTreeMap;
use std::time::Duration;

/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`): fixed at 100 by the Linux user ABI.
const USER_HZ: u64 = 100;

/// The processes whose CPU time a phase accounts, by name.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    pids: Vec<(String, u32)>,
}

/// CPU time per process name.
pub type CpuTimes = BTreeMap<String, Duration>;

impl Watched {
    pub fn add(&mut self, name: &str, pid: u32) {
        self.pids.push((name.to_owned(), pid));
    }

    /// Every watched process's CPU time so far (a process that has gone reads as absent).
    pub fn sample(&self) -> CpuTimes {
        self.pids
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), cpu_time(*pid)?)))
            .collect()
    }
}

/// What each process spent between two samples.
pub fn spent(before: &CpuTimes, after: &CpuTimes) -> CpuTimes {
    after
        .iter()
        .map(|(name, end)| {
            let start = before.get(name).copied().unwrap_or_default();
            (name.clone(), end.saturating_sub(start))
        })
        .collect()
}

/// User plus system time of process `pid`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_micros(ticks * 1_000_000 / USER_HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_grows_as_it_works() {
        let mut watched = Watched::default();
        watched.add("self", std::process::id());
        let before = watched.sample();
        assert!(before.contains_key("self"));
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        let mut x = 0u64;
        let grew = loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let spent = spent(&before, &watched.sample());
            if spent["self"] > Duration::ZERO {
                break true;
            }
            if std::time::Instant::now() > give_up {
                break false;
            }
        };
        assert!(grew, "CPU time never moved while spinning");
    }

    #[test]
    fn a_missing_process_is_absent() {
        let mut watched = Watched::default();
        watched.add("gone", u32::MAX);
        assert!(watched.sample().is_empty());
    }
}
