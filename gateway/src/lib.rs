//! The Verdict gateway: where every agent call is identified, decided, and forwarded or refused.
//!
//! Data flow, one module per stage:
//! - [`downstream`]: agents reach the gateway over Streamable HTTP ([`downstream::http`]) or
//!   stdio ([`downstream::stdio`]), in the handshake-era revisions or the stateless 2026-07-28 one;
//!   API keys map to agent ids (`verdict_service::credentials`); [`session`] tracks agent sessions.
//! - [`dispatch`]: one function per MCP method; every `tools/call` passes [`decision`] first,
//!   which [`policy`] implements over a policy file with the engine of the `verdict-policy`
//!   crate (the same engine the query service's replay runs).
//! - [`approvals`]: calls a `require_approval` rule holds until a human decides them through the
//!   [`admin`] gRPC API.
//! - [`audit`]: each decision becomes a signed event in the journal before the call goes on, and
//!   the journal is shipped to Kafka.
//! - [`upstream`]: the MCP servers behind the gateway (HTTP or a child process), each spoken to in
//!   the newest revision it supports; [`catalog`] merges their tools.
//!
//! The gateway owns the agent-facing protocol and the decision. It must not verify chains or
//! touch ClickHouse (the auditor's job), and it must never forward a call it has not decided.

pub mod admin;
mod approvals;
pub mod audit;
pub mod catalog;
pub mod config;
pub mod decision;
mod dispatch;
pub mod downstream;
pub mod jsonrpc;
pub mod mcp;
mod metrics;
pub mod policy;
mod session;
pub mod upstream;

pub use config::GatewayConfig;
pub use dispatch::Gateway;
