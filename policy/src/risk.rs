//! Risk classes of tools: read, write, destructive.
//!
//! MCP tool annotations come first (`destructiveHint: true` → destructive, `readOnlyHint: true` →
//! read), then keywords in the tool's name and description in English, Korean, Japanese, Chinese,
//! German, French and Spanish, then the input schema: the `enum` / `const` values of action-like
//! properties (`action`, `type`, `operation`, `mode`, `command` …, at any depth, e.g.
//! `operations[].type`) are read as words too, since a tool whose `action` can be
//! `delete_session` deletes whatever its description says. The most severe class found wins, so a
//! tool annotated read-only whose description says it deletes is destructive. A tool nothing says
//! anything about is `write`: unknown effects are not assumed harmless. Policies can override per
//! tool.
//!
//! Latin-script keywords match whole words (with their inflections). Korean writes compounds
//! without spaces (`세션삭제`), so a Hangul keyword matches inside a word, but not in its passive
//! or stative form: `저장된` ("stored") describes what a tool lists, not what it does, so it is no
//! write. Japanese and Chinese keywords match anywhere.

use crate::RiskName;
use serde_json::Value;

/// Latin-script keywords match whole words and their inflections ("deletes", "removing", "löschen").
const DESTRUCTIVE_WORDS: &[&str] = &[
    "delete",
    "remove",
    "drop",
    "destroy",
    "purge",
    "wipe",
    "revoke",
    "erase",
    "truncate",
    "terminate",
    "kill",
    "unlink",
    "rm",
    "del",
    "clear",
    "reset",
    "overwrite",
    "restore",
    "revert",
    "rollback",
    "shutdown",
    "uninstall",
    "löschen",
    "lösch",
    "entfernen",
    "vernichten",
    "supprimer",
    "supprime",
    "effacer",
    "détruire",
    "eliminar",
    "elimina",
    "borrar",
    "suprimir",
    "destruir",
];
/// CJK and Hangul keywords match inside words (Hangul: not in a passive form, see the module doc).
const DESTRUCTIVE_TEXT: &[&str] = &[
    "삭제",
    "제거",
    "폐기",
    "파기",
    "복구",
    "복원",
    "덮어쓰",
    "되돌",
    "削除",
    "消去",
    "破棄",
    "删除",
    "刪除",
    "移除",
    "清除",
    "销毁",
];
const WRITE_WORDS: &[&str] = &[
    "write",
    "create",
    "update",
    "set",
    "modify",
    "insert",
    "put",
    "save",
    "store",
    "edit",
    "add",
    "append",
    "move",
    "rename",
    "send",
    "schreiben",
    "speichern",
    "ändern",
    "erstellen",
    "écrire",
    "modifier",
    "créer",
    "enregistrer",
    "escribir",
    "guardar",
    "modificar",
    "crear",
];
const WRITE_TEXT: &[&str] = &[
    "저장",
    "수정",
    "생성",
    "설정",
    "변경",
    "書き込",
    "作成",
    "更新",
    "保存",
    "写入",
    "创建",
    "修改",
    "设置",
];
const READ_WORDS: &[&str] = &[
    "read",
    "get",
    "list",
    "search",
    "find",
    "query",
    "fetch",
    "show",
    "view",
    "monitor",
    "lesen",
    "suchen",
    "lire",
    "rechercher",
    "leer",
    "buscar",
];
const READ_TEXT: &[&str] = &[
    "조회",
    "검색",
    "읽",
    "모니터링",
    "読",
    "検索",
    "取得",
    "读取",
    "查询",
    "搜索",
];

/// Names of properties (or words in them, e.g. `restore_mode`) whose values say what a call does.
const ACTION_PROPERTIES: &[&str] = &[
    "action",
    "actions",
    "type",
    "operation",
    "operations",
    "op",
    "ops",
    "mode",
    "command",
    "method",
    "kind",
    "verb",
];
/// Hangul syllables that, right after a keyword, make it passive or stative (`저장된`, `삭제됨`).
const HANGUL_PASSIVE: &[char] = &['되', '된', '됨', '돼', '됐', '될'];

