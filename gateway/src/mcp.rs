//! MCP protocol revisions and the fields the gateway reads or writes itself.
//!
//! Two eras: the handshake era (`initialize`, `Mcp-Session-Id`) in revisions 2024-11-05,
//! 2025-03-26, 2025-06-18 and 2025-11-25, and the stateless revision 2026-07-28 (no handshake;
//! protocol version, client info and capabilities in each request's `_meta`; `server/discover`).
//! A client is answered in the revision it asked for; each upstream is spoken to in its own
//! newest one, and the gateway translates between the two. 2024-11-05 clients are served over
//! stdio and Streamable HTTP; that revision's own HTTP+SSE transport (`GET /sse` plus a POST
//! endpoint) is not served (see README "Protocol").

use base64::Engine;
use serde_json::{json, Value};

pub const HANDSHAKE_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The one revision with JSON-RPC batches (added in 2025-03-26, removed in 2025-06-18).
pub const BATCH_VERSION: &str = "2025-03-26";
pub const LATEST_HANDSHAKE: &str = "2025-11-25";
pub const STATELESS: &str = "2026-07-28";

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

pub const GATEWAY_NAME: &str = "verdict-gateway";
pub const GATEWAY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The handshake version to answer an `initialize` with: the client's if we speak it, else our newest.
pub fn negotiate(requested: Option<&str>) -> &'static str {
    HANDSHAKE_VERSIONS
        .into_iter()
        .find(|v| Some(*v) == requested)
        .unwrap_or(LATEST_HANDSHAKE)
}

/// True for revisions without a handshake (2026-07-28 and later).
pub fn is_stateless(version: &str) -> bool {
    version >= STATELESS
}

/// The protocol version a stateless request names in `_meta`.
pub fn meta_version(params: &Value) -> Option<&str> {
    params.get("_meta")?.get(META_PROTOCOL_VERSION)?.as_str()
}

/// Who the client says it is: from `initialize` params or from a stateless request's `_meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub name: String,
    pub version: String,
    pub protocol_version: String,
}

impl ClientInfo {
    pub fn from_initialize(params: &Value, negotiated: &str) -> Self {
        Self::from_info(params.get("clientInfo"), negotiated)
    }

    pub fn from_meta(params: &Value) -> Self {
        let meta = params.get("_meta");
        let version = meta
            .and_then(|m| m.get(META_PROTOCOL_VERSION))
            .and_then(Value::as_str)
            .unwrap_or_default();
        Self::from_info(meta.and_then(|m| m.get(META_CLIENT_INFO)), version)
    }

    fn from_info(info: Option<&Value>, protocol_version: &str) -> Self {
        let field = |k: &str| {
            info.and_then(|i| i.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Self {
            name: field("name"),
            version: field("version"),
            protocol_version: protocol_version.to_owned(),
        }
    }
}

fn server_info() -> Value {
    json!({"name": GATEWAY_NAME, "version": GATEWAY_VERSION})
}

fn capabilities() -> Value {
    json!({"tools": {"listChanged": true}})
}

pub fn initialize_result(version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": "Tools are proxied by the Verdict gateway; every call is decided by policy and audited.",
    })
}

pub fn discover_result() -> Value {
    let mut versions: Vec<&str> = HANDSHAKE_VERSIONS.to_vec();
    versions.push(STATELESS);
    json!({
        "resultType": "complete",
        "supportedVersions": versions,
        "capabilities": capabilities(),
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": {META_SERVER_INFO: server_info()},
    })
}

/// The `_meta` the gateway sends on each request to a stateless upstream.
pub fn client_meta() -> Value {
    json!({
        META_PROTOCOL_VERSION: STATELESS,
        META_CLIENT_INFO: {"name": GATEWAY_NAME, "version": GATEWAY_VERSION},
        META_CLIENT_CAPABILITIES: {},
    })
}

/// Adjusts a result to the agent's revision: 2026-07-28 results carry `resultType` (and list
/// results cache hints); older revisions never see those fields, even when an upstream sent them.
pub fn stamp_result(mut result: Value, method: &str, stateless: bool) -> Value {
    let Some(object) = result.as_object_mut() else {
        return result;
    };
    if stateless {
        object
            .entry("resultType")
            .or_insert_with(|| json!("complete"));
        if method.ends_with("/list") {
            object.entry("ttlMs").or_insert_with(|| json!(0));
            object
                .entry("cacheScope")
                .or_insert_with(|| json!("private"));
        }
    } else {
        for key in ["resultType", "ttlMs", "cacheScope"] {
            object.remove(key);
        }
    }
    result
}

/// Decodes an `Mcp-Name` style header value: plain visible ASCII, or `=?base64?…?=`.
pub fn decode_header_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(encoded) => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?,
        )
        .ok(),
        None => Some(value.to_owned()),
    }
}

/// Encodes a value for an `Mcp-Name` style header (base64 form when not plain visible ASCII).
pub fn encode_header_value(value: &str) -> String {
    if !value.is_empty()
        && value.bytes().all(|b| (0x21..=0x7e).contains(&b))
        && !value.starts_with("=?")
    {
        value.to_owned()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_known_versions_and_falls_back_to_the_newest_handshake() {
        assert_eq!(negotiate(Some("2024-11-05")), "2024-11-05");
        assert_eq!(negotiate(Some("2025-03-26")), "2025-03-26");
        assert_eq!(negotiate(Some("2026-07-28")), LATEST_HANDSHAKE);
        assert_eq!(negotiate(None), LATEST_HANDSHAKE);
        assert!(is_stateless("2026-07-28") && !is_stateless("2025-11-25"));
    }

    #[test]
    fn header_values_round_trip() {
        for v in ["session_manager", "세션 삭제", "a b"] {
            assert_eq!(decode_header_value(&encode_header_value(v)).unwrap(), v);
        }
        assert_eq!(encode_header_value("plain"), "plain");
    }
}
