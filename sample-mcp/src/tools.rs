//! The work-memory tools and the MCP server handler around them.
//!
//! `tools/list` is paged by hand (rmcp's generated list is never paged) so that the gateway's
//! cursor handling meets a server that really pages.

use crate::changes::ToolChanges;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion,
    RequestMetaObject, ServerCapabilities, ServerConfig, SubscriptionFilter, Tool,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{tool, tool_router, ErrorData, Peer, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionAction {
    SetActive,
    UnsetActive,
    Delete,
    EnableAutoLink,
    DisableAutoLink,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SessionArgs {
    /// 수행할 작업 (set_active, unset_active, delete, enable_auto_link, disable_auto_link)
    pub action: SessionAction,
    /// 대상 세션 ID
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteArgs {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct KeyArgs {
    pub key: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    pub query: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LongTaskArgs {
    /// Number of progress steps.
    pub steps: u32,
    /// Delay between steps, in milliseconds.
    pub delay_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    sessions: BTreeSet<String>,
    active: Option<String>,
    auto_link: bool,
    memory: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct WorkMemory {
    router: ToolRouter<Self>,
    state: Arc<Mutex<State>>,
    page_size: usize,
    changes: Arc<ToolChanges>,
    /// The newest protocol revision served (all rmcp knows when `None`).
    max_protocol: Option<ProtocolVersion>,
}

fn text(s: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(s)])
}

#[tool_router]
impl WorkMemory {
    /// `only`: serve just these tools (all when empty), so two instances can split the set.
    pub fn new(page_size: usize, annotations: bool, only: &[String]) -> Self {
        let mut router = Self::tool_router();
        if !only.is_empty() {
            let names: Vec<_> = router.list_all().into_iter().map(|t| t.name).collect();
            for name in names
                .iter()
                .filter(|n| !only.iter().any(|o| o == n.as_ref()))
            {
                router.remove_route(name);
            }
        }
        if !annotations {
            let stripped: Vec<_> = router.list_all().into_iter().map(|t| t.name).collect();
            for name in stripped {
                if let Some(route) = router.map.get_mut(&name) {
                    route.attr.annotations = None;
                }
            }
        }
        let state = State {
            sessions: ["s1", "s2", "s3"].map(String::from).into(),
            ..State::default()
        };
        Self {
            router,
            state: Arc::new(Mutex::new(state)),
            page_size,
            changes: Arc::default(),
            max_protocol: None,
        }
    }

    /// Serves protocol revisions up to `max` only (e.g. the handshake era alone).
    pub fn with_max_protocol(mut self, max: Option<ProtocolVersion>) -> Self {
        self.max_protocol = max;
        self
    }

    pub fn changes(&self) -> Arc<ToolChanges> {
        Arc::clone(&self.changes)
    }

    #[tool(
        description = "세션을 관리합니다. 활성 세션 설정/해제, 세션 삭제, 자동 링크 활성화/비활성화를 처리합니다.",
        annotations(read_only_hint = false, destructive_hint = true)
    )]
    fn session_manager(&self, Parameters(args): Parameters<SessionArgs>) -> CallToolResult {
        let mut state = self.state.lock().expect("state lock");
        let id = args.session_id.clone().unwrap_or_default();
        match args.action {
            SessionAction::SetActive if state.sessions.contains(&id) => {
                state.active = Some(id.clone());
                text(format!("활성 세션: {id}"))
            }
            SessionAction::UnsetActive => {
                state.active = None;
                text("활성 세션 해제")
            }
            SessionAction::Delete if state.sessions.remove(&id) => {
                text(format!("세션 삭제됨: {id}"))
            }
            SessionAction::EnableAutoLink | SessionAction::DisableAutoLink => {
                state.auto_link = args.action == SessionAction::EnableAutoLink;
                text(format!("자동 링크: {}", state.auto_link))
            }
            _ => CallToolResult::error(vec![ContentBlock::text(format!(
                "세션을 찾을 수 없습니다: {id}"
            ))]),
        }
    }

    #[tool(
        description = "작업 메모리에 항목을 저장합니다 (store a memory item).",
        annotations(read_only_hint = false, destructive_hint = false)
    )]
    fn memory_write(&self, Parameters(args): Parameters<WriteArgs>) -> CallToolResult {
        self.state
            .lock()
            .expect("state lock")
            .memory
            .insert(args.key.clone(), args.value);
        text(format!("stored {}", args.key))
    }

    #[tool(
        description = "작업 메모리에서 항목을 읽습니다 (read a memory item).",
        annotations(read_only_hint = true)
    )]
    fn memory_read(&self, Parameters(args): Parameters<KeyArgs>) -> CallToolResult {
        match self.state.lock().expect("state lock").memory.get(&args.key) {
            Some(value) => text(value.clone()),
            None => CallToolResult::error(vec![ContentBlock::text(format!(
                "no memory item {}",
                args.key
            ))]),
        }
    }

    #[tool(
        description = "작업 메모리를 검색합니다 (search memory items by substring).",
        annotations(read_only_hint = true)
    )]
    fn memory_search(&self, Parameters(args): Parameters<SearchArgs>) -> CallToolResult {
        let state = self.state.lock().expect("state lock");
        let hits: Vec<&str> = state
            .memory
            .keys()
            .filter(|k| k.contains(&args.query))
            .map(String::as_str)
            .collect();
        text(hits.join("\n"))
    }

    /// Records how it ended under the memory key `long_task:last`, so a test can see that a
    /// cancellation really reached the server.
    #[tool(
        description = "A slow task that reports progress after each step and stops when cancelled.",
        annotations(read_only_hint = true)
    )]
    async fn long_task(
        &self,
        Parameters(args): Parameters<LongTaskArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
        cancelled: CancellationToken,
    ) -> CallToolResult {
        let token = meta.get_progress_token();
        let record = |how: String| {
            self.state
                .lock()
                .expect("state lock")
                .memory
                .insert("long_task:last".into(), how.clone());
            text(how)
        };
        for step in 1..=args.steps {
            tokio::select! {
                _ = cancelled.cancelled() => return record(format!("cancelled at step {step}")),
                _ = tokio::time::sleep(Duration::from_millis(args.delay_ms)) => {}
            }
            if let Some(token) = &token {
                let progress = ProgressNotificationParam::new(token.clone(), step as f64)
                    .with_total(args.steps as f64);
                let _ = peer.notify_progress(progress).await;
            }
        }
        record(format!("completed {} steps", args.steps))
    }
}