/// The risk class of a tool definition (as listed by its server).
pub fn classify(tool: &Value) -> RiskName {
    let annotations = &tool["annotations"];
    let annotated = match (
        annotations["destructiveHint"].as_bool(),
        annotations["readOnlyHint"].as_bool(),
    ) {
        (Some(true), _) => Some(RiskName::Destructive),
        (_, Some(true)) => Some(RiskName::Read),
        (Some(false), _) | (_, Some(false)) => Some(RiskName::Write),
        _ => None,
    };
    let described = keyword_class(&format!(
        "{} {}",
        tool["name"].as_str().unwrap_or(""),
        tool["description"].as_str().unwrap_or("")
    ));
    let mut actions = Vec::new();
    action_values(&tool["inputSchema"], &mut actions);
    let from_schema = actions.iter().filter_map(|a| keyword_class(a)).max();
    [annotated, described, from_schema]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(RiskName::Write)
}

/// Collects the `enum` and `const` strings of action-like properties anywhere in `schema`.
fn action_values<'a>(schema: &'a Value, out: &mut Vec<&'a str>) {
    if !schema.is_object() {
        return;
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            if is_action_like(name) {
                enum_strings(property, out);
                enum_strings(&property["items"], out);
            }
            action_values(property, out);
        }
    }
    action_values(&schema["items"], out);
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(alternatives) = schema[combinator].as_array() {
            alternatives.iter().for_each(|a| action_values(a, out));
        }
    }
}

fn enum_strings<'a>(schema: &'a Value, out: &mut Vec<&'a str>) {
    let listed = schema["enum"].as_array().into_iter().flatten();
    out.extend(listed.chain([&schema["const"]]).filter_map(Value::as_str));
}

fn is_action_like(property: &str) -> bool {
    words(&split_camel_case(property).to_lowercase())
        .iter()
        .any(|w| ACTION_PROPERTIES.contains(&w.as_str()))
}

