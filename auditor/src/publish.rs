//! Publishing witnessed heads on a topic of their own, after they are stored.
//!
//! The heads must live somewhere a gateway operator cannot rewrite alone: ClickHouse is the
//! auditor's, the topic can be mirrored or retained by whoever runs Kafka, and a gateway reads
//! them back from it. Each message is a `SignedHead` (protobuf, see `verdict/v1/witness.proto`)
//! keyed by chain id, so one chain's heads stay in order on one partition.

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::time::Duration;
use verdict_proto::pb;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct HeadTopic {
    producer: FutureProducer,
    topic: String,
}

impl HeadTopic {
    pub fn new(brokers: &str, topic: String) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self { producer, topic })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every head and waits until the broker has them all.
    pub async fn publish(&self, heads: &[pb::SignedHead]) -> Result<(), KafkaError> {
        let encoded: Vec<(String, Vec<u8>)> = heads
            .iter()
            .map(|head| {
                let chain = prost::Message::decode(head.head.as_slice())
                    .map(|h: pb::WitnessedHead| h.chain_id)
                    .unwrap_or_default();
                (chain, prost::Message::encode_to_vec(head))
            })
            .collect();
        // A handful per batch: one chain's heads are sent in order, each acknowledged.
        for (key, payload) in &encoded {
            let record = FutureRecord::to(&self.topic).key(key).payload(payload);
            self.producer
                .send(record, DELIVERY_TIMEOUT)
                .await
                .map_err(|(error, _)| error)?;
        }
        Ok(())
    }
}
