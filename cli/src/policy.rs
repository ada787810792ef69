//! `verdict policy check`: validates a policy file and shows what it does to real tools.
//!
//! With `--gateway-config`, it asks every configured upstream for its tools (as the gateway does)
//! and prints each tool's risk class and the decision an argument-less call would get, plus the
//! rules whose tool/server patterns can apply (argument rules may change the outcome per call).
//! Then it checks argument rules against each tool's input schema (a literal no `enum` value
//! matches is an error, an equality that leaves out longer enum values a warning). An upstream
//! that cannot be reached or launched, or any error, makes the exit status non-zero: a policy
//! checked against nothing is not "valid".
//!
//! `--replay` also replays the recorded calls under the policy and fails when it refuses calls
//! that were allowed, unless acknowledged; `verdict policy replay` shows every change (both in
//! `policy_replay.rs`); `verdict policy explain` shows why one recorded call was decided as it was
//! (`policy_explain.rs`).
//!
//! `verdict policy pin` writes the lock file of tool pinning (`policy.lock` beside the policy):
//! the fingerprint of every tool the policy's `"pin"` patterns cover, as the upstreams list them
//! now. It prints what changes against the current lock file first, like a lockfile update in
//! review; `--check` only prints it and fails when the lock file is out of date (CI). The gateway
//! reloads the lock file on change, so re-pinning takes effect without a restart.

use anyhow::Result;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use verdict_gateway::catalog::Catalog;
use verdict_gateway::upstream::Upstream;
use verdict_gateway::GatewayConfig;
use verdict_policy::pin::{pin_key, Fingerprint, LockFile};
use verdict_policy::schema_check::Severity;
use verdict_policy::{CallInfo, Policy, Ruling};
use verdict_proto::Label;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Validate POLICY; with --gateway-config, classify every upstream tool and show its rule.
    Check(CheckArgs),
    /// What a draft policy would have done to the recorded calls (query service): the changes per
    /// rule, agent and tool, with sample calls.
    Replay(crate::policy_replay::ReplayArgs),
    /// Why a recorded call (chain:seq) was decided as it was, under the policy in force and a
    /// draft (query service).
    Explain(crate::policy_explain::ExplainArgs),
    /// Pin the tools that POLICY's "pin" patterns cover, as the upstreams list them now, in the
    /// lock file beside POLICY (policy.lock); prints the change first.
    Pin(PinArgs),
}

