//! The gateway core: one handler per MCP method, shared by the HTTP and stdio front ends.
//!
//! A request arrives with its [`Session`]; the handler may stream notifications (progress) into
//! `out` and returns the final response, or `None` when the request was cancelled (the MCP spec
//! forbids answering a cancelled request). Every `tools/call` passes the [`Decider`] before
//! anything is forwarded.

use crate::auth::ApiKeys;
use crate::catalog::Catalog;
use crate::config::GatewayConfig;
use crate::decision::{AllowAll, CallInfo, Decider, Outcome};
use crate::jsonrpc::{self, INVALID_PARAMS, METHOD_NOT_FOUND, UPSTREAM_UNAVAILABLE};
use crate::mcp::{self, ClientInfo};
use crate::session::{Session, Sessions};
use crate::upstream::{ProgressSink, Upstream, UpstreamError};
use serde_json::{json, Value};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long one upstream may take to list its tools before the list goes on without it.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Gateway {
    pub keys: ApiKeys,
    pub sessions: Sessions,
    pub max_body_bytes: usize,
    pub max_sessions_per_agent: usize,
    call_timeout: Duration,
    upstreams: Vec<Upstream>,
    catalog: RwLock<Arc<Catalog>>,
    decider: Box<dyn Decider>,
    page_size: usize,
    /// Notified when an upstream announces `tools/list_changed`.
    tools_changed: Arc<Notify>,
}

impl Gateway {
    pub fn new(config: &GatewayConfig) -> Result<Self, crate::auth::AuthConfigError> {
        let tools_changed = Arc::new(Notify::new());
        Ok(Self {
            tools_changed: Arc::clone(&tools_changed),
            keys: ApiKeys::from_config(&config.agents)?,
            sessions: Sessions::new(Duration::from_secs(config.session_idle_secs)),
            max_body_bytes: config.max_body_bytes,
            max_sessions_per_agent: config.max_sessions_per_agent,
            call_timeout: Duration::from_secs(config.call_timeout_secs),
            upstreams: config
                .upstreams
                .iter()
                .map(|(name, cfg)| Upstream::new(name, cfg, Arc::clone(&tools_changed)))
                .collect(),
            catalog: RwLock::new(Arc::new(Catalog::default())),
            decider: Box::new(AllowAll),
            page_size: config.tools_page_size,
        })
    }

    /// Name of the upstream at `index` (as in [`crate::catalog::CatalogTool::upstream`]).
    pub fn upstream_name(&self, index: usize) -> &str {
        &self.upstreams[index].name
    }

    pub fn with_decider(mut self, decider: Box<dyn Decider>) -> Self {
        self.decider = decider;
        self
    }

