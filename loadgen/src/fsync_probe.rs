//! The disk's own `fdatasync` latency, measured while the load runs.
//!
//! Why: issue 20 judges the gateway's added p99 against what the disk itself costs at the same
//! moment (a virtio disk here: p50 ≈ 1 ms, p99 anywhere from 2 to 50 ms depending on its
//! neighbours). A figure taken at another time says nothing about the run, so the probe runs on
//! its own thread during the phases: it appends a small record to a file in the journal's
//! directory and `fdatasync`s it, at a fixed pace (every 20 ms) so it adds little I/O of its own.

use hdrhistogram::Histogram;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PACE: Duration = Duration::from_millis(20);

/// A running probe; [`Probe::finish`] stops it and returns the latencies it saw.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<std::io::Result<Histogram<u64>>>,
}

impl Probe {
    /// Starts probing with a file of its own in `dir` (removed when the probe finishes).
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("fsync-probe");
        let file = File::create(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let result = probe(file, &flag);
            let _ = std::fs::remove_file(&path);
            result
        });
        Ok(Self { stop, thread })
    }

    pub fn finish(self) -> std::io::Result<Histogram<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("fsync probe thread")
    }
}

fn probe(mut file: File, stop: &AtomicBool) -> std::io::Result<Histogram<u64>> {
    let mut latency_us = Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let record = [0x5a_u8; 256];
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        let took = began.elapsed();
        latency_us.saturating_record(took.as_micros().max(1) as u64);
        std::thread::sleep(PACE.saturating_sub(took));
    }
    Ok(latency_us)
}

/// One line for the report: `fdatasync p50 / p99 / max` in µs and the number of samples.
pub fn summary(latency_us: &Histogram<u64>) -> String {
    format!(
        "disk fdatasync during the run: p50 {} µs, p99 {} µs, max {} µs ({} samples, one per {} ms)",
        latency_us.value_at_quantile(0.5),
        latency_us.value_at_quantile(0.99),
        latency_us.max(),
        latency_us.len(),
        PACE.as_millis()
    )
}