/// The most severe class any keyword in `text` (a name, a description, an action value) implies.
fn keyword_class(text: &str) -> Option<RiskName> {
    let words = words(&split_camel_case(text).to_lowercase());
    let has = |latin: &[&str], other: &[&str]| {
        words.iter().any(|w| {
            latin.iter().any(|k| inflection_of(w, k)) || other.iter().any(|k| active_use(w, k))
        })
    };
    if has(DESTRUCTIVE_WORDS, DESTRUCTIVE_TEXT) {
        Some(RiskName::Destructive)
    } else if has(WRITE_WORDS, WRITE_TEXT) {
        Some(RiskName::Write)
    } else if has(READ_WORDS, READ_TEXT) {
        Some(RiskName::Read)
    } else {
        None
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `keyword` (CJK or Hangul) occurs in `word`, and for Hangul not in a passive or stative form.
fn active_use(word: &str, keyword: &str) -> bool {
    let hangul = keyword.chars().all(is_hangul);
    word.match_indices(keyword).any(|(at, _)| {
        !hangul
            || !word[at + keyword.len()..]
                .chars()
                .next()
                .is_some_and(|next| HANGUL_PASSIVE.contains(&next))
    })
}

fn is_hangul(c: char) -> bool {
    ('\u{AC00}'..='\u{D7A3}').contains(&c)
}

/// "deleteSession" → "delete Session", so camelCase names split into words.
fn split_camel_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut previous_lower = false;
    for c in text.chars() {
        if c.is_uppercase() && previous_lower {
            out.push(' ');
        }
        previous_lower = c.is_lowercase();
        out.push(c);
    }
    out
}

/// `word` is `keyword` or an inflected form: a short suffix ("deletes", "deleted", "löschen"), or
/// "-ing" replacing a final "e" ("removing"). "address" is not a form of "add".
fn inflection_of(word: &str, keyword: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "", "s", "es", "d", "ed", "ing", "en", "n", "r", "er", "e", "t",
    ];
    if let Some(rest) = word.strip_prefix(keyword) {
        return SUFFIXES.contains(&rest);
    }
    keyword
        .strip_suffix('e')
        .and_then(|stem| word.strip_prefix(stem))
        == Some("ing")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str, description: &str, annotations: Value) -> Value {
        json!({"name": name, "description": description, "annotations": annotations})
    }

    #[test]
    fn classifies_by_annotations_then_keywords_most_severe_wins() {
        let cases = [
            (tool("x", "", json!({"destructiveHint": true})), RiskName::Destructive),
            (tool("x", "", json!({"readOnlyHint": true})), RiskName::Read),
            (tool("memory_read", "read a memory item", json!({"readOnlyHint": true})), RiskName::Read),
            (tool("cleanup", "Reads and then deletes old rows", json!({"readOnlyHint": true})), RiskName::Destructive),
            (tool("session_manager", "세션을 관리합니다. 활성 세션 설정/해제, 세션 삭제, 자동 링크 활성화/비활성화를 처리합니다.", json!(null)), RiskName::Destructive),
            (tool("f", "ファイルを削除します", json!(null)), RiskName::Destructive),
            (tool("f", "删除文件", json!(null)), RiskName::Destructive),
            (tool("f", "Datei löschen", json!(null)), RiskName::Destructive),
            (tool("f", "Supprimer le fichier", json!(null)), RiskName::Destructive),
            (tool("f", "Eliminar el archivo", json!(null)), RiskName::Destructive),
            (tool("drop_table", "", json!(null)), RiskName::Destructive),
            (tool("memory_search", "작업 메모리를 검색합니다", json!(null)), RiskName::Read),
            (tool("address_lookup", "shows an address", json!(null)), RiskName::Read),
            (tool("dropbox_sync", "removing stale files", json!(null)), RiskName::Destructive),
            (tool("notes_write", "", json!(null)), RiskName::Write),
            (tool("deleteSession", "", json!(null)), RiskName::Destructive),
            (tool("rm_rf", "", json!(null)), RiskName::Destructive),
            (tool("resetDatabase", "", json!(null)), RiskName::Destructive),
        ];
        for (tool, expected) in cases {
            assert_eq!(classify(&tool), expected, "{tool}");
        }
    }

    #[test]
    fn hangul_keywords_in_passive_form_describe_not_act() {
        let cases = [
            ("저장된 메모리 목록을 조회합니다", RiskName::Read),
            ("메모리를 저장합니다", RiskName::Write),
            ("세션삭제", RiskName::Destructive),
            ("삭제된 항목을 조회합니다", RiskName::Read),
        ];
        for (description, expected) in cases {
            assert_eq!(
                classify(&tool("x", description, json!(null))),
                expected,
                "{description}"
            );
        }
    }

    #[test]
    fn destructive_action_values_in_the_input_schema_make_the_tool_destructive() {
        let nested = json!({"name": "batch", "description": "일괄 처리합니다", "inputSchema": {
            "type": "object",
            "properties": {"operations": {"type": "array", "items": {"type": "object",
                "properties": {"type": {"type": "string", "enum": ["add", "update", "delete"]}}}}}}});
        assert_eq!(classify(&nested), RiskName::Destructive);
        let harmless = json!({"name": "list", "description": "목록을 조회합니다", "inputSchema": {
            "properties": {"sort": {"enum": ["delete_first"]}, "mode": {"enum": ["full", "preview"]}}}});
        assert_eq!(
            classify(&harmless),
            RiskName::Read,
            "only action-like properties count"
        );
    }

    /// The real Work Memory server (moontmsai/work-memory-mcp d9cdd18e43a8) publishes no
    /// annotations; every one of its 18 tools is pinned here from its published definition.
    #[test]
    fn the_real_work_memory_servers_tools() {
        let published: Value =
            serde_json::from_str(include_str!("../../sample-mcp/work-memory-tools.json")).unwrap();
        let expected = [
            ("add_work_memory", RiskName::Write),
            ("update_work_memory", RiskName::Write),
            ("list_work_memories", RiskName::Read),
            ("delete_work_memory", RiskName::Destructive),
            ("search_work_memory", RiskName::Read),
            ("get_related_keywords", RiskName::Read),
            ("get_search_stats", RiskName::Read),
            ("optimize_search_index", RiskName::Destructive),
            ("get_server_status", RiskName::Read),
            ("get_work_memory_history", RiskName::Read),
            ("get_work_memory_versions", RiskName::Read),
            ("restore_memory_version", RiskName::Destructive),
            ("list_memory_versions", RiskName::Read),
            ("batch_operations", RiskName::Destructive),
            ("connection_monitor", RiskName::Read),
            ("optimize_database", RiskName::Write),
            ("session_manager", RiskName::Destructive),
            ("session_status", RiskName::Read),
        ];
        let tools = published["tools"].as_array().unwrap();
        assert_eq!(tools.len(), expected.len());
        for (tool, (name, class)) in tools.iter().zip(expected) {
            assert_eq!(tool["name"], name);
            assert_eq!(classify(tool), class, "{name}: {}", tool["description"]);
        }
    }
}
