//! The gateway core: one handler per MCP method, shared by the HTTP and stdio front ends.
//!
//! A request arrives with its [`Session`]; the handler may stream notifications (progress) into
//! `out` and returns the final response, or `None` when the request was cancelled (the MCP spec
//! forbids answering a cancelled request). Every `tools/call` passes the [`Decider`] before
//! anything is forwarded.

use crate::approvals::{Approvals, Resolution};
use crate::audit::event::{self, DecisionFacts};
use crate::audit::Audit;
use crate::catalog::{self as catalogs, Catalog, CatalogTool, Fingerprints};
use crate::config::GatewayConfig;
use crate::decision::{AllowAll, CallInfo, Decider, Ruling};
use crate::jsonrpc::{
    self, AUDIT_UNAVAILABLE, INVALID_PARAMS, METHOD_NOT_FOUND, UPSTREAM_UNAVAILABLE,
};
use crate::mcp::{self, ClientInfo};
use crate::metrics::GatewayMetrics;
use crate::session::{Session, Sessions};
use crate::upstream::{ProgressSink, Upstream, UpstreamError};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use verdict_proto::pb::{self, DecisionKind, OutcomeKind};
use verdict_service::credentials::Credentials;

pub struct Gateway {
    pub keys: Credentials,
    pub sessions: Sessions,
    pub max_body_bytes: usize,
    pub max_sessions_per_agent: usize,
    call_timeout: Duration,
    upstreams: Vec<Upstream>,
    catalog: RwLock<Arc<Catalog>>,
    /// Each upstream's tools as last recorded in a `ToolCatalog` event; held while recording,
    /// so concurrent refreshes record each change once and in order.
    recorded_catalogs: tokio::sync::Mutex<HashMap<String, Fingerprints>>,
    decider: Box<dyn Decider>,
    page_size: usize,
    /// Notified when an upstream announces `tools/list_changed`.
    tools_changed: Arc<Notify>,
    pub audit: Audit,
    pub approvals: Approvals,
    pub metrics: GatewayMetrics,
}