#[derive(clap::Args)]
pub struct PinArgs {
    /// The policy file (policy.json); its lock file is written beside it.
    policy: PathBuf,
    /// The gateway config whose upstreams to list.
    #[arg(long)]
    gateway_config: PathBuf,
    /// Print the change only; exit 1 when the lock file is out of date.
    #[arg(long)]
    check: bool,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The policy file (policy.json).
    policy: PathBuf,
    /// A gateway config whose upstreams to list.
    #[arg(long)]
    gateway_config: Option<PathBuf>,
    /// The agent id to evaluate rules for.
    #[arg(long, default_value = "any")]
    agent: String,
    #[command(flatten)]
    gate: crate::policy_replay::GateArgs,
}

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check(args) => check(args),
        Command::Replay(args) => crate::policy_replay::replay(args),
        Command::Explain(args) => crate::policy_explain::explain(args),
        Command::Pin(args) => pin(args),
    }
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let policy = match Policy::load(&args.policy) {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "{}: valid (sha256 {})",
        args.policy.display(),
        hex::encode(policy.sha256)
    );
    let gate_passed = !args.gate.enabled() || crate::policy_replay::gate(&args.policy, &args.gate)?;
    let Some(config_path) = &args.gateway_config else {
        return Ok(if gate_passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    };
    let (upstreams, catalog) = list_tools(config_path)?;
    print_table(&policy, &catalog, &upstreams, &args.agent);
    let mut errors = 0;
    for (upstream, error) in catalog.unreachable() {
        eprintln!("error: upstream {upstream} cannot be reached or launched: {error}");
        errors += 1;
    }
    for tool in catalog.tools() {
        let upstream = &upstreams[tool.upstream].name;
        for finding in policy.check_schema(upstream, [&tool.name, &tool.exposed], &tool.definition)
        {
            let label = match finding.severity {
                Severity::Error => {
                    errors += 1;
                    "error"
                }
                Severity::Warning => "warning",
            };
            eprintln!(
                "{}:{}: {label}: rule {}: {}",
                args.policy.display(),
                finding.line,
                finding.rule_id,
                finding.message
            );
        }
    }
    Ok(match (errors, gate_passed) {
        (0, true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// Every configured upstream, and their tools as listed now.
fn list_tools(config_path: &Path) -> Result<(Vec<Upstream>, Catalog)> {
    let config = GatewayConfig::load(Some(config_path))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let upstreams: Vec<Upstream> = config
        .upstreams
        .iter()
        .map(|(name, upstream)| Upstream::new(name, upstream, Default::default()))
        .collect();
    let catalog = runtime.block_on(Catalog::fetch(&upstreams));
    Ok((upstreams, catalog))
}

/// `verdict policy pin`: see the module doc.
fn pin(args: PinArgs) -> Result<ExitCode> {
    let policy = Policy::load(&args.policy)?;
    let (upstreams, catalog) = list_tools(&args.gateway_config)?;
    if !catalog.unreachable().is_empty() {
        for (upstream, error) in catalog.unreachable() {
            eprintln!("error: upstream {upstream} cannot be reached or launched: {error}");
        }
        eprintln!("nothing pinned: every upstream must answer");
        return Ok(ExitCode::FAILURE);
    }
    let pinned: BTreeMap<String, Fingerprint> = catalog
        .tools()
        .iter()
        .map(|tool| (&upstreams[tool.upstream].name, tool))
        .filter(|(upstream, tool)| policy.pins().pins(upstream, &tool.name))
        .map(|(upstream, tool)| (pin_key(upstream, &tool.name), tool.fingerprint.clone()))
        .collect();
    let next = LockFile::new(pinned);
    let path = LockFile::path_for(&args.policy);
    let diff = policy.lock().diff(&next);
    if diff.is_empty() {
        println!(
            "{}: up to date ({} tools pinned)",
            path.display(),
            next.tools.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}:", path.display());
    for line in &diff {
        println!("{line}");
    }
    if args.check {
        eprintln!("lock file out of date: run `verdict policy pin` after reviewing the change");
        return Ok(ExitCode::FAILURE);
    }
    let staged = path.with_extension("lock.new");
    std::fs::write(&staged, next.to_text())?;
    std::fs::rename(&staged, &path)?;
    println!("pinned {} tools", next.tools.len());
    Ok(ExitCode::SUCCESS)
}

/// One row per tool: its risk class and what an argument-less call by `agent` gets.
fn print_table(policy: &Policy, catalog: &Catalog, upstreams: &[Upstream], agent: &str) {
    println!(
        "\n{:<28} {:<14} {:<12} {:<24} {:<22} may also apply",
        "TOOL", "UPSTREAM", "RISK", "DECISION", "RULE"
    );
    let no_arguments = json!({});
    for tool in catalog.tools() {
        let upstream = &upstreams[tool.upstream].name;
        let risk = policy.risk_of([&tool.name, &tool.exposed], tool.risk);
        let (decision, rule) = if policy.hides(&[&tool.name, &tool.exposed]) {
            ("hide".to_owned(), "hide".to_owned())
        } else {
            let call = CallInfo {
                agent,
                session: "",
                upstream,
                tool: &tool.name,
                exposed: &tool.exposed,
                risk: tool.risk,
                arguments: &no_arguments,
                fingerprint: Some(&tool.fingerprint),
            };
            let verdict = policy.evaluate(&call, risk);
            (decision_label(&verdict.ruling), verdict.rule_id)
        };
        let others: Vec<&str> = policy
            .rules_for(upstream, [&tool.name, &tool.exposed])
            .into_iter()
            .filter(|r| *r != rule)
            .collect();
        println!(
            "{:<28} {:<14} {:<12} {:<24} {:<22} {}",
            tool.exposed,
            upstream,
            risk.class().label(),
            decision,
            rule,
            others.join(", ")
        );
    }
}

fn decision_label(outcome: &Ruling) -> String {
    match outcome {
        Ruling::Allow => "allow".into(),
        Ruling::Deny => "deny".into(),
        Ruling::Hide => "hide".into(),
        Ruling::RateLimited { .. } => "rate_limited".into(),
        Ruling::RequireApproval { timeout } => {
            format!("require_approval {}s", timeout.as_secs())
        }
    }
}
