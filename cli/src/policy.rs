//! `verdict policy check`: validates a policy file and shows what it does to real tools.
//!
//! With `--gateway-config`, it asks every configured upstream for its tools (as the gateway does)
//! and prints each tool's risk class and the decision an argument-less call would get, plus the
//! rules whose tool/server patterns can apply (argument rules may change the outcome per call).
//! Then it checks argument rules against each tool's input schema (a literal no `enum` value
//! matches is an error, an equality that leaves out longer enum values a warning). An upstream
//! that cannot be reached or launched, or any error, makes the exit status non-zero: a policy
//! checked against nothing is not "valid".

use anyhow::Result;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use verdict_gateway::catalog::Catalog;
use verdict_gateway::decision::{CallInfo, Ruling};
use verdict_gateway::mcp::ClientInfo;
use verdict_gateway::policy::schema_check::Severity;
use verdict_gateway::policy::Policy;
use verdict_gateway::upstream::Upstream;
use verdict_gateway::GatewayConfig;
use verdict_proto::Label;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Validate POLICY; with --gateway-config, classify every upstream tool and show its rule.
    Check(CheckArgs),
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
}

pub fn run(command: Command) -> Result<ExitCode> {
    let Command::Check(args) = command;
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
    let Some(config_path) = &args.gateway_config else {
        return Ok(ExitCode::SUCCESS);
    };
    let config = GatewayConfig::load(Some(config_path))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let upstreams: Vec<Upstream> = config
        .upstreams
        .iter()
        .map(|(name, upstream)| Upstream::new(name, upstream, Default::default()))
        .collect();
    let catalog = runtime.block_on(Catalog::fetch(&upstreams));
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
    Ok(match errors {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// One row per tool: its risk class and what an argument-less call by `agent` gets.
fn print_table(policy: &Policy, catalog: &Catalog, upstreams: &[Upstream], agent: &str) {
    println!(
        "\n{:<28} {:<14} {:<12} {:<24} {:<22} may also apply",
        "TOOL", "UPSTREAM", "RISK", "DECISION", "RULE"
    );
    let client = ClientInfo::default();
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
                client: &client,
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
