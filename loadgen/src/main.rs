//! `verdict-loadgen`: how much latency the gateway adds to a `tools/call`.
//!
//! It starts the sample `work-memory` server and a gateway in front of it (binaries from the same
//! target directory), then sends `tools/call list_work_memories` at a fixed rate, open loop, to the
//! server directly and through the gateway in alternating phases (A B A B ...), so both see the
//! same machine conditions. Latency is measured from each call's scheduled send time (less the
//! timer's 1 ms tick, which would otherwise add up to 1 ms of noise to every call), so a
//! stalled system cannot hide its queueing (no coordinated omission). Both paths speak the
//! stateless 2026-07-28 revision over HTTP with keep-alive connections.
//!
//! With `--url` it sends the same load to any MCP endpoint instead (a gateway or peer started by
//! someone else, e.g. `scripts/bench-profile`), with the headers given, and reports the CPU time per
//! call of the processes named by `--watch`: the same numbers for every product.
//!
//! Results are printed as a Markdown table for BENCHMARKS.md. This is a measurement tool, not a
//! test: it asserts nothing.

mod cpu;
mod fsync_probe;
mod run;
mod stack;

use clap::Parser;
use hdrhistogram::Histogram;
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "verdict-loadgen",
    about = "Gateway added latency, side by side with the direct path; or the same load against any MCP endpoint (--url)"
)]
pub struct Args {
    /// Calls per second sent in each phase.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    phase_secs: u64,
    /// Direct/gateway phase pairs (with --url: phases).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Calls in flight at most (beyond it, calls queue and their latency shows it).
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Extra gateway config lines (TOML), e.g. journal settings.
    #[arg(long, default_value = "")]
    gateway_config: String,
    /// Label for the gateway column in the report (with --url: for the endpoint).
    #[arg(long, default_value = "gateway")]
    label: String,
    /// Load this MCP endpoint (Streamable HTTP, stateless 2026-07-28 calls) instead of starting
    /// the sample server and a gateway.
    #[arg(long)]
    url: Option<String>,
    /// A header sent with every call to --url, as `Name: value` (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// The MCP revision of the calls to --url: 2026-07-28 (stateless, `_meta` and the
    /// `mcp-method`/`mcp-name` headers) or an earlier one, sent as a plain session-less
    /// `tools/call` with only its `mcp-protocol-version` header (for peers that refuse 2026-07-28).
    #[arg(long, default_value = run::STATELESS)]
    protocol_version: String,
    /// A process whose CPU time per call is reported, as `NAME=PID` (repeatable; with --url).
    #[arg(long = "watch", value_parser = parse_watch)]
    watch: Vec<(String, u32)>,
    /// Measure the disk's own `fdatasync` latency in this directory while the load runs (give
    /// the journal's directory), reported under the table.
    #[arg(long, value_name = "DIR")]
    fsync_probe: Option<std::path::PathBuf>,
    /// Send the direct and the gateway calls interleaved one by one in the same phases (each
    /// path at --rate), instead of alternating phases: both paths then meet the same moments of
    /// the machine, which makes the added latency precise; CPU per call is not reported then.
    #[arg(long)]
    interleave: bool,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected `Name: value`"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

fn parse_watch(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=PID"))?;
    let pid = pid.parse().map_err(|_| format!("{pid:?} is not a pid"))?;
    Ok((name.to_owned(), pid))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.url {
        Some(url) => endpoint(&args, url).await,
        None => side_by_side(&args).await,
    }
}

/// The same load against one endpoint, with the processes named by --watch accounted.
async fn endpoint(args: &Args, url: &str) -> anyhow::Result<()> {
    let mut watched = cpu::Watched::default();
    for (name, pid) in &args.watch {
        watched.add(name, *pid);
    }
    let target =
        run::Target::new(&args.label, url, args.headers.clone()).speaking(&args.protocol_version);
    let phases = [&target];
    let (stats, fsync) = measure(args, &phases, &watched).await?;
    print_report(args, &[(&args.label, &stats[0])], fsync.as_ref());
    Ok(())
}

/// The sample server alone and through a gateway, in alternating phases.
async fn side_by_side(args: &Args) -> anyhow::Result<()> {
    let stack = stack::Stack::start(&args.gateway_config)?;
    let direct = run::Target::new("direct", &stack.upstream_url, Vec::new());
    let bearer = (
        "authorization".to_owned(),
        format!("Bearer {}", stack::API_KEY),
    );
    let gateway = run::Target::new(&args.label, &stack.gateway_url, vec![bearer]);
    for target in [&direct, &gateway] {
        target.prepare().await?;
    }
    let (stats, fsync) = measure(args, &[&direct, &gateway], &stack.watched).await?;
    let paths = [("direct", &stats[0]), (&args.label, &stats[1])];
    print_report(args, &paths, fsync.as_ref());
    Ok(())
}

/// Warms every target for a second, then runs `rounds` phases on each in turn, or with
/// `--interleave` `rounds` phases of all targets' calls interleaved (with the disk's own
/// fdatasync latency over the same time, when asked).
async fn measure(
    args: &Args,
    targets: &[&run::Target],
    watched: &cpu::Watched,
) -> std::io::Result<(Vec<run::Stats>, Option<Histogram<u64>>)> {
    let (rate, in_flight) = (args.rate, args.max_in_flight);
    // Warm every path (connections, caches) before anything is counted.
    for target in targets {
        let warm = Duration::from_secs(1);
        run::phase(&[*target], rate, warm, in_flight, watched).await;
    }
    let mut stats: Vec<run::Stats> = targets.iter().map(|_| run::Stats::new()).collect();
    let phase = Duration::from_secs(args.phase_secs);
    let probe = match &args.fsync_probe {
        Some(dir) => Some(fsync_probe::Probe::start(dir)?),
        None => None,
    };
    // Interleaved, every process serves calls of every path: CPU per call is not attributable.
    let (groups, watched): (Vec<Vec<usize>>, _) = match args.interleave {
        true => (vec![(0..targets.len()).collect()], &cpu::Watched::default()),
        false => ((0..targets.len()).map(|i| vec![i]).collect(), watched),
    };
    for _ in 0..args.rounds {
        for group in &groups {
            let phased: Vec<_> = group.iter().map(|&i| targets[i]).collect();
            let phases = run::phase(&phased, rate, phase, in_flight, watched).await;
            for (&i, phase) in group.iter().zip(phases) {
                stats[i].merge(phase);
            }
        }
    }
    let fsync = match probe {
        Some(probe) => Some(probe.finish()?),
        None => None,
    };
    Ok((stats, fsync))
}

fn print_report(args: &Args, paths: &[(&str, &run::Stats)], fsync: Option<&Histogram<u64>>) {
    let how = match args.interleave {
        true => "the paths' calls interleaved",
        false => "per path",
    };
    println!(
        "offered rate {} calls/s per path, {} rounds of {} s, {how}\n",
        args.rate, args.rounds, args.phase_secs
    );
    println!("{}", run::report(paths));
    if let Some(latency_us) = fsync {
        println!("{}", fsync_probe::summary(latency_us));
    }
}
