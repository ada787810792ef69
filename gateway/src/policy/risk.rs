//! Risk classes of tools: read, write, destructive.
//!
//! MCP tool annotations come first (`destructiveHint: true` → destructive, `readOnlyHint: true` →
//! read), then keywords in the tool's name and description in English, Korean, Japanese, Chinese,
//! German, French and Spanish. The most severe class found wins, so a tool annotated read-only
//! whose description says it deletes is destructive. A tool nothing says anything about is
//! `write`: unknown effects are not assumed harmless. Policies can override per tool.

use super::file::RiskName;
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
/// CJK and Hangul keywords match anywhere in the text.
const DESTRUCTIVE_TEXT: &[&str] = &[
    "삭제", "제거", "폐기", "파기", "削除", "消去", "破棄", "删除", "刪除", "移除", "清除", "销毁",
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
    "lesen",
    "suchen",
    "lire",
    "rechercher",
    "leer",
    "buscar",
];
const READ_TEXT: &[&str] = &[
    "조회", "검색", "읽", "読", "検索", "取得", "读取", "查询", "搜索",
];

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
    let text = split_camel_case(&format!(
        "{} {}",
        tool["name"].as_str().unwrap_or(""),
        tool["description"].as_str().unwrap_or("")
    ))
    .to_lowercase();
    let from_words = keyword_class(&text);
    match (annotated, from_words) {
        (Some(a), Some(w)) => a.max(w),
        (Some(a), None) => a,
        (None, Some(w)) => w,
        (None, None) => RiskName::Write,
    }
}

fn keyword_class(text: &str) -> Option<RiskName> {
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let has = |latin: &[&str], other: &[&str]| {
        words
            .iter()
            .any(|w| latin.iter().any(|k| inflection_of(w, k)))
            || other.iter().any(|k| text.contains(k))
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
}
