//! The Verdict policy engine: what an agent may call, as one library.
//!
//! The gateway decides every live call with it; the query service's replay and the CLI's
//! `policy replay` / `explain` / `check` re-decide recorded calls with the very same code, so
//! a what-if answers what the gateway would have done, not what a re-implementation guesses. It
//! is a contract-level crate like `verdict-proto`: pure (no network, no async runtime), with the
//! file watching and the agent-facing protocol left to the gateway.
//!
//! - [`file`] parses `policy.json` strictly; [`Policy`] is its compiled form and
//!   [`Policy::decide`] the decision procedure (hide, rules, pins, rate limits).
//! - [`risk`] classifies tools (read, write, destructive); [`rate`] counts rate-limit windows;
//!   [`pin`] is tool pinning and its lock file; [`schema_check`] checks argument rules against
//!   tool schemas; [`canonical`] is the JSON encoding argument hashes and fingerprints use;
//!   [`record`] is what the audit trail keeps of a policy's text (secret values as hashes).

mod call;
pub mod canonical;
mod engine;
pub mod file;
pub mod pin;
pub mod rate;
pub mod record;
pub mod risk;
pub mod schema_check;

pub use call::{CallInfo, Decision, RiskName, Ruling};
pub use engine::{Policy, PolicyLoadError, RateLimit, Undecidable, Verdict, PIN_RULE};

#[cfg(test)]
mod tests;
