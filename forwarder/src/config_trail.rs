//! Every change of the destinations, recorded in the signed trail before anything is delivered.
//!
//! Where the trail goes is itself security-relevant: a destination added quietly is an
//! exfiltration channel, one removed quietly a blind spot. A log line proves nothing to a
//! verifier, so the forwarder signs these changes into a chain of its own, with the gateway's
//! recorder (same key loader, chain writer, journal and Kafka shipping): a verifier with public
//! keys alone sees that a destination was added, removed or changed, and when.
//!
//! At start the configured destinations are compared with the ones last recorded (kept in
//! `state_dir/destinations.recorded.json`, written only after the events are in the journal, so
//! a crash in between records the changes again rather than never). Each destination is
//! described by its non-secret settings and the SHA-256 of its whole configuration *including*
//! the secret's value: a new HMAC key or HEC token shows as a new hash, never as itself.

use crate::config::Destination;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use verdict_gateway::audit::canonical::canonical_json;
use verdict_gateway::audit::{event, RecordError, Recorder};
use verdict_proto::pb::{self, ConfigChangeKind};
use verdict_proto::Label;

/// The file of the destinations last recorded, in the state directory.
const RECORDED_FILE: &str = "destinations.recorded.json";
/// The settings named in their own event fields; the rest go to `settings_json`.
const NAMED: [&str; 5] = ["kind", "address", "payload", "redact_keys", "items"];

#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("recording a destination change: {0}")]
    Record(#[from] RecordError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a record of destinations: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// One destination as recorded: its non-secret settings (all but the name) and the hash of its
/// whole configuration with the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Snapshot {
    settings: BTreeMap<String, Value>,
    config_sha256: String,
}

impl Snapshot {
    /// `destination` as configured, its secret read from its environment variable.
    fn of(destination: &Destination) -> Self {
        let secret = match destination.secret_env.as_str() {
            "" => None,
            name => std::env::var(name).ok(),
        };
        Self::with_secret(destination, secret.as_deref())
    }

    fn with_secret(destination: &Destination, secret: Option<&str>) -> Self {
        let value = serde_json::to_value(destination).unwrap_or(Value::Null);
        let whole = serde_json::json!({ "destination": value, "secret": secret });
        let mut settings: BTreeMap<String, Value> = match value {
            Value::Object(map) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        settings.remove("name");
        Self {
            settings,
            config_sha256: hex::encode(Sha256::digest(canonical_json(&whole))),
        }
    }

    /// The settings whose values differ from `before`'s; `secret` when only the hash does.
    fn changed_fields(&self, before: &Snapshot) -> Vec<String> {
        let mut names: Vec<String> = self
            .settings
            .keys()
            .chain(before.settings.keys())
            .filter(|name| self.settings.get(*name) != before.settings.get(*name))
            .cloned()
            .collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            names.push("secret".into());
        }
        names
    }

