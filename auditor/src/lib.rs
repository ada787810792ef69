//! The auditor: the independent witness between Kafka and ClickHouse.

pub mod rows;
pub mod schema;
