//! Open-loop phases and their statistics.

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use crate::cpu::{self, CpuTimes, Watched};

/// The stateless MCP revision, which carries its protocol fields in `_meta` and its routing
/// fields in headers.
pub const STATELESS: &str = "2026-07-28";

#[derive(Clone)]
pub struct Target {
    pub name: String,
    url: String,
    /// Sent with every call (e.g. `authorization`).
    headers: Vec<(String, String)>,
    /// The MCP revision the calls speak.
    protocol_version: String,
    http: reqwest::Client,
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": STATELESS,
        "io.modelcontextprotocol/clientInfo": {"name": "verdict-loadgen", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

impl Target {
    pub fn new(name: &str, url: &str, headers: Vec<(String, String)>) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()
            .expect("HTTP client");
        Self {
            name: name.into(),
            url: url.into(),
            headers,
            protocol_version: STATELESS.into(),
            http,
        }
    }

    /// Calls in `version` instead of the stateless revision (see `--protocol-version`).
    pub fn speaking(mut self, version: &str) -> Self {
        self.protocol_version = version.into();
        self
    }

    async fn call(&self, tool: &str, arguments: Value) -> Result<(), String> {
        let stateless = self.protocol_version == STATELESS;
        let mut params = json!({"name": tool, "arguments": arguments});
        if stateless {
            params["_meta"] = meta();
        }
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", &self.protocol_version)
            .body(body.to_string());
        if stateless {
            request = request
                .header("mcp-method", "tools/call")
                .header("mcp-name", tool);
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        // A tool error is an answer, not the work measured: it counts as a failed call.
        let tool_error = ["\"isError\":true", "\"isError\": true"]
            .iter()
            .any(|e| text.contains(e));
        let answered = text.contains("\"result\"") && !tool_error;
        if !status.is_success() || !answered {
            return Err(format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            ));
        }
        Ok(())
    }

    /// Stores the value the measured calls read.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        self.call(
            "add_work_memory",
            json!({"project": "bench", "content": "세션 메모"}),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", self.name))
    }
}

pub struct Stats {
    pub latency_us: Histogram<u64>,
    /// CPU time each watched process spent during the phases.
    pub cpu: CpuTimes,
    pub calls: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

impl Stats {
    pub fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            cpu: CpuTimes::new(),
            calls: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            first_error: None,
        }
    }

    pub fn merge(&mut self, other: Stats) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        for (name, time) in other.cpu {
            *self.cpu.entry(name).or_default() += time;
        }
        self.calls += other.calls;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
}

/// The resolution of tokio's timer: a sleep ends up to this much after its deadline.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Sends `rate` calls per second to each of `targets` for `length`, the targets' calls
/// interleaved one by one (so that with two targets both see the same moments of the machine),
/// each measured from its scheduled time (less the timer's tick), and accounts the CPU time the
/// `watched` processes spent meanwhile (to every target's statistics: give one target to
/// attribute CPU per call).
pub async fn phase(
    targets: &[&Target],
    rate: u64,
    length: Duration,
    max_in_flight: usize,
    watched: &Watched,
) -> Vec<Stats> {
    let cpu_before = watched.sample();
    let stats: Vec<_> = targets
        .iter()
        .map(|_| Arc::new(Mutex::new(Stats::new())))
        .collect();
    let targets: Vec<_> = targets.iter().map(|t| Arc::new((*t).clone())).collect();
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let total = (rate as f64 * length.as_secs_f64()) as u64 * targets.len() as u64;
    let interval = Duration::from_secs_f64(1.0 / (rate * targets.len() as u64) as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("semaphore open");
        // A call is late by up to the timer's tick by construction, which is noise, not the
        // system's doing; any lateness beyond it (a stalled generator or a full in-flight
        // window) is counted, so queueing stays visible (no coordinated omission).
        let late = scheduled.elapsed().saturating_sub(TIMER_TICK);
        let sent = Instant::now();
        let which = i as usize % targets.len();
        let (target, stats) = (Arc::clone(&targets[which]), Arc::clone(&stats[which]));
        tasks.push(tokio::spawn(async move {
            let result = target
                .call("list_work_memories", json!({"project": "bench"}))
                .await;
            let micros = (sent.elapsed() + late).as_micros() as u64;
            drop(permit);
            let mut stats = stats.lock().expect("stats lock");
            stats.calls += 1;
            match result {
                Ok(()) => stats.latency_us.saturating_record(micros.max(1)),
                Err(e) => {
                    stats.errors += 1;
                    stats.first_error.get_or_insert(e);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let (elapsed, cpu) = (start.elapsed(), cpu::spent(&cpu_before, &watched.sample()));
    stats
        .into_iter()
        .map(|stats| {
            let mut stats = Arc::try_unwrap(stats)
                .ok()
                .expect("all tasks done")
                .into_inner()
                .expect("stats lock");
            stats.elapsed = elapsed;
            stats.cpu = cpu.clone();
            stats
        })
        .collect()
}

/// The Markdown tables of BENCHMARKS.md; with two paths, what the second adds to the first.
pub fn report(paths: &[(&str, &Stats)]) -> String {
    let q = |s: &Stats, p: f64| s.latency_us.value_at_quantile(p);
    let mut out = String::from("| path | calls | errors | calls/s | p50 µs | p90 µs | p99 µs | max µs |\n|---|---|---|---|---|---|---|---|\n");
    for (name, s) in paths {
        out += &format!(
            "| {name} | {} | {} | {:.0} | {} | {} | {} | {} |\n",
            s.calls,
            s.errors,
            s.rate(),
            q(s, 0.5),
            q(s, 0.9),
            q(s, 0.99),
            s.latency_us.max()
        );
    }
    out += &cpu_report(paths);
    if let [(_, base), (label, other)] = paths {
        let added = |p: f64| q(other, p) as i64 - q(base, p) as i64;
        out += &format!(
            "\nadded by the {label}: p50 {} µs, p99 {} µs\n",
            added(0.5),
            added(0.99)
        );
    }
    for (_, s) in paths {
        if let Some(e) = &s.first_error {
            out += &format!("first error: {e}\n");
        }
    }
    out
}

/// CPU µs per call of each process, per path.
fn cpu_report(paths: &[(&str, &Stats)]) -> String {
    if paths.iter().all(|(_, s)| s.cpu.is_empty()) {
        return String::new();
    }
    let mut out = String::from("\n| path | process | CPU µs per call |\n|---|---|---|\n");
    for (name, s) in paths {
        for (process, time) in &s.cpu {
            let per_call = time.as_micros() as f64 / s.calls.max(1) as f64;
            out += &format!("| {name} | {process} | {per_call:.0} |\n");
        }
    }
    out
}
