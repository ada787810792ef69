//! What the gateway, the auditor and the query service do the same way, done once:
//! - [`config`]: a TOML file plus `VERDICT_<SERVICE>_*` environment overrides, with positions in
//!   errors and unknown keys refused;
//! - [`credentials`]: bearer tokens held only as SHA-256 digests, compared in constant time;
//! - [`net`]: accepted gRPC connections with `TCP_NODELAY`;
//! - [`process`]: logging and the shutdown signal;
//! - [`redact`]: which argument keys are secret, and masking their values (gateway and forwarder).
//!
//! This crate holds no service's logic: nothing here knows about MCP, events, Kafka or ClickHouse.

pub mod config;
pub mod credentials;
pub mod net;
pub mod process;
pub mod redact;
