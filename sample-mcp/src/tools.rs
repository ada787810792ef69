//! The work-memory tools and the MCP server handler around them.
//!
//! The sample stands in for the real Work Memory server (moontmsai/work-memory-mcp, the 18-tool
//! version d9cdd18e43a8), so that policies written against it protect the real one: the tools it
//! serves publish the real server's definitions verbatim (`work-memory-tools.json`: names, Korean
//! descriptions, input schemas with their enums, no annotations), `session_manager` takes the same
//! actions with the same rules (`session_id`, `confirm: true` for deletes), and failures come back
//! as the real server sends them: plain text starting with ❌, never `isError`. Behind that face
//! the state is a small in-memory model (three sessions `s1`–`s3`, memories by project); `long_task`
//! is the sample's own, for progress and cancellation tests.
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

/// The real server's `tools/list`, recorded from it (see the file's `source`).
const PUBLISHED: &str = include_str!("../work-memory-tools.json");

/// The project under which `long_task` records how it ended.
const LONG_TASK_PROJECT: &str = "long_task";

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SessionArgs {
    pub action: String,
    pub session_id: Option<String>,
    pub confirm: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AddArgs {
    pub content: String,
    pub project: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListArgs {
    pub project: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    pub query: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteArgs {
    pub id: Option<String>,
    pub ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LongTaskArgs {
    /// Number of progress steps.
    pub steps: u32,
    /// Delay between steps, in milliseconds.
    pub delay_ms: u64,
}

#[derive(Debug)]
struct Memory {
    project: String,
    content: String,
    /// The active session it was linked to (auto-link on), deleted with it by a cascade.
    session: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    sessions: BTreeSet<String>,
    active: Option<String>,
    auto_link: bool,
    memories: BTreeMap<u64, Memory>,
    next_id: u64,
}

impl State {
    fn add(&mut self, project: String, content: String) -> u64 {
        self.next_id += 1;
        let session = self.active.clone().filter(|_| self.auto_link);
        let memory = Memory {
            project,
            content,
            session,
        };
        self.memories.insert(self.next_id, memory);
        self.next_id
    }
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

/// A reply as the real server sends every reply, failures included: text, no `isError`.
fn text(s: impl Into<String>) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(s)]);
    result.is_error = None;
    result
}

/// The real server's tool definitions by name.
fn published_tools() -> BTreeMap<String, Tool> {
    #[derive(Deserialize)]
    struct Published {
        tools: Vec<Tool>,
    }
    let published: Published =
        serde_json::from_str(PUBLISHED).expect("work-memory-tools.json is valid");
    published
        .tools
        .into_iter()
        .map(|t| (t.name.to_string(), t))
        .collect()
}

#[tool_router]
impl WorkMemory {
    /// `only`: serve just these tools (all when empty), so two instances can split the set.
    pub fn new(page_size: usize, only: &[String]) -> Self {
        let mut router = Self::tool_router();
        let published = published_tools();
        for route in router.map.values_mut() {
            if let Some(definition) = published.get(route.attr.name.as_ref()) {
                route.attr = definition.clone();
            }
        }
        if !only.is_empty() {
            let names: Vec<_> = router.list_all().into_iter().map(|t| t.name).collect();
            for name in names
                .iter()
                .filter(|n| !only.iter().any(|o| o == n.as_ref()))
            {
                router.remove_route(name);
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

    fn contents(&self, wanted: impl Fn(&Memory) -> bool) -> String {
        let state = self.state.lock().expect("state lock");
        let hits: Vec<&str> = state
            .memories
            .values()
            .filter(|m| wanted(m))
            .map(|m| m.content.as_str())
            .collect();
        hits.join("\n")
    }

    #[tool]
    fn session_manager(&self, Parameters(args): Parameters<SessionArgs>) -> CallToolResult {
        let mut state = self.state.lock().expect("state lock");
        let action = args.action.as_str();
        let needs_id = matches!(
            action,
            "set_active" | "delete_session" | "delete_session_cascade"
        );
        let id = match (args.session_id, needs_id) {
            (Some(id), _) => id,
            (None, true) => {
                return text(format!(
                    "❌ 세션 관리 실패: session_id is required for {action} action"
                ))
            }
            (None, false) => String::new(),
        };
        let deleting = action.starts_with("delete_session");
        if deleting && args.confirm != Some(true) {
            return text("❌ 세션 삭제시에는 confirm=true가 필요합니다.");
        }
        if needs_id && !state.sessions.contains(&id) {
            return text(format!("❌ 세션 관리 실패: Session not found: {id}"));
        }
        text(match action {
            "set_active" => {
                state.active = Some(id.clone());
                format!("✅ 활성 세션이 설정되었습니다.\n세션 ID: {id}")
            }
            "clear" => {
                state.active = None;
                "✅ 활성 세션이 해제되었습니다.".to_owned()
            }
            "enable_auto_link" | "disable_auto_link" => {
                state.auto_link = action == "enable_auto_link";
                format!("✅ 자동 링크: {}", state.auto_link)
            }
            "delete_session" => {
                state.sessions.remove(&id);
                format!("✅ 세션 삭제 완료\n세션 ID: {id}")
            }
            "delete_session_cascade" => {
                state.sessions.remove(&id);
                let before = state.memories.len();
                state
                    .memories
                    .retain(|_, m| m.session.as_deref() != Some(&id));
                let removed = before - state.memories.len();
                format!("✅ 세션 + 작업기억 일괄 삭제 완료\n세션 ID: {id}\n삭제된 작업기억: {removed}개")
            }
            "list_sessions" if state.sessions.is_empty() => {
                "📋 세션 리스트\n❌ 조건에 맞는 세션이 없습니다.".to_owned()
            }
            "list_sessions" => {
                let lines: Vec<String> = state.sessions.iter().map(|s| format!("- {s}")).collect();
                format!(
                    "📋 세션 리스트 (총 {}개)\n\n{}",
                    state.sessions.len(),
                    lines.join("\n")
                )
            }
            other => format!("❌ 세션 관리 실패: Unknown action: {other}"),
        })
    }

    #[tool]
    fn add_work_memory(&self, Parameters(args): Parameters<AddArgs>) -> CallToolResult {
        let project = args.project.unwrap_or_default();
        let id = self
            .state
            .lock()
            .expect("state lock")
            .add(project, args.content);
        text(format!("✅ 새로운 메모리가 저장되었습니다.\nID: mem_{id}"))
    }

    /// The content of every memory (of `project`, if given), one per line, oldest first (the
    /// real server's decorated listing, reduced to what tests compare).
    #[tool]
    fn list_work_memories(&self, Parameters(args): Parameters<ListArgs>) -> CallToolResult {
        let wanted = |m: &Memory| args.project.as_ref().is_none_or(|p| &m.project == p);
        text(self.contents(wanted))
    }

    /// Like `list_work_memories`, for memories whose project or content contains the query.
    #[tool]
    fn search_work_memory(&self, Parameters(args): Parameters<SearchArgs>) -> CallToolResult {
        if args.query.trim().is_empty() {
            return text("❌ 검색 쿼리가 비어있습니다.");
        }
        let query = args.query.as_str();
        text(self.contents(|m| m.project.contains(query) || m.content.contains(query)))
    }

    #[tool]
    fn delete_work_memory(&self, Parameters(args): Parameters<DeleteArgs>) -> CallToolResult {
        let ids: Vec<String> = args
            .id
            .into_iter()
            .chain(args.ids.into_iter().flatten())
            .collect();
        if ids.is_empty() {
            return text("❌ 삭제할 대상을 지정해야 합니다.");
        }
        let mut state = self.state.lock().expect("state lock");
        let removed = ids
            .iter()
            .filter_map(|id| id.strip_prefix("mem_")?.parse::<u64>().ok())
            .filter(|id| state.memories.remove(id).is_some())
            .count();
        match removed {
            0 => text("❌ 삭제할 메모리를 찾을 수 없습니다."),
            n => text(format!("✅ {n}개의 메모리를 삭제했습니다.")),
        }
    }

    /// Records how it ended as the memory of project `long_task` (replacing the previous one), so
    /// a test can see that a cancellation really reached the server.
    #[tool(
        description = "A slow task that reports progress after each step and stops when cancelled."
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
            let mut state = self.state.lock().expect("state lock");
            state.memories.retain(|_, m| m.project != LONG_TASK_PROJECT);
            state.add(LONG_TASK_PROJECT.to_owned(), how.clone());
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
            .map(|tool| self.changes.published(tool))
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
            .map(|tool| self.changes.published(tool))
    }
}
