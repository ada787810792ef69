//! The witness makes a trail provable to a third party with public keys alone: a real gateway's
//! journal and export, and one event handed over with its proof, pass against the head the
//! auditor's witness signed, and fail once cut (at a record boundary, a whole last segment, the
//! last lines of an export, everything) or altered. A second writer holding the gateway key who
//! forks the chain below a witnessed head is a finding that cites the head.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use verdict_proto::merkle::verify_consistency;
use verdict_proto::pb;
use verdict_proto::witness::{self, EventProofRecord};
use verdict_proto::{ChainWriter, Hash, PublicKey, SignedEvent};
use verdict_query::export::ExportEnd;
use verdict_service::credentials::digest as key_digest;
use verdict_tests::auditor::{count, produce, producer, temp_dir, AuditorProcess, AuditorSetup};
use verdict_tests::bins::cargo_bin;
use verdict_tests::chains::{body, key_in, messages};
use verdict_tests::mcp::{add_notes, work_memory_bin, HttpProcess};
use verdict_tests::process::{OutputWithin, COMMAND_TIMEOUT};
use verdict_tests::query::{authed, findings, QueryService, TOKEN};
use verdict_tests::trail::journal_events;
use verdict_tests::{Broker, ClickHouse};

const TOPIC: &str = "verdict.events";
const CHAIN: &str = "witnessed-gw";
const AGENT_KEY: &str = "witness-agent-key";

fn gateway_config(brokers: &str) -> String {
    format!(
        "[[agents]]\nid = \"agent-w\"\napi_key_sha256 = \"{}\"\n\
         [upstreams.memory]\ncommand = {:?}\n\
         [audit]\nchain_id = \"{CHAIN}\"\nsegment_bytes = 8192\ncheckpoint_secs = 1\n\
         [audit.kafka]\nbrokers = \"{brokers}\"\n",
        key_digest(AGENT_KEY),
        work_memory_bin().display().to_string(),
    )
}