    /// The event recording `change` of destination `name` with these settings.
    fn event(
        &self,
        name: &str,
        change: ConfigChangeKind,
        changed: Vec<String>,
    ) -> pb::ConfigChange {
        let text = |key: &str| match self.settings.get(key) {
            Some(Value::String(text)) => text.clone(),
            _ => String::new(),
        };
        let redact_keys = match self.settings.get("redact_keys") {
            Some(Value::Array(keys)) => keys
                .iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let others: Map<String, Value> = self
            .settings
            .iter()
            .filter(|(key, _)| !NAMED.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        pb::ConfigChange {
            destination: name.into(),
            kind: text("kind"),
            change: change as i32,
            address: text("address"),
            payload: text("payload"),
            redact_keys,
            items: text("items"),
            settings_json: canonical_json(&Value::Object(others)),
            config_sha256: hex::decode(&self.config_sha256).unwrap_or_default(),
            changed_fields: changed,
        }
    }
}

/// Destinations by name.
type Snapshots = BTreeMap<String, Snapshot>;

/// The events that turn `recorded` into `current`, by destination name.
fn changes(recorded: &Snapshots, current: &Snapshots) -> Vec<pb::ConfigChange> {
    let mut names: Vec<&String> = recorded.keys().chain(current.keys()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| match (recorded.get(name), current.get(name)) {
            (None, Some(now)) => Some(now.event(name, ConfigChangeKind::Added, Vec::new())),
            (Some(before), None) => Some(before.event(name, ConfigChangeKind::Removed, Vec::new())),
            (Some(before), Some(now)) if before != now => {
                Some(now.event(name, ConfigChangeKind::Changed, now.changed_fields(before)))
            }
            _ => None,
        })
        .collect()
}

/// Records one event per destination added, removed or changed since the last recorded
/// configuration, then remembers `destinations` as recorded; returns how many were recorded.
pub async fn record_changes(
    destinations: &[Destination],
    state_dir: &Path,
    recorder: &Recorder,
) -> Result<usize, TrailError> {
    let path = state_dir.join(RECORDED_FILE);
    let recorded = load(&path)?;
    let current: Snapshots = destinations
        .iter()
        .map(|d| (d.name.clone(), Snapshot::of(d)))
        .collect();
    let changes = changes(&recorded, &current);
    for change in &changes {
        let seq = recorder
            .record(&event::config_change(change.clone()))
            .await?;
        tracing::info!(destination = %change.destination, change = ConfigChangeKind::label_of(change.change),
            fields = ?change.changed_fields, chain_id = recorder.chain_id(), seq, "destination change recorded");
    }
    if !changes.is_empty() || !path.exists() {
        save(&path, &current)?;
    }
    Ok(changes.len())
}

fn load(path: &Path) -> Result<Snapshots, TrailError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Snapshots::new()),
        Err(source) => {
            return Err(TrailError::File {
                path: path.to_owned(),
                source,
            })
        }
    };
    serde_json::from_str(&text).map_err(|source| TrailError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Replaces the record in one rename, so a crash leaves the old one or the new one.
fn save(path: &Path, snapshots: &Snapshots) -> Result<(), TrailError> {
    let text = serde_json::to_string_pretty(snapshots).unwrap_or_default();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| TrailError::File {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(name: &str, address: &str) -> Destination {
        configured(serde_json::json!({
            "name": name, "kind": "webhook", "address": address, "secret_env": "HOOK_KEY",
        }))
    }

    fn configured(settings: Value) -> Destination {
        serde_json::from_value(settings).unwrap()
    }

    fn snapshots(items: &[(&Destination, &str)]) -> Snapshots {
        items
            .iter()
            .map(|(d, secret)| (d.name.clone(), Snapshot::with_secret(d, Some(secret))))
            .collect()
    }

    #[test]
    fn an_added_a_removed_and_a_rekeyed_destination_are_three_changes_without_the_secret() {
        let (kept, gone, new) = (
            destination("kept", "http://a/hook"),
            destination("gone", "http://b/hook"),
            destination("new", "http://c/hook"),
        );
        let before = snapshots(&[(&kept, "old-secret"), (&gone, "s")]);
        let after = snapshots(&[(&kept, "new-secret"), (&new, "s")]);
        let events = changes(&before, &after);
        let summary: Vec<(&str, &str, Vec<String>)> = events
            .iter()
            .map(|e| {
                (
                    e.destination.as_str(),
                    ConfigChangeKind::label_of(e.change),
                    e.changed_fields.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("gone", "removed", vec![]),
                ("kept", "changed", vec!["secret".to_owned()]),
                ("new", "added", vec![]),
            ]
        );
        assert_ne!(
            events[1].config_sha256,
            before["kept"]
                .event("kept", ConfigChangeKind::Added, vec![])
                .config_sha256
        );
        assert_eq!(events[0].address, "http://b/hook");
        assert!(events[0]
            .settings_json
            .contains("\"secret_env\":\"HOOK_KEY\""));
        for event in &events {
            let text = format!("{event:?}");
            assert!(
                !text.contains("old-secret") && !text.contains("new-secret"),
                "{text}"
            );
        }
        assert!(changes(&after, &after).is_empty());
    }

    #[test]
    fn a_changed_setting_is_named() {
        let before = destination("hook", "http://a/hook");
        let after = configured(serde_json::json!({
            "name": "hook", "kind": "webhook", "address": "http://a/hook", "secret_env": "HOOK_KEY",
            "redact_keys": ["email"],
        }));
        let events = changes(&snapshots(&[(&before, "s")]), &snapshots(&[(&after, "s")]));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].changed_fields, ["redact_keys"]);
        assert_eq!(events[0].redact_keys, ["email"]);
        assert_eq!(ConfigChangeKind::Changed.label(), "changed");
    }
}