impl ServerHandler for WorkMemory {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        ServerConfig::new(capabilities).with_server_info(Implementation::new(
            "work-memory",
            env!("CARGO_PKG_VERSION"),
        ))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        match &self.max_protocol {
            Some(max) => Cow::Borrowed(ProtocolVersion::known_up_to(max)),
            None => Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS),
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.changes.add_session(context.peer);
    }

    /// Tool-list changes only (the SDK intersects this with what was requested).
    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.changes.subscribe();
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                changed = changes.recv() => {
                    if changed.is_err() || context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let all: Vec<Tool> = self
            .router
            .list_all()
            .into_iter()
            .filter(|tool| !self.changes.withdrawn(&tool.name))
            .collect();
        let start = match request.and_then(|r| r.cursor) {
            None => 0,
            Some(cursor) => cursor
                .parse::<usize>()
                .map_err(|_| ErrorData::invalid_params("invalid cursor", None))?,
        };
        let end = if self.page_size == 0 {
            all.len()
        } else {
            (start + self.page_size).min(all.len())
        };
        let mut page =
            ListToolsResult::with_all_items(all.get(start..end).unwrap_or_default().to_vec());
        page.next_cursor = (end < all.len()).then(|| end.to_string());
        Ok(page)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.changes.withdrawn(&request.name) {
            return Err(ErrorData::invalid_params(
                format!("tool {} is withdrawn for maintenance", request.name),
                None,
            ));
        }
        self.router
            .call(ToolCallContext::new(self, request, context))
            .await
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.router
            .get(name)
            .filter(|_| !self.changes.withdrawn(name))
            .cloned()
    }
}
