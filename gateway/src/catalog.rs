//! The merged tool catalog: every upstream's tools under one list.
//!
//! Tool names are kept as the upstream gives them, except where two upstreams offer the same
//! name: then each of those tools is exposed as `<upstream>__<tool>` (both sides prefixed, so
//! neither silently wins). Downstream `tools/list` is paged with an opaque offset cursor.
//!
//! Every tool is fingerprinted here ([`Fingerprint`]) for tool pinning, and [`catalog_event`]
//! says how an upstream's tools differ from the last catalog recorded for it, which the gateway
//! records as a `ToolCatalog` event.

use crate::decision::RiskName;
use crate::policy::pin::Fingerprint;
use crate::policy::risk;
use crate::upstream::Upstream;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use verdict_proto::pb::{self, ToolChange};

/// How long one upstream may take to list its tools before the list goes on without it.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

pub const COLLISION_SEPARATOR: &str = "__";

#[derive(Debug, Clone)]
pub struct CatalogTool {
    /// The name agents see and call.
    pub exposed: String,
    /// Index of the owning upstream.
    pub upstream: usize,
    /// The name at the upstream.
    pub name: String,
    /// The tool definition as the upstream sent it, with `name` set to `exposed`.
    pub definition: Value,
    /// Classified once here from annotations and description; policies may override it.
    pub risk: RiskName,
    /// The definition as the upstream sent it, fingerprinted for pinning.
    pub fingerprint: Fingerprint,
}

/// One upstream's tools by their name at the upstream.
pub type Fingerprints = BTreeMap<String, Fingerprint>;

#[derive(Debug, Default)]
pub struct Catalog {
    tools: Vec<CatalogTool>,
    by_name: HashMap<String, usize>,
    /// The upstreams' names, in config order.
    upstreams: Vec<String>,
    /// Upstreams whose tools could not be listed (so are absent), with the error.
    unreachable: Vec<(String, String)>,
}

