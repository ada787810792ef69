//! `verdict-loadgen`: how much latency the gateway adds to a `tools/call`.
//!
//! It starts the sample `work-memory` server and a gateway in front of it (binaries from the same
//! target directory), then sends `tools/call list_work_memories` at a fixed rate, open loop, to the
//! server directly and through the gateway in alternating phases (A B A B ...), so both see the
//! same machine conditions. Latency is measured from each call's scheduled send time, so a
//! stalled system cannot hide its queueing (no coordinated omission). Both paths speak the
//! stateless 2026-07-28 revision over HTTP with keep-alive connections.
//!
//! Results are printed as a Markdown table for BENCHMARKS.md. This is a measurement tool, not a
//! test: it asserts nothing.

mod cpu;
mod run;
mod stack;

use clap::Parser;
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "verdict-loadgen",
    about = "Gateway added latency, side by side with the direct path"
)]
pub struct Args {
    /// Calls per second sent in each phase.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    phase_secs: u64,
    /// Direct/gateway phase pairs.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Calls in flight at most (beyond it, calls queue and their latency shows it).
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Extra gateway config lines (TOML), e.g. journal settings.
    #[arg(long, default_value = "")]
    gateway_config: String,
    /// Label for the gateway column in the report.
    #[arg(long, default_value = "gateway")]
    label: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = stack::Stack::start(&args.gateway_config)?;
    let direct = run::Target::new("direct", &stack.upstream_url, None);
    let gateway = run::Target::new(&args.label, &stack.gateway_url, Some(stack::API_KEY));
    for target in [&direct, &gateway] {
        target.prepare().await?;
    }
    // Warm both paths (connections, caches) before anything is counted.
    run::phase(
        &direct,
        args.rate,
        Duration::from_secs(1),
        args.max_in_flight,
        &stack.watched,
    )
    .await;
    run::phase(
        &gateway,
        args.rate,
        Duration::from_secs(1),
        args.max_in_flight,
        &stack.watched,
    )
    .await;
    let mut direct_stats = run::Stats::new();
    let mut gateway_stats = run::Stats::new();
    let phase = Duration::from_secs(args.phase_secs);
    for _ in 0..args.rounds {
        direct_stats.merge(
            run::phase(
                &direct,
                args.rate,
                phase,
                args.max_in_flight,
                &stack.watched,
            )
            .await,
        );
        gateway_stats.merge(
            run::phase(
                &gateway,
                args.rate,
                phase,
                args.max_in_flight,
                &stack.watched,
            )
            .await,
        );
    }
    println!(
        "offered rate {} calls/s, {} rounds of {} s per path\n",
        args.rate, args.rounds, args.phase_secs
    );
    println!(
        "{}",
        run::report(&direct_stats, &gateway_stats, &args.label)
    );
    Ok(())
}