impl Gateway {
    /// A gateway over `config`'s upstreams that records every decision through `audit`.
    pub fn new(
        config: &GatewayConfig,
        audit: Audit,
    ) -> Result<Self, verdict_service::credentials::CredentialError> {
        let tools_changed = Arc::new(Notify::new());
        Ok(Self {
            tools_changed: Arc::clone(&tools_changed),
            keys: Credentials::from_config(&config.agents)?,
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
            recorded_catalogs: tokio::sync::Mutex::default(),
            decider: Box::new(AllowAll),
            page_size: config.tools_page_size,
            audit,
            approvals: Approvals::notifying(config.approval_webhook.clone()),
            metrics: GatewayMetrics::default(),
        })
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

    /// Stops the upstream processes the gateway launched (at shutdown, after the last call).
    pub async fn stop_upstreams(&self) {
        futures_util::future::join_all(self.upstreams.iter().map(Upstream::stop)).await;
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

    /// Every upstream's tools, fetched now; what changed is recorded before calls are routed
    /// by the new catalog.
    pub async fn refresh_catalog(&self) -> Arc<Catalog> {
        let catalog = Arc::new(Catalog::fetch(&self.upstreams).await);
        self.record_catalog(&catalog).await;
        *self.catalog.write().expect("catalog lock") = Arc::clone(&catalog);
        catalog
    }

    /// Records a `ToolCatalog` event for each upstream whose tools differ from the last recorded
    /// (or were never recorded since start); one the journal refuses is kept for later.
    async fn record_catalog(&self, catalog: &Catalog) {
        let mut recorded = self.recorded_catalogs.lock().await;
        for (upstream, current) in catalog.fingerprints() {
            let pinned = |tool: &str| self.decider.pinned(upstream, tool);
            let Some(event) =
                catalogs::catalog_event(upstream, recorded.get(upstream), &current, pinned)
            else {
                continue;
            };
            let body = event::tool_catalog(event);
            if let Err(error) = self.audit.recorder.record(&body).await {
                tracing::warn!(%error, upstream, "tool catalog not journaled yet; kept for later");
                self.audit.recorder.defer(&body);
            }
            recorded.insert(upstream.to_owned(), current);
        }
    }

    async fn tools_list(&self, params: &Value) -> Result<Value, (i64, String)> {
        let catalog = self.refresh_catalog().await;
        catalog
            .page(params["cursor"].as_str(), self.page_size, |t| {
                !self.decider.hides(&t.name, &t.exposed)
            })
            .ok_or((INVALID_PARAMS, "Invalid cursor".into()))
    }

    /// `tools/call`: rule on the call and record the ruling ([`Gateway::rule`]), settle a held
    /// call ([`Gateway::settle`]), then refuse it or forward it ([`Gateway::forward`]).
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
        let Some(route) = catalog.route(name) else {
            let arguments = params.get("arguments");
            return Some(
                self.unknown_tool(session, &catalog, id, name, arguments)
                    .await,
            );
        };
        let null = Value::Null;
        let arguments = params.get("arguments").unwrap_or(&null);
        // No call goes on, forwarded, held or refused, before its ruling is in the journal.
        let client = session.client();
        let ruled = match self.rule(session, route, arguments, &id).await {
            Ok(ruled) => ruled,
            Err(refused) => return Some(jsonrpc::error(id, AUDIT_UNAVAILABLE, &refused)),
        };
        if ruled.ruling == Ruling::Hide {
            return Some(absent_tool(&catalog, id, name));
        }
        let span = ruled.span.clone();
        let (seq, refusal) = self.settle(ruled, cancel).await?;
        let stateless = mcp::is_stateless(&client.protocol_version);
        let event_id = format!("{}:{seq}", self.audit.recorder.chain_id());
        if let Some(text) = refusal {
            span.in_scope(|| tracing::info!(reason = %text, "call refused"));
            let result = json!({"content": [{"type": "text", "text": text}], "isError": true});
            let result = mcp::stamp_result(result, "tools/call", stateless);
            return Some(jsonrpc::result(id, stamp_event(result, &event_id)));
        }
        let call = Forward {
            route,
            params: &params,
            id,
            seq,
            event_id,
            stateless,
        };
        self.forward(call, out, cancel).instrument(span).await
    }

    /// A call to a tool no upstream offers, recorded as an `error` decision.
    async fn unknown_tool(
        &self,
        session: &Session,
        catalog: &Catalog,
        id: Value,
        name: &str,
        arguments: Option<&Value>,
    ) -> Value {
        let facts = DecisionFacts {
            method: "tools/call",
            tool: name,
            arguments,
            decision: DecisionKind::Error,
            rule_id: "gateway.unknown_tool",
            reason: "no upstream offers this tool",
            request_id: Some(&id),
            ..Default::default()
        };
        match self.record(session, &facts).await {
            Ok(_) => absent_tool(catalog, id, name),
            Err(refused) => jsonrpc::error(id, AUDIT_UNAVAILABLE, &refused),
        }
    }

    /// Asks the policy about the call and records its ruling; the journal's refusal otherwise.
    async fn rule(
        &self,
        session: &Session,
        route: &CatalogTool,
        arguments: &Value,
        id: &Value,
    ) -> Result<Ruled, String> {
        let upstream = &self.upstreams[route.upstream];
        let call = CallInfo {
            agent: &session.agent,
            session: &session.id,
            upstream: &upstream.name,
            tool: &route.name,
            exposed: &route.exposed,
            risk: route.risk,
            arguments,
            fingerprint: Some(&route.fingerprint),
        };
        let decision = self.decider.decide(&call);
        let span = tracing::info_span!("tools_call", agent = %session.agent, session = %session.id, upstream = %upstream.name, tool = %route.name, rule = %decision.rule_id, seq = tracing::field::Empty);
        let refused =
            |what: &str| format!("[{what}] rule {}: {}", decision.rule_id, decision.reason);
        let (kind, refusal, approval_id) = match &decision.ruling {
            Ruling::Allow => (DecisionKind::Allow, None, String::new()),
            Ruling::Hide => (DecisionKind::Hide, None, String::new()),
            Ruling::Deny => (
                DecisionKind::Deny,
                Some(refused("policy denied")),
                String::new(),
            ),
            Ruling::RateLimited { .. } => (
                DecisionKind::RateLimited,
                Some(refused("rate limited")),
                String::new(),
            ),
            Ruling::RequireApproval { .. } => (
                DecisionKind::ApprovalRequested,
                None,
                uuid::Uuid::new_v4().to_string(),
            ),
        };
        let facts = DecisionFacts {
            upstream: &upstream.name,
            method: "tools/call",
            tool: &route.name,
            risk: Some(decision.risk),
            arguments: Some(arguments),
            decision: kind,
            rule_id: &decision.rule_id,
            reason: &decision.reason,
            policy_sha256: &decision.policy_sha256,
            request_id: Some(id),
            approval_id: &approval_id,
        };
        let body = self.audit.events.decision(event::actor(session), &facts);
        // A held call's later steps are made from its request decision; other calls need no copy.
        let request = match (&decision.ruling, &body.kind) {
            (Ruling::RequireApproval { .. }, Some(pb::event_body::Kind::Decision(d))) => {
                Some(d.clone())
            }
            _ => None,
        };
        let seq = self.record_or_defer(body).await?;
        span.record("seq", seq);
        span.in_scope(|| tracing::debug!(ruling = ?decision.ruling, "decided"));
        Ok(Ruled {
            ruling: decision.ruling,
            seq,
            refusal,
            request,
            span,
        })
    }

    /// The seq that settles the call and, if it is refused, the text the agent reads; `None` when
    /// the agent went away while the call was held.
    async fn settle(
        &self,
        ruled: Ruled,
        cancel: &CancellationToken,
    ) -> Option<(u64, Option<String>)> {
        let Ruling::RequireApproval { timeout } = ruled.ruling else {
            return Some((ruled.seq, ruled.refusal));
        };
        let request = ruled.request.expect("a held call's request decision");
        match self
            .await_approval(request, ruled.seq, timeout, cancel)
            .await
        {
            Held::Approved(seq) => Some((seq, None)),
            Held::Refused(text, seq) => Some((seq, Some(text))),
            Held::Gone => None,
        }
    }

    /// Forwards an allowed call to its upstream, within the call timeout, and records the
    /// outcome; `None` when the agent cancelled it.
    async fn forward(
        &self,
        call: Forward<'_>,
        out: &mpsc::Sender<Value>,
        cancel: &CancellationToken,
    ) -> Option<Value> {
        let upstream = &self.upstreams[call.route.upstream];
        let mut forwarded = call.params.clone();
        forwarded["name"] = json!(call.route.name);
        let progress = call.params["_meta"]
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
        let started = Instant::now();
        let result = upstream
            .request("tools/call", forwarded, progress, &deadline)
            .await;
        timer.abort();
        let timed_out = deadline.is_cancelled() && !cancel.is_cancelled();
        let id = call.id;
        let reply = match result {
            Ok(mut reply) => {
                reply["id"] = id;
                if let Some(result) = reply.get_mut("result") {
                    let stamped = mcp::stamp_result(result.take(), "tools/call", call.stateless);
                    *result = stamp_event(stamped, &call.event_id);
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
        };
        let mut outcome = outcome_of(reply.as_ref(), &upstream.failure_text_prefixes);
        outcome.latency_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.record_outcome(call.seq, outcome).await;
        reply
    }

    /// Holds a call until a human decides it, its timeout passes, or its agent goes away; every
    /// step is recorded (by the admin API for approve / reject, here for expiry).
    async fn await_approval(
        &self,
        request: pb::Decision,
        request_seq: u64,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Held {
        let approval_id = request.approval_id.clone();
        let actor = request.actor.clone().unwrap_or_default();
        let now = verdict_proto::now_unix_nanos();
        let info = pb::PendingApproval {
            approval_id: approval_id.clone(),
            agent_id: actor.agent_id,
            session: actor.session,
            upstream: request.upstream.clone(),
            tool: request.tool.clone(),
            risk: request.risk,
            arguments_json: request.arguments_json.clone(),
            arguments_sha256: request.arguments_sha256.clone(),
            policy_sha256: request.policy_sha256.clone(),
            rule_id: request.rule_id.clone(),
            reason: request.reason.clone(),
            requested_unix_nanos: now,
            expires_unix_nanos: now
                .saturating_add(i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX)),
            chain_id: self.audit.recorder.chain_id().to_owned(),
            seq: request_seq,
        };
        tracing::info!(approval_id = %approval_id, tool = %request.tool, agent = %info.agent_id, "call held for approval");
        let mut decided = self.approvals.hold(info, request.clone());
        let rule_id = request.rule_id.clone();
        let resolved = |resolution: Result<Resolution, _>| {
            match resolution {
            Ok(r) if r.approved => Held::Approved(r.seq),
            Ok(r) => Held::Refused(
                format!("[approval rejected] rule {rule_id} by {}: {}", r.approver, r.reason),
                r.seq,
            ),
            // The approver's side went away without deciding: refuse rather than hang.
            Err(_) => Held::Refused(
                format!("[approval failed] rule {rule_id}: the approval was interrupted; the call was not forwarded"),
                0,
            ),
        }
        };
        let (expired_reason, gone) = tokio::select! {
            resolution = &mut decided => return resolved(resolution),
            _ = tokio::time::sleep(timeout) => (format!("no decision within {} s", timeout.as_secs()), false),
            _ = cancel.cancelled() => ("the agent cancelled the call while it waited".to_owned(), true),
        };
        if !self.approvals.withdraw(&approval_id) {
            // Claimed at the last moment: the approver's decision is on its way and stands.
            let outcome = resolved(decided.await);
            return if gone { Held::Gone } else { outcome };
        }
        let mut expired = request;
        expired.decision = DecisionKind::ApprovalExpired as i32;
        expired.reason = expired_reason.clone();
        let seq = match self.record_or_defer(event::decision_body(expired)).await {
            Ok(seq) => seq,
            Err(_) if gone => 0,
            Err(refused) => return Held::Refused(refused, 0),
        };
        if gone {
            return Held::Gone;
        }
        Held::Refused(
            format!(
                "[approval expired] rule {rule_id}: {expired_reason}; the call was not forwarded"
            ),
            seq,
        )
    }

    /// Records a decision about a request in `session`; on failure, the refusal to send.
    async fn record(&self, session: &Session, facts: &DecisionFacts<'_>) -> Result<u64, String> {
        let body = self.audit.events.decision(event::actor(session), facts);
        self.record_or_defer(body).await
    }

    /// Records a request refused before it reached a session (authentication, protocol).
    pub async fn record_refusal(&self, actor: pb::Actor, facts: &DecisionFacts<'_>) {
        let body = self.audit.events.decision(actor, facts);
        let _ = self.record_or_defer(body).await;
    }

    /// Journals `body` (see [`Audit::record_or_refuse`]) and counts it.
    pub(crate) async fn record_or_defer(&self, body: pb::EventBody) -> Result<u64, String> {
        let seq = self.audit.record_or_refuse(&body).await?;
        self.metrics.observe(&body);
        Ok(seq)
    }

    /// Queues the outcome of a forwarded call, not waiting for the journal (see
    /// [`crate::audit::recorder`] for why the reply does not wait for it).
    async fn record_outcome(&self, decision_seq: u64, outcome: pb::Outcome) {
        let body = event::outcome(decision_seq, outcome);
        match self.audit.recorder.enqueue(&body).await {
            Ok(()) => self.metrics.observe(&body),
            Err(error) => {
                tracing::error!(%error, decision_seq, "outcome not journaled: the recorder has stopped");
            }
        }
    }
}

/// A call the policy ruled on, with its ruling recorded as `seq`.
struct Ruled {
    ruling: Ruling,
    seq: u64,
    /// What the agent reads when the ruling refuses the call.
    refusal: Option<String>,
    /// The recorded request decision of a held call, from which its later steps are made.
    request: Option<pb::Decision>,
    span: tracing::Span,
}

/// An allowed call on its way to its upstream.
struct Forward<'a> {
    route: &'a CatalogTool,
    params: &'a Value,
    id: Value,
    /// The seq of the decision (or approval) that let it through, and its event id.
    seq: u64,
    event_id: String,
    stateless: bool,
}

/// How a held call ended.
enum Held {
    /// Approved, recorded as this seq: forward the call.
    Approved(u64),
    /// Rejected or expired: the text for the agent and the seq that recorded it.
    Refused(String, u64),
    /// The agent went away (or the decision came too late for it): no answer.
    Gone,
}

/// What became of a forwarded call, from the reply the agent gets (`None`: cancelled); a result
/// whose text starts with one of `failure_prefixes` failed as surely as one with `isError`.
fn outcome_of(reply: Option<&Value>, failure_prefixes: &[String]) -> pb::Outcome {
    let (kind, code, message) = match reply {
        None => (OutcomeKind::Cancelled, 0, String::new()),
        Some(reply) => match (reply.get("result"), reply.get("error")) {
            (Some(result), _) if tool_failed(result, failure_prefixes) => {
                let text = result["content"][0]["text"].as_str().unwrap_or_default();
                (OutcomeKind::ToolError, 0, text.chars().take(512).collect())
            }
            (Some(_), _) => (OutcomeKind::Ok, 0, String::new()),
            (None, Some(error)) => {
                let code = error["code"].as_i64().unwrap_or_default();
                let message = error["message"].as_str().unwrap_or_default().to_owned();
                let kind = if code == UPSTREAM_UNAVAILABLE {
                    OutcomeKind::UpstreamUnreachable
                } else {
                    OutcomeKind::JsonrpcError
                };
                (kind, code, message)
            }
            (None, None) => (
                OutcomeKind::JsonrpcError,
                0,
                "reply without result or error".into(),
            ),
        },
    };
    pb::Outcome {
        kind: kind as i32,
        jsonrpc_error_code: code,
        message,
        ..Default::default()
    }
}

fn tool_failed(result: &Value, failure_prefixes: &[String]) -> bool {
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    result["isError"] == json!(true)
        || failure_prefixes
            .iter()
            .any(|p| !p.is_empty() && text.trim_start().starts_with(p.as_str()))
}

/// Puts the decision's event id (`chain:seq`) in a result's `_meta`, so the agent's operator can
/// find the event.
fn stamp_event(mut result: Value, event_id: &str) -> Value {
    if let Some(object) = result.as_object_mut() {
        let meta = object.entry("_meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("io.verdict/event".into(), json!(event_id));
        }
    }
    result
}

/// The error for a tool the catalog does not route, or that the policy hides (the same answer,
/// so hiding leaks nothing): while an upstream cannot be listed the tool may be one of its, so
/// the answer is `-32000` naming that upstream, else `-32602 Unknown tool`.
fn absent_tool(catalog: &Catalog, id: Value, name: &str) -> Value {
    if catalog.unreachable().is_empty() {
        return unknown_tool(id, name);
    }
    let names: Vec<&str> = catalog
        .unreachable()
        .iter()
        .map(|(upstream, _)| upstream.as_str())
        .collect();
    jsonrpc::error(
        id,
        UPSTREAM_UNAVAILABLE,
        &format!(
            "upstream {} unreachable; tool {name} is not available",
            names.join(", ")
        ),
    )
}

/// The error for a tool that does not exist (and, by design, for one the policy hides).
pub fn unknown_tool(id: Value, name: &str) -> Value {
    jsonrpc::error(id, INVALID_PARAMS, &format!("Unknown tool: {name}"))
}
