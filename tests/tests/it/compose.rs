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

/// The `cluster` profile: two ClickHouse replicas of one shard coordinated by ClickHouse Keeper,
/// three Kafka brokers forming one KRaft quorum, and services that name the cluster the
/// ClickHouse config defines, all of it outside the default profile.
#[test]
fn compose_cluster_profile_runs_two_replicas_with_keeper_and_three_kraft_brokers() {
    let doc = compose();
    let services = doc["services"].as_hash().unwrap();
    let in_cluster_profile =
        |name: &str| strings(&doc["services"][name]["profiles"]) == ["cluster"];
    for (name, _) in services {
        let name = name.as_str().unwrap();
        let cluster_service = name == "keeper" || name.contains('-') && name != "work-memory";
        assert_eq!(in_cluster_profile(name), cluster_service, "{name}: profile");
    }
    assert!(doc["services"]["keeper"]["image"]
        .as_str()
        .unwrap()
        .starts_with("clickhouse/clickhouse-keeper:"));
    let keeper = std::fs::read_to_string(root().join("deploy/compose/cluster/keeper.xml")).unwrap();
    assert!(keeper.contains("<tcp_port>9181</tcp_port>"));
    let config =
        std::fs::read_to_string(root().join("deploy/compose/cluster/clickhouse.xml")).unwrap();
    assert!(config.contains("<host>keeper</host><port>9181</port>"));
    assert!(config.contains("<verdict>") && config.contains("<internal_replication>true"));
    let mut replicas = BTreeSet::new();
    for name in ["clickhouse-1", "clickhouse-2"] {
        let service = &doc["services"][name];
        assert!(
            config.contains(&format!("<host>{name}</host>")),
            "{name} in remote_servers"
        );
        assert_eq!(service["hostname"].as_str(), Some(name));
        replicas.insert(
            service["environment"]["REPLICA"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        assert!(strings(&service["volumes"]).iter().any(|v| v.starts_with(
            "./deploy/compose/cluster/clickhouse.xml:/etc/clickhouse-server/config.d/"
        )));
    }
    assert_eq!(replicas.len(), 2, "replica macros are unique");

    let voters = "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093";
    let mut ids = BTreeSet::new();
    for n in 1..=3 {
        let env = &doc["services"][format!("kafka-{n}").as_str()]["environment"];
        assert_eq!(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].as_str(), Some(voters));
        assert!(env["KAFKA_PROCESS_ROLES"]
            .as_str()
            .unwrap()
            .contains("controller"));
        assert_eq!(env["KAFKA_NODE_ID"].as_i64(), Some(n));
        assert_eq!(env["KAFKA_DEFAULT_REPLICATION_FACTOR"].as_i64(), Some(3));
        ids.insert(env["CLUSTER_ID"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one KRaft cluster");

    let brokers = "kafka-1:9092,kafka-2:9092,kafka-3:9092";
    let auditor = &doc["services"]["auditor-cluster"]["environment"];
    assert_eq!(
        auditor["VERDICT_AUDITOR_KAFKA__BROKERS"].as_str(),
        Some(brokers)
    );
    assert_eq!(
        auditor["VERDICT_AUDITOR_CLICKHOUSE__CLUSTER"].as_str(),
        Some("verdict")
    );
    assert_eq!(
        doc["services"]["auditor-cluster"]["deploy"]["replicas"].as_i64(),
        Some(2)
    );
    let query = &doc["services"]["query-cluster"]["environment"];
    assert_eq!(
        query["VERDICT_QUERY_CLICKHOUSE__CLUSTER"].as_str(),
        Some("verdict")
    );
    let gateway = &doc["services"]["gateway-cluster"]["environment"];
    assert_eq!(
        gateway["VERDICT_GATEWAY_AUDIT__KAFKA__BROKERS"].as_str(),
        Some(brokers)
    );
}