fn verdict(args: &[&str], query: Option<&QueryService>) -> (bool, String) {
    let mut command = Command::new(cargo_bin("verdict"));
    command.args(args);
    if let Some(query) = query {
        command
            .env("VERDICT_QUERY_URL", query.url())
            .env("VERDICT_QUERY_TOKEN", TOKEN);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output_within(COMMAND_TIMEOUT).unwrap();
    let text = String::from_utf8_lossy(&stdout).into_owned() + &String::from_utf8_lossy(&stderr);
    (status.success(), text)
}

/// `verdict verify --event PATH` with the gateway's public key and one witness key, and `extra`.
fn verify_event(path: &Path, public: &Path, witness_key: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "verify",
        "--event",
        s(path),
        "--public-key",
        s(public),
        "--witness-key",
        s(witness_key),
    ];
    args.extend_from_slice(extra);
    verdict(&args, None)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Waits until the witness has signed a head of `chain` at `seq` or beyond.
async fn witnessed(query: &QueryService, chain: &str, seq: u64) -> pb::WitnessedHead {
    let mut client = query.client().await;
    let started = Instant::now();
    loop {
        let heads = client
            .list_witnessed_heads(authed(
                pb::ListWitnessedHeadsRequest {
                    chain_id: chain.into(),
                    limit: 1,
                },
                TOKEN,
            ))
            .await
            .unwrap()
            .into_inner()
            .heads;
        if let Some(head) = heads.first() {
            let decoded: pb::WitnessedHead = prost::Message::decode(head.head.as_slice()).unwrap();
            if decoded.seq >= seq {
                return decoded;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no witnessed head at {chain}:{seq}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The signed heads on `topic`, read from the beginning until none arrived for two seconds.
async fn published_heads(bootstrap: &str, topic: &str) -> Vec<pb::SignedHead> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "witness-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut heads = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        match tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
            Ok(Ok(message)) => {
                let payload = message.payload().unwrap_or_default();
                heads.push(prost::Message::decode(payload).unwrap());
            }
            _ if !heads.is_empty() => break,
            _ => {}
        }
    }
    heads
}

/// A broker with the events and witness topics, ClickHouse, a real gateway with `config`, an
/// auditor whose witness signs every second (group `group`), and the query service.
struct Stack {
    broker: Broker,
    clickhouse: ClickHouse,
    keys: tempfile::TempDir,
    gateway: HttpProcess,
    _auditor: AuditorProcess,
    query: QueryService,
}

async fn stack(config: &str, group: &str) -> Stack {
    let broker = Broker::start().unwrap();
    broker.create_topic(TOPIC, 1).await.unwrap();
    broker
        .create_topic("verdict.events.witness", 1)
        .await
        .unwrap();
    let clickhouse = ClickHouse::start().unwrap();
    let keys = temp_dir();
    key_in(keys.path(), "witness");
    let config = config.replace("BROKERS", &broker.bootstrap()).replace(
        "WITNESS_PUB",
        s(&keys.path().join("witness").join("verdict.pub")),
    );
    let gateway = HttpProcess::gateway(&config).unwrap();
    let setup = AuditorSetup {
        brokers: broker.bootstrap(),
        topic: TOPIC.into(),
        group: group.into(),
        clickhouse_url: clickhouse.url(),
        keys: vec![(gateway.public_key(), Some(vec![CHAIN.into()]))],
        max_events: 200,
    };
    let witness = format!(
        "[witness]\nkey = {:?}\nevery_secs = 1\n",
        keys.path().join("witness").join("verdict.key")
    );
    let auditor = AuditorProcess::start_with_config(&setup, &witness, &[]).unwrap();
    let query = QueryService::start(&clickhouse.url(), Some(&gateway.public_key()), "").unwrap();
    Stack {
        broker,
        clickhouse,
        keys,
        gateway,
        _auditor: auditor,
        query,
    }
}

/// What the tests that write chains themselves start with: a broker with the events and witness
/// topics, ClickHouse, a gateway key and a witness key in `dir`, and an auditor setup trusting the
/// gateway key (group `group`, batches of at most `max_events`).
struct Bare {
    broker: Broker,
    clickhouse: ClickHouse,
    dir: tempfile::TempDir,
    key: verdict_proto::SecretKey,
    public: PathBuf,
    setup: AuditorSetup,
}

async fn bare(group: &str, max_events: usize) -> Bare {
    let (broker, clickhouse) = (Broker::start().unwrap(), ClickHouse::start().unwrap());
    broker.create_topic(TOPIC, 1).await.unwrap();
    broker
        .create_topic("verdict.events.witness", 1)
        .await
        .unwrap();
    let dir = temp_dir();
    let (key, public) = key_in(dir.path(), "gw");
    key_in(dir.path(), "witness");
    let setup = AuditorSetup::trusting(
        broker.bootstrap(),
        clickhouse.url(),
        group,
        public.clone(),
        max_events,
    );
    Bare {
        broker,
        clickhouse,
        dir,
        key,
        public,
        setup,
    }
}

/// The auditor's `[witness]` section: the key in `dir/witness`, a head at most `every` s apart.
fn witness_config(dir: &Path, every: u64) -> String {
    format!(
        "[witness]\nkey = {:?}\nevery_secs = {every}\n",
        dir.join("witness").join("verdict.key")
    )
}

/// A proof's path as hashes.
fn hashes(path: &[Vec<u8>]) -> Vec<Hash> {
    path.iter()
        .map(|h| h.as_slice().try_into().unwrap())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// `(segment file, byte offset)` of every record of the journal, in order.
fn record_positions(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut reader = verdict_journal::JournalReader::open(dir).unwrap();
    let mut positions = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        positions.push((dir.join(&record.segment), record.offset));
    }
    positions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witnessed_heads_prove_a_journal_an_export_and_one_event_complete() {
    // Every part is bound: one left to `..` would be dropped (and stopped) right here.
    let Stack {
        broker: _broker,
        clickhouse: _clickhouse,
        keys,
        mut gateway,
        _auditor,
        query,
    } = stack(&gateway_config("BROKERS"), "witness").await;
    let witness_key =
        verdict_proto::SecretKey::read_pem_file(&keys.path().join("witness").join("verdict.key"))
            .unwrap();
    let witness_pub = keys.path().join("witness").join("verdict.pub");

    // Calls before and after a restart: the restarted gateway continues its Merkle tree from the
    // newest checkpoint's peaks, and the witness must agree with every checkpoint's root.
    for round in 0..2 {
        add_notes(&gateway.url(), AGENT_KEY, &format!("w{round}"), 40).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        gateway.terminate();
        if round == 0 {
            // A head of the first round, so the chain has two heads whatever the batching.
            let first_round = journal_events(&gateway.journal_dir()).last().unwrap().seq;
            witnessed(&query, CHAIN, first_round).await;
            gateway.restart_gateway().unwrap();
        }
    }
    let journal = gateway.journal_dir();
    let events = journal_events(&journal);
    let last = events.last().unwrap();
    let head = witnessed(&query, CHAIN, last.seq).await;
    assert_eq!(head.event_hash, last.hash.to_vec());
    let work = temp_dir();
    let heads_file = work.path().join("heads.jsonl");
    let (ok, out) = verdict(
        &[
            "heads",
            "--chain",
            CHAIN,
            "--limit",
            "1",
            "--out",
            s(&heads_file),
        ],
        Some(&query),
    );
    assert!(ok, "{out}");
    let public = gateway.public_key();
    let check = |source: &str, path: &Path, heads: &str, query: Option<&QueryService>| {
        verdict(
            &[
                "verify",
                source,
                s(path),
                "--public-key",
                s(&public),
                "--witnessed-head",
                heads,
                "--witness-key",
                s(&witness_pub),
            ],
            query,
        )
    };
    let with_head = |source: &str, path: &Path| check(source, path, s(&heads_file), None);
    // The heads fetched from the query service instead of a file.
    let with_fetched_head = |source: &str, path: &Path| {
        let url = query.url();
        check(source, path, &url, Some(&query))
    };

    // The whole journal passes; the gateway's checkpoints commit to the same tree.
    let (ok, out) = with_head("--journal", &journal);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("Merkle root of seqs 1..={} equals", last.seq)),
        "{out}"
    );
    let checkpoints_with_trees = events
        .iter()
        .filter(|e| matches!(e.decode_body().unwrap().kind, Some(pb::event_body::Kind::Checkpoint(ref c)) if !c.tree_root.is_empty()))
        .count();
    assert!(
        checkpoints_with_trees >= 4,
        "{checkpoints_with_trees} checkpoints carry a tree"
    );

    // Cut at a record boundary, and without its last segment: both fail against the head.
    let positions = record_positions(&journal);
    let cut = work.path().join("cut");
    copy_dir(&journal, &cut);
    let (segment, offset) = &positions[positions.len() - 3];
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(cut.join(segment.file_name().unwrap()))
        .unwrap();
    file.set_len(*offset).unwrap();
    // The journal ends there: later segments (the cut record may close one) go too.
    for (later, _) in positions.iter().filter(|(p, _)| p > segment) {
        let _ = std::fs::remove_file(cut.join(later.file_name().unwrap()));
    }
    let (ok, out) = with_head("--journal", &cut);
    assert!(
        !ok && out.contains("ends before the head witnessed"),
        "{out}"
    );
    let (ok, out) = with_fetched_head("--journal", &journal);
    assert!(ok, "{out}");
    let (ok, out) = with_fetched_head("--journal", &cut);
    assert!(
        !ok && out.contains("ends before the head witnessed"),
        "{out}"
    );
    let segments: Vec<&PathBuf> = {
        let mut names: Vec<&PathBuf> = positions.iter().map(|(p, _)| p).collect();
        names.dedup();
        names
    };
    assert!(segments.len() >= 3, "{} segments", segments.len());
    let short = work.path().join("short");
    copy_dir(&journal, &short);
    std::fs::remove_file(short.join(segments.last().unwrap().file_name().unwrap())).unwrap();
    let (ok, out) = with_head("--journal", &short);
    assert!(
        !ok && out.contains("ends before the head witnessed"),
        "{out}"
    );

    // The export passes; without its last 10 lines, or empty, it fails.
    let export = work.path().join("export.jsonl");
    let (ok, out) = verdict(
        &["export", "--format", "jsonl", "--out", s(&export)],
        Some(&query),
    );
    assert!(ok, "{out}");
    let (ok, out) = with_head("--export", &export);
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let trimmed = work.path().join("trimmed.jsonl");
    std::fs::write(&trimmed, lines[..lines.len() - 10].join("\n") + "\n").unwrap();
    let (ok, out) = with_head("--export", &trimmed);
    assert!(
        !ok && out.contains("ends before the head witnessed"),
        "{out}"
    );
    let empty = work.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let (ok, out) = with_head("--export", &empty);
    assert!(
        !ok && out.contains("ends before the head witnessed"),
        "{out}"
    );
    let (ok, out) = with_fetched_head("--export", &empty);
    assert!(!ok && out.contains("nothing proves it complete"), "{out}");

    // The export carries the newest head within it in its end line: checked with the witness key
    // alone. Cut, with an end line rewritten to match the records left, it still fails against
    // the head it carries.
    let (ok, out) = verdict(
        &[
            "verify",
            "--export",
            s(&export),
            "--public-key",
            s(&public),
            "--witness-key",
            s(&witness_pub),
        ],
        None,
    );
    assert!(
        ok && out.contains("the export carries 1 witnessed head(s)"),
        "{out}"
    );
    assert!(out.contains("equals the witnessed head's"), "{out}");
    let carried = ExportEnd::parse(lines.last().unwrap()).unwrap();
    let mut rewritten = ExportEnd {
        witnessed_heads: carried.witnessed_heads.clone(),
        ..Default::default()
    };
    let kept = &lines[..lines.len() - 11];
    for line in kept {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let (chain, seq, hash) = (&record["chain_id"], &record["seq"], &record["hash"]);
        rewritten.add(
            chain.as_str().unwrap(),
            seq.as_u64().unwrap(),
            hash.as_str().unwrap(),
        );
    }
    let recut = work.path().join("recut.jsonl");
    std::fs::write(&recut, kept.join("\n") + "\n" + &rewritten.to_json_line()).unwrap();
    let (ok, out) = verdict(
        &[
            "verify",
            "--export",
            s(&recut),
            "--public-key",
            s(&public),
            "--witness-key",
            s(&witness_pub),
        ],
        None,
    );
    assert!(
        !ok && out.contains("ends before the head witnessed"),
        "{out}"
    );

    // One event handed over alone with its proof verifies; altered, or with another's proof, not.
    let prove = |seq: u64, out: &Path| {
        let seq = seq.to_string();
        let (ok, text) = verdict(
            &["prove", "--chain", CHAIN, "--seq", &seq, "--out", s(out)],
            Some(&query),
        );
        assert!(ok, "{text}");
        serde_json::from_str::<EventProofRecord>(&std::fs::read_to_string(out).unwrap()).unwrap()
    };
    let check_event = |path: &Path| verify_event(path, &public, &witness_pub, &[]);
    let proof_file = work.path().join("event-7.json");
    let proof = prove(7, &proof_file);
    let (ok, out) = check_event(&proof_file);
    assert!(ok, "{out}");
    let mut altered = proof.clone();
    let mut envelope = hex::decode(&proof.envelope).unwrap();
    let at = envelope.len() / 2;
    envelope[at] ^= 1;
    altered.envelope = hex::encode(envelope);
    let altered_file = work.path().join("altered.json");
    std::fs::write(&altered_file, serde_json::to_string(&altered).unwrap()).unwrap();
    let (ok, out) = check_event(&altered_file);
    assert!(!ok, "{out}");
    let other = prove(8, &work.path().join("event-8.json"));
    let mut swapped = other.clone();
    swapped.envelope = proof.envelope.clone();
    swapped.seq = 7;
    let swapped_file = work.path().join("swapped.json");
    std::fs::write(&swapped_file, serde_json::to_string(&swapped).unwrap()).unwrap();
    let (ok, out) = check_event(&swapped_file);
    assert!(!ok, "{out}");
    // The same event named by its hash alone gets the same proof; a hash no event has, none.
    let seventh = hex::encode(events[6].hash);
    let by_hash = work.path().join("event-by-hash.json");
    let (ok, text) = verdict(
        &["prove", "--event-hash", &seventh, "--out", s(&by_hash)],
        Some(&query),
    );
    assert!(ok, "{text}");
    let same: EventProofRecord =
        serde_json::from_str(&std::fs::read_to_string(&by_hash).unwrap()).unwrap();
    assert_eq!(
        (&same.chain_id, same.seq, &same.envelope),
        (&proof.chain_id, proof.seq, &proof.envelope)
    );
    let (ok, out) = check_event(&by_hash);
    assert!(ok, "{out}");
    let (ok, text) = verdict(&["prove", "--event-hash", &"0".repeat(64)], Some(&query));
    assert!(!ok && text.contains("no stored event has hash"), "{text}");

    // Two heads of the chain are consistent, and the proof says so offline.
    let mut client = query.client().await;
    let heads = client
        .list_witnessed_heads(authed(
            pb::ListWitnessedHeadsRequest {
                chain_id: CHAIN.into(),
                limit: 50,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .heads;
    let witness_public = PublicKey::read_pem_file(&witness_pub).unwrap();
    let decoded: Vec<pb::WitnessedHead> = heads
        .iter()
        .map(|h| witness::verify(h, std::slice::from_ref(&witness_public)).unwrap())
        .collect();
    let (newest, oldest) = (&decoded[0], decoded.last().unwrap());
    assert!(oldest.seq < newest.seq, "one head only");
    let answer = client
        .get_consistency_proof(authed(
            pb::ConsistencyProofRequest {
                chain_id: CHAIN.into(),
                first: oldest.seq,
                second: newest.seq,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let path = hashes(&answer.proof.unwrap().path);
    let root = |h: &pb::WitnessedHead| -> Hash { h.tree_root.as_slice().try_into().unwrap() };
    verify_consistency(oldest.seq, newest.seq, &root(oldest), &root(newest), &path).unwrap();
    assert_eq!(witness_key.public().key_id(), newest.witness_key_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_below_a_witnessed_head_is_a_finding_citing_the_head() {
    let Bare {
        broker,
        clickhouse,
        dir,
        key,
        public,
        setup,
    } = bare("fork", 50).await;
    let witness = witness_config(dir.path(), 1);
    let mut auditor = AuditorProcess::start_with_config(&setup, &witness, &[]).unwrap();
    let query = QueryService::start(&clickhouse.url(), Some(&public), "").unwrap();
    let mut writer = ChainWriter::new("forked-gw", key.clone());
    let events: Vec<SignedEvent> = (1..=2_100).map(|i| writer.append(body(i))).collect();
    let producer = producer(&broker.bootstrap());
    produce(&producer, TOPIC, &messages(&events[..2_000])).await;
    witnessed(&query, "forked-gw", 2_000).await;
    // A restarted auditor rebuilds the tree from its stored chunk roots and the rows after them,
    // and goes on witnessing the same tree — with a new witness key, handed over by the old one.
    auditor.kill();
    let (new_witness, _) = key_in(dir.path(), "witness-2");
    let rotated = format!(
        "[witness]\nkey = {:?}\nprevious_key = {:?}\nevery_secs = 1\n",
        dir.path().join("witness-2").join("verdict.key"),
        dir.path().join("witness").join("verdict.key")
    );
    let _auditor = AuditorProcess::start_with_config(&setup, &rotated, &[]).unwrap();
    produce(&producer, TOPIC, &messages(&events[2_000..])).await;
    let head = witnessed(&query, "forked-gw", 2_100).await;
    let mut tree = verdict_proto::merkle::Frontier::default();
    events.iter().for_each(|e| tree.push(&e.hash));
    assert_eq!(
        (head.seq, head.tree_root.as_slice()),
        (2_100, tree.root().as_slice())
    );
    assert_eq!(head.witness_key_id, new_witness.public().key_id());
    // The heads are also on their own topic, which the auditor created, signed by the witness:
    // whoever trusts the first witness key follows the hand-over head to the new one.
    let published = published_heads(&broker.bootstrap(), "verdict.events.witness").await;
    let witness_public =
        PublicKey::read_pem_file(&dir.path().join("witness").join("verdict.pub")).unwrap();
    let mut witnesses = vec![witness_public.clone()];
    assert!(!published
        .iter()
        .any(|h| witness::verify(h, &witnesses).is_ok_and(|h| h.seq == head.seq)));
    witness::follow_handovers(&mut witnesses, &published, &Default::default());
    assert_eq!(witnesses.len(), 2, "the hand-over head names the new key");
    assert!(published
        .iter()
        .any(|h| witness::verify(h, &witnesses).is_ok_and(|h| h.seq == head.seq)));
    // `verdict heads` lists the hand-over head with the newest, and `verify` follows it: an
    // export checks out against the new key's head with only the first witness key given.
    let work = temp_dir();
    let (heads_file, export) = (work.path().join("heads.jsonl"), work.path().join("e.jsonl"));
    let (ok, out) = verdict(
        &[
            "heads",
            "--chain",
            "forked-gw",
            "--limit",
            "1",
            "--out",
            s(&heads_file),
        ],
        Some(&query),
    );
    assert!(ok, "{out}");
    let (ok, out) = verdict(
        &["export", "--format", "jsonl", "--out", s(&export)],
        Some(&query),
    );
    assert!(ok, "{out}");
    let first_key = dir.path().join("witness").join("verdict.pub");
    let verify_export = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--export",
            s(&export),
            "--public-key",
            s(&public),
            "--witnessed-head",
            s(&heads_file),
            "--witness-key",
            s(&first_key),
        ];
        args.extend_from_slice(extra);
        verdict(&args, None)
    };
    let (ok, out) = verify_export(&[]);
    assert!(ok && out.contains("seqs 1..=2100 equals"), "{out}");
    // With the first witness key revoked from before it handed over, nothing it signed counts.
    let first_id = witness_public.key_id().to_owned();
    let revoked = format!("{first_id}=2020-01-01T00:00:00Z");
    let (ok, out) = verify_export(&["--witness-revoked", &revoked]);
    // The new key's head is no longer handed over, the hand-over head itself is revoked.
    let refused = ["is revoked from", "is not among the trusted witness keys"];
    assert!(!ok && refused.iter().any(|r| out.contains(r)), "{out}");
    // One event proven against the new key's head carries the first key's hand-over head, so it
    // too verifies with only the first witness key given; not once that key is revoked.
    let proof_file = work.path().join("event-2050.json");
    let (ok, out) = verdict(
        &[
            "prove",
            "--chain",
            "forked-gw",
            "--seq",
            "2050",
            "--out",
            s(&proof_file),
        ],
        Some(&query),
    );
    assert!(ok, "{out}");
    let (ok, out) = verify_event(&proof_file, &public, &first_key, &[]);
    assert!(ok, "{out}");
    let (ok, out) = verify_event(
        &proof_file,
        &public,
        &first_key,
        &["--witness-revoked", &revoked],
    );
    assert!(
        !ok && out.contains("is not among the trusted witness keys"),
        "{out}"
    );
    // A stranger's key cannot hand itself the role: its "hand-over" head and its own head over
    // the same event and tree are refused.
    let proof: EventProofRecord =
        serde_json::from_str(&std::fs::read_to_string(&proof_file).unwrap()).unwrap();
    assert_eq!(proof.handovers.len(), 1, "the first key's last head");
    let (stranger, _) = key_in(dir.path(), "stranger");
    let resign = |record: &witness::HeadRecord, next: Vec<u8>| {
        let mut head = witness::verify(
            &record.to_signed().unwrap(),
            &[witness_public.clone(), new_witness.public().clone()],
        )
        .unwrap();
        head.witness_key_id = stranger.public().key_id().to_owned();
        head.next_witness_key = next;
        witness::HeadRecord::from_signed(&witness::sign(&stranger, &head)).unwrap()
    };
    let mut forged = proof.clone();
    forged.handovers = vec![resign(
        &proof.handovers[0],
        stranger.public().as_bytes().to_vec(),
    )];
    forged.head = resign(&proof.head, Vec::new());
    let forged_file = work.path().join("forged-handover.json");
    std::fs::write(&forged_file, serde_json::to_string(&forged).unwrap()).unwrap();
    let (ok, out) = verify_event(&forged_file, &public, &first_key, &[]);
    assert!(
        !ok && out.contains("is not among the trusted witness keys"),
        "{out}"
    );
    // The stolen key writes another seq 15.
    let mut thief = ChainWriter::resume("forked-gw", key, 14, events[13].hash);
    let forged = thief.append(b"another history".to_vec());
    produce(&producer, TOPIC, &messages(&[forged])).await;
    let mut client = query.client().await;
    let started = Instant::now();
    let fork = loop {
        let all = findings(&mut client).await;
        if let Some(fork) = all.into_iter().find(|f| f.kind == "fork") {
            break fork;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no fork finding"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(fork.seq, 15);
    assert!(
        fork.detail
            .contains(&format!("contradicts witnessed head seq {}", head.seq)),
        "{}",
        fork.detail
    );
}

/// A gateway that reads the witness's heads back alarms when the witness signed a head of its
/// chain that it never wrote: another holder of its signing key appended to the chain first.
/// Heads it did write move its agreement gauge; forged heads on the topic are rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reading_heads_back_alarms_when_its_key_signs_another_history() {
    // Periodic checkpoints far apart, so the chain stands still between the calls and the theft.
    let config = gateway_config("BROKERS").replace("checkpoint_secs = 1", "checkpoint_secs = 3600");
    let config = format!(
        "metrics_listen = \"127.0.0.1:0\"\n{config}[audit.witness]\nkeys = [\"WITNESS_PUB\"]\n"
    );
    let Stack {
        broker,
        clickhouse: _clickhouse,
        keys: _keys,
        gateway,
        _auditor,
        query,
    } = stack(&config, "read-back").await;
    add_notes(&gateway.url(), AGENT_KEY, "r", 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = journal_events(&gateway.journal_dir());
    let last = events.last().unwrap().clone();
    witnessed(&query, CHAIN, last.seq).await;
    let started = Instant::now();
    while gateway.metric("verdict_gateway_witness_agreed_seq").await < last.seq as f64 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the gateway never agreed with the witness at seq {}",
            last.seq
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        gateway
            .metric("verdict_gateway_witness_disagreements_total")
            .await,
        0.0
    );

    // Anyone who can write to the topic can send a head; one the witness did not sign is ignored.
    let producer = producer(&broker.bootstrap());
    let stranger = verdict_proto::SecretKey::generate();
    let forged = witness::sign(
        &stranger,
        &pb::WitnessedHead {
            chain_id: CHAIN.into(),
            seq: last.seq + 100,
            witness_key_id: stranger.public().key_id().into(),
            ..Default::default()
        },
    );
    let forged = prost::Message::encode_to_vec(&forged);
    produce(
        &producer,
        "verdict.events.witness",
        &[(CHAIN.into(), forged)],
    )
    .await;

    // The stolen key continues the chain before the gateway does: the witness verifies and signs
    // the thief's seqs, and the gateway, which never wrote them, must alarm.
    let stolen = verdict_proto::SecretKey::read_pem_file(
        &gateway.public_key().with_file_name("verdict.key"),
    )
    .unwrap();
    let mut thief = ChainWriter::resume(CHAIN, stolen, last.seq, last.hash);
    let theft: Vec<(String, Vec<u8>)> = (1..=3)
        .map(|i| (CHAIN.to_owned(), thief.append(body(i)).encode()))
        .collect();
    produce(&producer, TOPIC, &theft).await;
    let started = Instant::now();
    while gateway
        .metric("verdict_gateway_witness_disagreements_total")
        .await
        < 1.0
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no alarm; gateway log:\n{}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        gateway
            .log_tail()
            .contains("the witness signed a head this gateway never wrote"),
        "{}",
        gateway.log_tail()
    );
    assert!(
        gateway
            .metric("verdict_gateway_witness_heads_rejected_total")
            .await
            >= 1.0
    );
    assert_eq!(
        gateway.metric("verdict_gateway_witness_agreed_seq").await,
        last.seq as f64,
        "the thief's seqs never count as agreement"
    );
}

/// An auditor that dies after storing a batch's events but before its chain heads, with no
/// witnessed head due yet, loses nothing the trail's proofs need: chunk roots wait for the next
/// signed head (one insert per head, not per batch) and are recomputed from the stored events,
/// and the redelivered events, already stored, still move the chain head and the witness's tree
/// (before, they were skipped and nothing was witnessed until the chain's next event). Then the
/// witness signs a head at every checkpoint of a batch, not only at a batch's last event (before,
/// it followed only each batch's final head, lost the chain's thread whenever a batch held more
/// than one of its events, and rebuilt it from ClickHouse instead of witnessing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_killed_before_its_chain_heads_leaves_the_witness_nothing_to_miss() {
    let Bare {
        broker,
        clickhouse,
        dir,
        key,
        public,
        setup,
    } = bare("held", 5_000).await;
    let witness = |every: u64| witness_config(dir.path(), every);
    let mut writer = ChainWriter::new("held-gw", key);
    // No checkpoint among the first 2,000 (`body` makes one of every 100th), so no head is due.
    let events: Vec<SignedEvent> = (1..)
        .filter(|i| i % 100 != 0)
        .take(2_000)
        .map(|i| writer.append(body(i)))
        .collect();
    let producer = producer(&broker.bootstrap());
    produce(&producer, TOPIC, &messages(&events)).await;
    // One batch of exactly the 2,000 (a batch's default 100 ms deadline runs from before the
    // group is joined, so on a busy machine it may close on a part of them).
    let crash = [
        ("VERDICT_AUDITOR_FAULT", "1:rows"),
        ("VERDICT_AUDITOR_BATCH__MAX_EVENTS", "2000"),
        ("VERDICT_AUDITOR_BATCH__MAX_WAIT_MS", "600000"),
    ];
    let mut crashing = AuditorProcess::start_with_config(&setup, &witness(3_600), &crash).unwrap();
    crashing
        .wait_exit(Duration::from_secs(120))
        .expect("the crash hook aborts the auditor");
    let client = clickhouse.client();
    let chunks = "SELECT count() FROM merkle_chunks FINAL WHERE chain_id = 'held-gw'";
    assert_eq!(
        count(&client, "SELECT count() FROM events FINAL").await,
        2_000,
        "the first batch held every event\n{}",
        crashing.log()
    );
    assert_eq!(count(&client, chunks).await, 0, "roots wait for a head");
    assert_eq!(count(&client, "SELECT count() FROM chain_heads").await, 0);

    let _auditor = AuditorProcess::start_with_config(&setup, &witness(1), &[]).unwrap();
    let query = QueryService::start(&clickhouse.url(), Some(&public), "").unwrap();
    let head = witnessed(&query, "held-gw", 2_000).await;
    assert_eq!(count(&client, chunks).await, 1);
    let stored_head = "SELECT max(seq) FROM chain_heads FINAL WHERE chain_id = 'held-gw'";
    assert_eq!(count(&client, stored_head).await, 2_000);
    assert!(findings(&mut query.client().await).await.is_empty());
    let proof = query
        .client()
        .await
        .get_inclusion_proof(authed(
            pb::InclusionProofRequest {
                chain_id: "held-gw".into(),
                seq: 5,
                tree_size: head.seq,
                event_hash: String::new(),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let path = hashes(&proof.inclusion.unwrap().path);
    let root: Hash = head.tree_root.as_slice().try_into().unwrap();
    verdict_proto::merkle::verify_inclusion(&events[4].hash, 4, head.seq, &path, &root).unwrap();

    // 2,000 more, with a checkpoint at every 100th seq, as fast as the auditor reads them.
    let more: Vec<SignedEvent> = (2_001..=4_000).map(|i| writer.append(body(i))).collect();
    produce(&producer, TOPIC, &messages(&more)).await;
    witnessed(&query, "held-gw", 4_000).await;
    let at_checkpoints = "SELECT uniqExact(seq) FROM witnessed_heads \
        WHERE chain_id = 'held-gw' AND seq > 2000 AND seq % 100 = 0";
    assert_eq!(count(&client, at_checkpoints).await, 20);
    assert_eq!(count(&client, chunks).await, 3);
}