    /// Refreshes the catalog and tells every session whenever an upstream's tools change.
    pub fn watch_upstreams(self: &Arc<Self>) {
        let gateway = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                gateway.tools_changed.notified().await;
                gateway.refresh_catalog().await;
                gateway.sessions.broadcast(&jsonrpc::notification(
                    "notifications/tools/list_changed",
                    json!({}),
                ));
            }
        });
    }

    /// Connects every upstream and loads the catalog; an upstream that is down is logged and
    /// retried on the next `tools/list`.
    pub async fn warm_up(&self) {
        self.refresh_catalog().await;
    }

    /// Handles one request. Notifications for the agent go to `out`.
    pub async fn handle_request(
        &self,
        session: &Arc<Session>,
        id: Value,
        method: &str,
        params: Value,
        out: &mpsc::Sender<Value>,
        cancel: &CancellationToken,
    ) -> Option<Value> {
        let reply = match method {
            "initialize" => Ok(self.initialize(session, &params)),
            "server/discover" => Ok(mcp::discover_result()),
            "ping" => Ok(json!({})),
            "tools/list" => self.tools_list(&params).await,
            "tools/call" => return self.tools_call(session, id, params, out, cancel).await,
            _ => Err((METHOD_NOT_FOUND, format!("Method not found: {method}"))),
        };
        let stateless = mcp::is_stateless(&session.client().protocol_version);
        Some(match reply {
            Ok(result) => jsonrpc::result(id, mcp::stamp_result(result, method, stateless)),
            Err((code, message)) => jsonrpc::error(id, code, &message),
        })
    }

    /// Handles one notification from the agent.
    pub fn handle_notification(&self, session: &Session, method: &str, params: &Value) {
        if method == "notifications/cancelled" {
            if let Some(request_id) = params.get("requestId") {
                session.cancel(request_id);
            }
        }
    }

    fn initialize(&self, session: &Session, params: &Value) -> Value {
        let version = mcp::negotiate(params["protocolVersion"].as_str());
        session.set_client(ClientInfo::from_initialize(params, version));
        mcp::initialize_result(version)
    }

    /// Every upstream's tools, fetched now.
    pub async fn refresh_catalog(&self) -> Arc<Catalog> {
        let lists = futures_util::future::join_all(self.upstreams.iter().map(|u| async move {
            let listed = tokio::time::timeout(LIST_TIMEOUT, u.list_tools()).await;
            let tools = match listed {
                Ok(Ok(tools)) => tools,
                Ok(Err(e)) => {
                    tracing::warn!(upstream = %u.name, error = %e, "tools/list failed; its tools are absent until it answers");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(upstream = %u.name, "tools/list timed out; its tools are absent until it answers");
                    Vec::new()
                }
            };
            (u.name.clone(), tools)
        }))
        .await;
        let catalog = Arc::new(Catalog::build(&lists));
        *self.catalog.write().expect("catalog lock") = Arc::clone(&catalog);
        catalog
    }

    async fn tools_list(&self, params: &Value) -> Result<Value, (i64, String)> {
        let catalog = self.refresh_catalog().await;
        catalog
            .page(params["cursor"].as_str(), self.page_size, |t| {
                !self.decider.hides(&t.name, &t.exposed)
            })
            .ok_or((INVALID_PARAMS, "Invalid cursor".into()))
    }

    async fn tools_call(
        &self,
        session: &Arc<Session>,
        id: Value,
        params: Value,
        out: &mpsc::Sender<Value>,
        cancel: &CancellationToken,
    ) -> Option<Value> {
        let Some(name) = params["name"].as_str() else {
            return Some(jsonrpc::error(
                id,
                INVALID_PARAMS,
                "tools/call requires params.name",
            ));
        };
        let catalog = Arc::clone(&self.catalog.read().expect("catalog lock"));
        // Routed from the catalog of the last tools/list (agents list before they call). No
        // refresh here: an unknown name must cost what a hidden one costs, or timing would tell
        // them apart.
        let Some(route) = catalog.route(name).cloned() else {
            return Some(unknown_tool(id, name));
        };
        let upstream = &self.upstreams[route.upstream];
        let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
        let client = session.client();
        let call = CallInfo {
            agent: &session.agent,
            session: &session.id,
            client: &client,
            upstream: &upstream.name,
            tool: &route.name,
            exposed: &route.exposed,
            risk: route.risk,
            arguments: &arguments,
        };
        let decision = self.decider.decide(&call);
        let span = tracing::info_span!("tools_call", agent = %session.agent, session = %session.id, upstream = %upstream.name, tool = %route.name, rule = %decision.rule_id);
        span.in_scope(|| tracing::debug!(outcome = ?decision.outcome, "decided"));
        let refusal = match &decision.outcome {
            Outcome::Allow => None,
            Outcome::Hide => return Some(unknown_tool(id, name)),
            Outcome::Deny => Some(format!("[policy denied] rule {}: {}", decision.rule_id, decision.reason)),
            Outcome::RateLimited { .. } => Some(format!("[rate limited] rule {}: {}", decision.rule_id, decision.reason)),
            Outcome::RequireApproval { .. } => Some(format!(
                "[approval required] rule {}: this call needs a human approval, and approvals are not available in this gateway yet; it was not forwarded",
                decision.rule_id
            )),
        };
        if let Some(text) = refusal {
            span.in_scope(|| tracing::info!(outcome = ?decision.outcome, reason = %decision.reason, "call refused"));
            let result = json!({"content": [{"type": "text", "text": text}], "isError": true});
            return Some(jsonrpc::result(
                id,
                mcp::stamp_result(
                    result,
                    "tools/call",
                    mcp::is_stateless(&client.protocol_version),
                ),
            ));
        }
        let mut forwarded = params.clone();
        forwarded["name"] = json!(route.name);
        let progress = params["_meta"]
            .get("progressToken")
            .map(|token| ProgressSink {
                token: token.clone(),
                tx: out.clone(),
            });
        // The deadline cancels through the same token as the agent, so the upstream learns of it.
        let deadline = cancel.child_token();
        let timer = {
            let (deadline, limit) = (deadline.clone(), self.call_timeout);
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                deadline.cancel();
            })
        };
        let result = upstream
            .request("tools/call", forwarded, progress, &deadline)
            .instrument(span)
            .await;
        timer.abort();
        let timed_out = deadline.is_cancelled() && !cancel.is_cancelled();
        match result {
            Ok(mut reply) => {
                reply["id"] = id;
                if let Some(result) = reply.get_mut("result") {
                    let stateless = mcp::is_stateless(&client.protocol_version);
                    *result = mcp::stamp_result(result.take(), "tools/call", stateless);
                }
                Some(reply)
            }
            Err(UpstreamError::Cancelled) if timed_out => Some(jsonrpc::error(
                id,
                UPSTREAM_UNAVAILABLE,
                &format!(
                    "upstream {}: no answer within {} s; the call was cancelled",
                    upstream.name,
                    self.call_timeout.as_secs()
                ),
            )),
            Err(UpstreamError::Cancelled) => None,
            Err(error) => Some(jsonrpc::error(
                id,
                UPSTREAM_UNAVAILABLE,
                &format!("upstream {}: {error}", upstream.name),
            )),
        }
    }
}

/// The error for a tool that does not exist (and, by design, for one the policy hides).
pub fn unknown_tool(id: Value, name: &str) -> Value {
    jsonrpc::error(id, INVALID_PARAMS, &format!("Unknown tool: {name}"))
}