impl Catalog {
    /// Every upstream's tools, fetched now. An upstream that fails or takes longer than
    /// [`LIST_TIMEOUT`] is logged and left out until it answers again.
    pub async fn fetch(upstreams: &[Upstream]) -> Self {
        let lists = futures_util::future::join_all(upstreams.iter().map(|u| async move {
            let listed = tokio::time::timeout(LIST_TIMEOUT, u.list_tools()).await;
            let tools = match listed {
                Ok(Ok(tools)) => Ok(tools),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "tools/list took longer than {} s",
                    LIST_TIMEOUT.as_secs()
                )),
            };
            (u.name.clone(), tools)
        }))
        .await;
        let mut unreachable = Vec::new();
        let listed: Vec<(String, Vec<Value>)> = lists
            .into_iter()
            .map(|(name, tools)| match tools {
                Ok(tools) => (name, tools),
                Err(error) => {
                    tracing::warn!(upstream = %name, %error, "tools/list failed; its tools are absent until it answers");
                    unreachable.push((name.clone(), error));
                    (name, Vec::new())
                }
            })
            .collect();
        Self {
            unreachable,
            ..Self::build(&listed)
        }
    }

    /// Upstreams whose tools are absent because they could not be listed, with the errors (for
    /// operators; agents get the names only).
    pub fn unreachable(&self) -> &[(String, String)] {
        &self.unreachable
    }

    /// Builds the catalog from each upstream's `(name, tools)`, in upstream order.
    pub fn build(upstreams: &[(String, Vec<Value>)]) -> Self {
        let mut owners: HashMap<&str, usize> = HashMap::new();
        for (_, tools) in upstreams {
            for tool in tools {
                if let Some(name) = tool.get("name").and_then(Value::as_str) {
                    *owners.entry(name).or_default() += 1;
                }
            }
        }
        let mut catalog = Catalog {
            upstreams: upstreams.iter().map(|(name, _)| name.clone()).collect(),
            ..Catalog::default()
        };
        for (index, (upstream, tools)) in upstreams.iter().enumerate() {
            for tool in tools {
                let Some(name) = tool.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let exposed = match owners[name] {
                    1 => name.to_owned(),
                    _ => format!("{upstream}{COLLISION_SEPARATOR}{name}"),
                };
                if catalog.by_name.contains_key(&exposed) {
                    // Only a crafted name can do this (e.g. an upstream listing `files__read`
                    // itself): the first owner keeps the name, the impostor is dropped.
                    tracing::warn!(
                        upstream,
                        tool = name,
                        exposed,
                        "tool name already taken; tool not exposed"
                    );
                    continue;
                }
                let mut definition = tool.clone();
                definition["name"] = json!(exposed);
                catalog.by_name.insert(exposed.clone(), catalog.tools.len());
                catalog.tools.push(CatalogTool {
                    exposed,
                    upstream: index,
                    name: name.to_owned(),
                    risk: risk::classify(&definition),
                    fingerprint: Fingerprint::of(tool),
                    definition,
                });
            }
        }
        catalog
    }

    /// The fingerprints of each upstream that answered `tools/list` (unreachable ones are left
    /// out: their tools are unknown, not removed).
    pub fn fingerprints(&self) -> Vec<(&str, Fingerprints)> {
        let mut listed: Vec<(&str, Fingerprints)> = self
            .upstreams
            .iter()
            .map(|name| (name.as_str(), Fingerprints::new()))
            .collect();
        for tool in &self.tools {
            listed[tool.upstream]
                .1
                .insert(tool.name.clone(), tool.fingerprint.clone());
        }
        listed.retain(|(name, _)| !self.unreachable.iter().any(|(down, _)| down == name));
        listed
    }

    pub fn route(&self, exposed: &str) -> Option<&CatalogTool> {
        self.by_name.get(exposed).map(|&i| &self.tools[i])
    }

    pub fn tools(&self) -> &[CatalogTool] {
        &self.tools
    }

    /// One page of visible tools as a `tools/list` result; `None` for an invalid cursor.
    pub fn page(
        &self,
        cursor: Option<&str>,
        size: usize,
        visible: impl Fn(&CatalogTool) -> bool,
    ) -> Option<Value> {
        let start: usize = match cursor {
            None => 0,
            Some(c) => c.parse().ok()?,
        };
        let shown: Vec<&CatalogTool> = self.tools.iter().filter(|t| visible(t)).collect();
        if start > shown.len() {
            return None;
        }
        let end = (start + size.max(1)).min(shown.len());
        let mut result =
            json!({"tools": shown[start..end].iter().map(|t| &t.definition).collect::<Vec<_>>()});
        if end < shown.len() {
            result["nextCursor"] = json!(end.to_string());
        }
        Some(result)
    }
}

