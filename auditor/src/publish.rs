//! Publishing witnessed heads on a topic of their own, after they are stored.
//!
//! The heads must live somewhere a gateway operator cannot rewrite alone: ClickHouse is the
//! auditor's, the topic can be mirrored or retained by whoever runs Kafka, and a gateway reads
//! them back from it. Each message is a `SignedHead` (protobuf, see `verdict/v1/witness.proto`)
//! keyed by chain id, so one chain's heads stay in order on one partition.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use std::time::Duration;
use verdict_proto::pb;
use verdict_schema::WitnessedHeadRow;

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
            // Heads of one chain are sent together and must land in order, retries included.
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self { producer, topic })
    }

    /// Creates the topic (one partition per chain key hash is not needed: heads are few) unless
    /// it exists, so a missing topic cannot stall the auditor behind a publish that never lands.
    pub async fn create(&self, brokers: &str, replication: i32) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()?;
        let topic = NewTopic::new(&self.topic, 1, TopicReplication::Fixed(replication));
        let options = AdminOptions::new().operation_timeout(Some(DELIVERY_TIMEOUT));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) => tracing::info!(topic = %self.topic, "created the witness topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        Ok(())
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every head, keyed by its chain, and waits until the broker has them all.
    pub async fn publish(
        &self,
        heads: &[(pb::SignedHead, WitnessedHeadRow)],
    ) -> Result<(), KafkaError> {
        let encoded: Vec<(&str, Vec<u8>)> = heads
            .iter()
            .map(|(head, row)| (row.chain_id.as_str(), prost::Message::encode_to_vec(head)))
            .collect();
        // All in flight at once (a batch holds a head per checkpoint it verified): enqueued in
        // order, kept in order by the idempotent producer, each acknowledged.
        let sends = encoded.iter().map(|(key, payload)| {
            let record = FutureRecord::to(&self.topic).key(*key).payload(payload);
            self.producer.send(record, DELIVERY_TIMEOUT)
        });
        futures_util::future::try_join_all(sends)
            .await
            .map_err(|(error, _)| error)?;
        Ok(())
    }
}
