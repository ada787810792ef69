//! Canonical JSON: the one encoding of arguments that is hashed and stored.
//!
//! Two calls with the same arguments must hash the same however the client ordered keys or
//! spaced its JSON, or an approval could not be bound to "the same call" and a hash-only trail
//! could not be matched. Objects are written with keys sorted by their UTF-8 bytes, no
//! insignificant whitespace, strings escaped as serde_json escapes them, numbers in serde_json's
//! shortest round-trip form (the same text as RFC 8785 for integers and most floats).

use serde_json::Value;
use std::fmt::Write;

/// The canonical text of `value`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).expect("a string always serialises"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_spacing_do_not_matter() {
        let a: Value = serde_json::from_str(
            r#"{ "session_id": "s1", "action" : "delete", "n": [1, 2.5, {"b":1,"a":null}] }"#,
        )
        .unwrap();
        let b = json!({"n": [1, 2.5, {"a": null, "b": 1}], "action": "delete", "session_id": "s1"});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"action":"delete","n":[1,2.5,{"a":null,"b":1}],"session_id":"s1"}"#
        );
    }

    #[test]
    fn non_ascii_and_escapes() {
        let v = json!({"이유": "세션 \"삭제\"\n", "é": true});
        assert_eq!(
            canonical_json(&v),
            "{\"é\":true,\"이유\":\"세션 \\\"삭제\\\"\\n\"}"
        );
    }
}