/// How `current` differs from the catalog last recorded for `upstream` (`previous`; `None` for the
/// first since start, when each tool is compared with its pinned fingerprint, `pinned`). `None`
/// when nothing changed, so only changes and first sightings become events.
pub fn catalog_event(
    upstream: &str,
    previous: Option<&Fingerprints>,
    current: &Fingerprints,
    pinned: impl Fn(&str) -> Option<Fingerprint>,
) -> Option<pb::ToolCatalog> {
    if previous == Some(current) {
        return None;
    }
    let mut tools: Vec<pb::ToolFingerprint> = current
        .iter()
        .map(|(name, now)| {
            let pin = pinned(name);
            let baseline = match previous {
                Some(previous) => previous.get(name).cloned(),
                None => pin.clone(),
            };
            let (change, changed_fields) = match baseline {
                None => (ToolChange::Added, Vec::new()),
                Some(before) if before.sha256 == now.sha256 => (ToolChange::Unchanged, Vec::new()),
                Some(before) => (ToolChange::Changed, before.changed_fields(now)),
            };
            pb::ToolFingerprint {
                name: name.clone(),
                sha256: hex::decode(&now.sha256).unwrap_or_default(),
                change: change as i32,
                changed_fields: changed_fields.into_iter().map(String::from).collect(),
                pinned_sha256: pin
                    .and_then(|p| hex::decode(p.sha256).ok())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let removed = previous
        .into_iter()
        .flat_map(|previous| previous.keys())
        .filter(|name| !current.contains_key(*name));
    tools.extend(removed.map(|name| pb::ToolFingerprint {
        name: name.clone(),
        change: ToolChange::Removed as i32,
        ..Default::default()
    }));
    Some(pb::ToolCatalog {
        upstream: upstream.to_owned(),
        tools,
        first: previous.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Value {
        json!({"name": name, "inputSchema": {"type": "object"}, "annotations": {"x-future": 1}})
    }

    #[test]
    fn prefixes_only_colliding_names_and_keeps_unknown_fields() {
        let catalog = Catalog::build(&[
            ("mem".into(), vec![tool("read"), tool("session_manager")]),
            ("files".into(), vec![tool("read"), tool("write")]),
        ]);
        let names: Vec<&str> = catalog.tools().iter().map(|t| t.exposed.as_str()).collect();
        assert_eq!(
            names,
            ["mem__read", "session_manager", "files__read", "write"]
        );
        let routed = catalog.route("files__read").unwrap();
        assert_eq!((routed.upstream, routed.name.as_str()), (1, "read"));
        assert_eq!(routed.definition["annotations"]["x-future"], 1);
    }

    #[test]
    fn a_crafted_name_cannot_take_over_another_upstreams_tool() {
        let catalog = Catalog::build(&[
            ("files".into(), vec![tool("read")]),
            ("evil".into(), vec![tool("read"), tool("files__read")]),
        ]);
        let routed = catalog.route("files__read").unwrap();
        assert_eq!(routed.upstream, 0, "files__read still goes to files");
        assert_eq!(
            catalog
                .tools()
                .iter()
                .filter(|t| t.exposed == "files__read")
                .count(),
            1
        );
    }

    fn fingerprints(tools: &[(&str, &str)]) -> Fingerprints {
        tools
            .iter()
            .map(|(name, description)| {
                let definition = json!({"name": name, "description": description});
                (name.to_string(), Fingerprint::of(&definition))
            })
            .collect()
    }

    fn changes(event: &pb::ToolCatalog) -> Vec<String> {
        event
            .tools
            .iter()
            .map(|t| {
                let change = ToolChange::try_from(t.change).unwrap();
                format!("{} {change:?} {}", t.name, t.changed_fields.join(","))
            })
            .collect()
    }

    #[test]
    fn catalog_events_name_what_changed_since_the_last_one_or_the_pin() {
        let pinned = fingerprints(&[("a", "old")]);
        let first = fingerprints(&[("a", "new"), ("b", "b")]);
        let event = catalog_event("mem", None, &first, |t| pinned.get(t).cloned()).unwrap();
        assert!(event.first);
        assert_eq!(changes(&event), ["a Changed description", "b Added "]);
        assert_eq!(event.tools[0].pinned_sha256.len(), 32);
        assert!(event.tools[1].pinned_sha256.is_empty());

        assert_eq!(catalog_event("mem", Some(&first), &first, |_| None), None);
        let later = fingerprints(&[("a", "new"), ("c", "c")]);
        let event = catalog_event("mem", Some(&first), &later, |_| None).unwrap();
        assert!(!event.first);
        assert_eq!(changes(&event), ["a Unchanged ", "c Added ", "b Removed "]);
    }

    #[test]
    fn unreachable_upstreams_have_no_fingerprints() {
        let mut catalog =
            Catalog::build(&[("a".into(), vec![tool("x")]), ("b".into(), Vec::new())]);
        catalog.unreachable.push(("b".into(), "down".into()));
        let listed = catalog.fingerprints();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, "a");
        assert!(listed[0].1.contains_key("x"));
    }

    #[test]
    fn pages_with_cursors_and_rejects_bad_ones() {
        let catalog =
            Catalog::build(&[("a".into(), (0..5).map(|i| tool(&format!("t{i}"))).collect())]);
        let first = catalog.page(None, 2, |_| true).unwrap();
        assert_eq!(first["tools"].as_array().unwrap().len(), 2);
        let last = catalog.page(Some("4"), 2, |_| true).unwrap();
        assert_eq!(last["tools"][0]["name"], "t4");
        assert!(last.get("nextCursor").is_none());
        assert!(catalog.page(Some("x"), 2, |_| true).is_none());
        let hidden = catalog.page(None, 10, |t| t.name != "t1").unwrap();
        assert_eq!(hidden["tools"].as_array().unwrap().len(), 4);
    }
}
