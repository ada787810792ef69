//! A fleet of real gateways for load tests: each its own process, chain and key, in front of its
//! own sample `work-memory` server (stdio), shipping to one topic; and a deterministic mix of
//! `tools/call` decisions driven through them by several agents.
//!
//! Why a deterministic mix: the cluster tests compare a cluster's answers with a single server's
//! answers to the *same calls* made through a fresh stack. Which call is allowed, denied or
//! rate-limited must then depend only on the call's place in the plan, never on timing: each
//! agent's calls to one gateway share one stateless session (`<agent>/<client name>`), the rate
//! limit's window outlasts any run, and the policy denies by tool and arguments alone.

use crate::broker::Broker;
use crate::mcp::{work_memory_bin, HttpProcess};
use crate::stateless::StatelessClient;
use crate::Result;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The topic every gateway ships to.
pub const TOPIC: &str = "verdict.events";
/// The agents driving the calls (their API key is `key-<agent>`).
pub const AGENTS: [&str; 4] = ["agent-a", "agent-b", "agent-c", "agent-d"];
/// Calls in flight at once over the whole fleet.
const IN_FLIGHT: usize = 24;
const SHIPPED_WITHIN: Duration = Duration::from_secs(300);

/// Denies session deletes and destructive tools, rate-limits session operations, allows reads.
const POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "rules": [
    {"id": "no-delete",
     "match": {"tool": "session_manager", "arguments": {"action": {"glob": "delete_session*"}}},
     "action": "deny", "reason": "sessions are deleted by humans only"},
    {"id": "session-ops", "match": {"tool": "session_manager"},
     "action": "allow", "rate_limit": {"max": 20, "window": 86400}},
    {"id": "no-destructive", "match": {"risk": "destructive"},
     "action": "deny", "reason": "destructive memory operations are done by humans only"},
    {"id": "reads", "match": {"tool": "list_work_memories"}, "action": "allow"}
  ]
}"#;

/// Gateways `gw-1` … `gw-N` (their chain ids), killed on drop.
#[derive(Debug)]
pub struct Gateways {
    gateways: Vec<HttpProcess>,
    _dir: tempfile::TempDir,
}

impl Gateways {
    /// `count` gateways shipping to [`TOPIC`] on `broker` (which must exist).
    pub fn start(broker: &Broker, count: usize) -> Result<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let policy = dir.path().join("policy.json");
        std::fs::write(&policy, POLICY).expect("writing the policy");
        let gateways = (1..=count)
            .map(|i| HttpProcess::gateway(&config(&policy, &format!("gw-{i}"), broker)))
            .collect::<Result<_>>()?;
        Ok(Self {
            gateways,
            _dir: dir,
        })
    }

    /// Each gateway's public key and the one chain it may sign, as the auditor trusts them.
    pub fn keys(&self) -> Vec<(PathBuf, Option<Vec<String>>)> {
        self.gateways
            .iter()
            .enumerate()
            .map(|(i, g)| (g.public_key(), Some(vec![format!("gw-{}", i + 1)])))
            .collect()
    }

    /// Makes the first `decisions` calls of the plan ([`planned_call`]), [`IN_FLIGHT`] at a
    /// time; every call must get a tool result (allowed or refused).
    pub async fn drive(&self, decisions: usize) {
        let clients: Vec<Vec<StatelessClient>> = self
            .gateways
            .iter()
            .map(|g| {
                AGENTS
                    .iter()
                    .map(|a| StatelessClient::new(&g.url(), &api_key(a)))
                    .collect()
            })
            .collect();
        let calls = futures_util::stream::iter(0..decisions).map(|i| {
            let call = planned_call(i, clients.len());
            let client = &clients[call.gateway][call.agent];
            async move {
                let result = client.call(call.tool, call.arguments).await;
                result.unwrap_or_else(|e| panic!("call {i} ({}): {e}", call.tool));
            }
        });
        calls.buffer_unordered(IN_FLIGHT).collect::<()>().await;
    }

    /// Waits until every gateway has journaled the outcome of every call it forwarded (outcomes
    /// are appended after the agent has its answer) and shipped its whole journal; returns each
    /// chain's last seq.
    pub async fn shipped(&self) -> BTreeMap<String, u64> {
        let start = Instant::now();
        let mut heads = BTreeMap::new();
        for (i, gateway) in self.gateways.iter().enumerate() {
            loop {
                let url = format!("{}/metrics", gateway.metrics_url());
                let text = reqwest::get(url).await.unwrap().text().await.unwrap();
                let written = sum(&text, "verdict_gateway_journal_seq");
                let shipped = sum(&text, "verdict_gateway_shipped_seq");
                let allowed = sum(&text, "verdict_gateway_decisions_total{decision=\"allow\"");
                let outcomes = sum(&text, "verdict_gateway_outcomes_total");
                if written > 0.0 && shipped == written && outcomes == allowed {
                    heads.insert(format!("gw-{}", i + 1), written as u64);
                    break;
                }
                assert!(
                    start.elapsed() < SHIPPED_WITHIN,
                    "gw-{}: shipped {shipped} of {written}, {outcomes} outcomes of {allowed} allowed calls:\n{}",
                    i + 1,
                    gateway.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        heads
    }
}

/// The sum of the samples of `series` (a metric name, optionally with the start of its labels)
/// in a Prometheus text exposition.
fn sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(series))
        .filter(|rest| rest.starts_with([' ', '{', ',', '}']))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One call of the plan: through which gateway, as which agent, what.
#[derive(Debug, Clone)]
pub struct PlannedCall {
    pub gateway: usize,
    pub agent: usize,
    pub tool: &'static str,
    pub arguments: Value,
}

/// Call `i` over `gateways` gateways: one in ten a session delete (denied, on one of seven
/// sessions), one in ten a session listing (rate-limited past 20 per agent and
/// gateway), one in ten a destructive delete (denied), the rest reads (allowed).
pub fn planned_call(i: usize, gateways: usize) -> PlannedCall {
    let (tool, arguments) = match i % 10 {
        0 => (
            "session_manager",
            json!({"action": "delete_session", "session_id": format!("s{}", i % 7), "confirm": true}),
        ),
        1 => ("session_manager", json!({"action": "list_sessions"})),
        2 => ("delete_work_memory", json!({"id": format!("m{i}")})),
        _ => ("list_work_memories", json!({"project": "cluster"})),
    };
    PlannedCall {
        gateway: i % gateways,
        agent: (i / gateways) % AGENTS.len(),
        tool,
        arguments,
    }
}

fn api_key(agent: &str) -> String {
    format!("key-{agent}")
}

fn config(policy: &std::path::Path, chain_id: &str, broker: &Broker) -> String {
    let mut text = format!(
        "metrics_listen = \"127.0.0.1:0\"\npolicy = {:?}\n",
        policy.display().to_string()
    );
    for agent in AGENTS {
        text += &format!(
            "[[agents]]\nid = \"{agent}\"\napi_key_sha256 = \"{}\"\n",
            verdict_service::credentials::digest(&api_key(agent))
        );
    }
    text + &format!(
        "[upstreams.memory]\ncommand = {:?}\n\
         [audit]\nchain_id = \"{chain_id}\"\ncheckpoint_secs = 86400\n\
         [audit.kafka]\nbrokers = \"{}\"\ntopic = \"{TOPIC}\"\n",
        work_memory_bin().display().to_string(),
        broker.bootstrap()
    )
}
