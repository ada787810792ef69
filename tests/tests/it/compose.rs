//! docker-compose.yml cannot run here (no Docker engine), so this checks what can be checked:
//! it parses, runs Apache Kafka in KRaft mode and a current ClickHouse, gives every Verdict
//! service a healthcheck, wires only services and volumes that exist, runs each binary with the
//! same flags as scripts/demo, and mounts config files that the services' own loaders accept.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn compose() -> Yaml {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `binary --flag …` from scripts/demo's `start NAME DIR "$BIN/binary" --flag value …` lines.
fn demo_command(binary: &str) -> Vec<String> {
    let script = std::fs::read_to_string(root().join("scripts/demo")).unwrap();
    let line = script
        .lines()
        .find(|l| l.starts_with("start ") && l.contains(&format!("\"$BIN/{binary}\"")))
        .unwrap_or_else(|| panic!("scripts/demo does not start {binary}"));
    let after = line.split(&format!("\"$BIN/{binary}\"")).nth(1).unwrap();
    std::iter::once(binary.to_owned())
        .chain(
            after
                .split_whitespace()
                .filter(|w| w.starts_with("--"))
                .map(str::to_owned),
        )
        .collect()
}

fn flags(command: &[String]) -> Vec<String> {
    command
        .iter()
        .take(1)
        .chain(command.iter().filter(|w| w.starts_with("--")))
        .cloned()
        .collect()
}

#[test]
fn compose_runs_kafka_kraft_clickhouse_and_the_services_as_the_demo_does() {
    let doc = compose();
    let services = doc["services"].as_hash().unwrap();
    let names: BTreeSet<_> = services.keys().filter_map(Yaml::as_str).collect();
    for needed in [
        "kafka",
        "clickhouse",
        "gateway",
        "auditor",
        "query",
        "work-memory",
    ] {
        assert!(names.contains(needed), "service {needed}");
    }
    let kafka = &doc["services"]["kafka"];
    assert!(kafka["image"]
        .as_str()
        .unwrap()
        .starts_with("apache/kafka:"));
    assert!(
        kafka["environment"]["KAFKA_PROCESS_ROLES"]
            .as_str()
            .unwrap()
            .contains("controller"),
        "KRaft"
    );
    assert!(doc["services"]["clickhouse"]["image"]
        .as_str()
        .unwrap()
        .starts_with("clickhouse/clickhouse-server:"));

    let volumes: BTreeSet<_> = doc["volumes"]
        .as_hash()
        .unwrap()
        .keys()
        .filter_map(Yaml::as_str)
        .collect();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        for dependency in service["depends_on"]
            .as_hash()
            .into_iter()
            .flat_map(|h| h.keys())
        {
            assert!(
                names.contains(dependency.as_str().unwrap()),
                "{name} depends on a missing service"
            );
        }
        for mount in strings(&service["volumes"]) {
            let source = mount.split(':').next().unwrap();
            if let Some(file) = source.strip_prefix("./") {
                assert!(root().join(file).exists(), "{name} mounts missing {file}");
            } else {
                assert!(
                    volumes.contains(source),
                    "{name} mounts undeclared volume {source}"
                );
            }
        }
    }
    for (service, binary) in [
        ("gateway", "verdict-gateway"),
        ("auditor", "verdict-auditor"),
        ("query", "verdict-query"),
        ("work-memory", "work-memory"),
    ] {
        let command = strings(&doc["services"][service]["command"]);
        assert_eq!(
            flags(&command),
            demo_command(binary),
            "{service}: same command as scripts/demo"
        );
        assert!(
            !doc["services"][service]["healthcheck"]["test"].is_badvalue(),
            "{service} healthcheck"
        );
    }
}

#[test]
fn compose_configs_are_accepted_by_the_services_loaders() {
    let dir = root().join("deploy/compose");
    verdict_gateway::GatewayConfig::load(Some(&dir.join("gateway.toml"))).unwrap();
    verdict_auditor::AuditorConfig::load(Some(&dir.join("auditor.toml"))).unwrap();
    verdict_query::QueryConfig::load(Some(&dir.join("query.toml"))).unwrap();
}
