//! Reading an audit trail back in tests: a gateway's journal, or the messages on a Kafka topic,
//! decoded into signed events and checked with the same `ChainVerifier` the auditor uses.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use std::path::Path;
use std::time::{Duration, Instant};
use verdict_journal::JournalReader;
use verdict_proto::pb::{self, event_body::Kind};
use verdict_proto::{ChainVerifier, Finding, PublicKey, SignedEvent, TrustedKeys};

/// Every event in the journal at `dir`, in journal order.
pub fn journal_events(dir: &Path) -> Vec<SignedEvent> {
    let mut reader = JournalReader::open(dir).expect("opening the journal");
    let mut events = Vec::new();
    while let Some(record) = reader.next_record().expect("reading the journal") {
        assert!(
            !record.damaged,
            "damaged record at {} byte {}",
            record.segment, record.offset
        );
        events.push(SignedEvent::decode(&record.payload).expect("journal records are envelopes"));
    }
    events
}

/// One message read from a topic.
#[derive(Debug, Clone)]
pub struct TopicMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub event: SignedEvent,
}

/// Reads `topic` from the beginning until `done` holds for what was read, or `timeout` passes.
pub async fn consume(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[TopicMessage]) -> bool,
) -> Vec<TopicMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("trail-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating a consumer");
    consumer.subscribe(&[topic]).expect("subscribing");
    let start = Instant::now();
    let mut messages = Vec::new();
    while !done(&messages) && start.elapsed() < timeout {
        let Ok(received) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await
        else {
            continue;
        };
        let message = received.expect("consuming");
        messages.push(TopicMessage {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().unwrap_or_default().to_vec(),
            event: SignedEvent::decode(message.payload().unwrap_or_default())
                .expect("topic messages are envelopes"),
        });
    }
    messages
}

/// Whatever the verifier finds in `events` (in the order given), trusting `public_key`.
pub fn findings(events: &[SignedEvent], public_key: &Path) -> Vec<Finding> {
    let mut keys = TrustedKeys::default();
    keys.add(
        PublicKey::read_pem_file(public_key).expect("public key"),
        None,
    );
    let mut verifier = ChainVerifier::new(keys);
    events
        .iter()
        .filter_map(|e| verifier.verify(e).finding)
        .collect()
}

/// The decision an event records, if it is one.
pub fn decision(event: &SignedEvent) -> Option<pb::Decision> {
    match event.decode_body().expect("event body").kind {
        Some(Kind::Decision(d)) => Some(d),
        _ => None,
    }
}

/// The outcome an event records, if it is one.
pub fn outcome(event: &SignedEvent) -> Option<pb::Outcome> {
    match event.decode_body().expect("event body").kind {
        Some(Kind::Outcome(o)) => Some(o),
        _ => None,
    }
}
