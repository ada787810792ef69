//! JSON-RPC 2.0 framing over raw JSON values.
//!
//! The gateway is a proxy: it must pass through fields it does not interpret (`_meta`, new
//! result fields, tool annotations it has never heard of). So messages stay `serde_json::Value`
//! and this module only classifies them and builds errors; nothing is re-modelled.

use serde_json::{json, Map, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Implementation-defined server errors (outside the range the MCP spec reserves).
pub const UPSTREAM_UNAVAILABLE: i64 = -32000;
pub const UNAUTHORIZED: i64 = -32001;
/// MCP 2026-07-28: an HTTP header disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// MCP 2026-07-28: the request names a protocol version the server does not support.
pub const UNSUPPORTED_VERSION: i64 = -32022;
/// The decision could not be recorded, so the call was refused (fail closed).
pub const AUDIT_UNAVAILABLE: i64 = -32030;

/// One classified JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    /// A response from the client (to a server→client request); the whole object.
    Response(Value),
}

impl Message {
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response(_) => None,
        }
    }

    pub fn params(&self) -> Option<&Value> {
        match self {
            Message::Request { params, .. } | Message::Notification { params, .. } => Some(params),
            Message::Response(_) => None,
        }
    }
}

/// A request body: one message or a batch (an array; allowed by revision 2025-03-26 only).
#[derive(Debug)]
pub enum Body {
    Single(Message),
    Batch(Vec<Result<Message, Value>>),
}

/// Parses a request body. `Err` is the error response to send (parse error or invalid request).
pub fn parse_body(bytes: &[u8]) -> Result<Body, Value> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| error(Value::Null, PARSE_ERROR, &format!("Parse error: {e}")))?;
    match value {
        Value::Array(items) if items.is_empty() => Err(error(
            Value::Null,
            INVALID_REQUEST,
            "Invalid Request: empty batch",
        )),
        Value::Array(items) => Ok(Body::Batch(items.into_iter().map(classify).collect())),
        other => classify(other).map(Body::Single),
    }
}

/// Classifies one JSON value; `Err` is the error response for an invalid one.
pub fn classify(value: Value) -> Result<Message, Value> {
    let Value::Object(mut object) = value else {
        return Err(error(
            Value::Null,
            INVALID_REQUEST,
            "Invalid Request: not a JSON object",
        ));
    };
    let id = object.get("id").cloned();
    if object.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(error(
            valid_id(id),
            INVALID_REQUEST,
            "Invalid Request: jsonrpc must be \"2.0\"",
        ));
    }
    if let Some(method) = object.get("method") {
        let Some(method) = method.as_str().map(str::to_owned) else {
            return Err(error(
                valid_id(id),
                INVALID_REQUEST,
                "Invalid Request: method must be a string",
            ));
        };
        let params = object.remove("params").unwrap_or(Value::Null);
        if !(params.is_object() || params.is_array() || params.is_null()) {
            return Err(error(
                valid_id(id),
                INVALID_REQUEST,
                "Invalid Request: params must be an object or array",
            ));
        }
        return match id {
            None => Ok(Message::Notification { method, params }),
            Some(id) if is_valid_id(&id) => Ok(Message::Request { id, method, params }),
            Some(_) => Err(error(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: id must be a string or integer",
            )),
        };
    }
    if id.is_some() && (object.contains_key("result") || object.contains_key("error")) {
        return Ok(Message::Response(Value::Object(object)));
    }
    Err(error(
        valid_id(id),
        INVALID_REQUEST,
        "Invalid Request: neither a request, a notification nor a response",
    ))
}

fn is_valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

fn valid_id(id: Option<Value>) -> Value {
    id.filter(is_valid_id).unwrap_or(Value::Null)
}

pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

pub fn error_with_data(id: Value, code: i64, message: &str, data: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": data}})
}

pub fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

pub fn request(id: Value, method: &str, params: Value) -> Value {
    let mut object = Map::new();
    object.insert("jsonrpc".into(), "2.0".into());
    object.insert("id".into(), id);
    object.insert("method".into(), method.into());
    if !params.is_null() {
        object.insert("params".into(), params);
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The stable-toolchain twin of the `jsonrpc` fuzz target.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_body(&bytes);
        }

        #[test]
        fn arbitrary_json_values_classify_without_panic(text in r#"[\[\]{}",:0-9a-z ]{0,64}"#) {
            let _ = parse_body(text.as_bytes());
        }
    }

    fn code(v: &Value) -> i64 {
        v["error"]["code"].as_i64().unwrap()
    }

    #[test]
    fn classifies_requests_notifications_and_responses() {
        let req = classify(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})).unwrap();
        assert_eq!(
            req,
            Message::Request {
                id: json!(1),
                method: "tools/list".into(),
                params: Value::Null
            }
        );
        let note = classify(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap();
        assert!(matches!(note, Message::Notification { .. }));
        let resp = classify(json!({"jsonrpc":"2.0","id":"a","result":{}})).unwrap();
        assert!(matches!(resp, Message::Response(_)));
    }

    #[test]
    fn bad_input_gets_the_right_error() {
        assert_eq!(code(&parse_body(b"{not json").unwrap_err()), PARSE_ERROR);
        assert_eq!(code(&parse_body(b"[]").unwrap_err()), INVALID_REQUEST);
        assert_eq!(code(&parse_body(b"42").unwrap_err()), INVALID_REQUEST);
        assert_eq!(
            code(&parse_body(br#"{"id":1,"method":"x"}"#).unwrap_err()),
            INVALID_REQUEST
        );
        let wrong_id = parse_body(br#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#).unwrap_err();
        assert_eq!(
            (code(&wrong_id), &wrong_id["id"]),
            (INVALID_REQUEST, &Value::Null)
        );
        let keeps_id = parse_body(br#"{"jsonrpc":"1.0","id":7,"method":"x"}"#).unwrap_err();
        assert_eq!(keeps_id["id"], json!(7));
        assert!(
            matches!(parse_body(br#"[{"jsonrpc":"2.0","method":"a"}, 5]"#), Ok(Body::Batch(b)) if b.len() == 2 && b[1].is_err())
        );
    }
}
