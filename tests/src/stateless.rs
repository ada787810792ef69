//! A fast MCP client for load: stateless (revision 2026-07-28) `tools/call` POSTs over kept-alive
//! connections, as many in flight as the caller spawns.
//!
//! Why not the rmcp client of [`crate::mcp`]: a handshake-era client holds a session and serialises
//! nothing for speed; tests that must push tens of thousands of real decisions through gateways
//! (the cluster tests) need each call to be one HTTP exchange. The calls are real MCP traffic all
//! the same: the gateway authenticates, decides, journals and forwards each one.

use serde_json::{json, Value};

/// One agent's connection pool to one gateway endpoint.
#[derive(Debug, Clone)]
pub struct StatelessClient {
    http: reqwest::Client,
    url: String,
    api_key: String,
}

impl StatelessClient {
    pub fn new(url: &str, api_key: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.into(),
            api_key: api_key.into(),
        }
    }

    /// Calls `tool` with `arguments`; the JSON-RPC `result` (a tool result, `isError` for a
    /// refusal), or why there was none (HTTP status and body, a JSON-RPC error).
    pub async fn call(&self, tool: &str, arguments: Value) -> Result<Value, String> {
        let meta = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "verdict-tests", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": tool, "arguments": arguments, "_meta": meta}});
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.api_key)
            .header("accept", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let mut answer: Value =
            serde_json::from_str(&text).map_err(|_| format!("HTTP {status}: {text}"))?;
        match answer.get_mut("result") {
            Some(result) if status.is_success() => Ok(result.take()),
            _ => Err(format!("HTTP {status}: {text}")),
        }
    }
}
