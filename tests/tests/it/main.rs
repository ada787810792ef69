//! Every integration test in one binary: each module is one area, and they share one link of the
//! gateway, auditor, query service and rdkafka instead of one per file (much cheaper on two
//! cores). Run one area with `cargo test -p verdict-tests --test it -- MODULE::`.

mod auditor_faults;
mod auditor_group;
mod auditor_stream;
mod auditor_tamper;
mod cluster;
mod compose;
mod end_to_end;
mod follow_findings;
mod forgery;
mod forwarder_config_trail;
mod forwarder_redaction;
mod forwarder_syslog;
mod forwarder_syslog_tls;
mod forwarder_webhook;
mod gateway_approval_notify;
mod gateway_approvals;
mod gateway_audit;
mod gateway_bad_input;
mod gateway_hardening;
mod gateway_pinning;
mod gateway_policy;
mod gateway_proxy;
mod gateway_stdio;
mod gateway_stdio_relay;
mod gateway_upstream_notifications;
mod gateway_upstream_requests;
mod key_rotation;
mod policy_replay;
mod policy_trail;
mod query_bad_input;
mod query_export;
mod query_follow;
mod query_ocsf;
mod query_paging;
mod query_tls;
mod query_whotried;
mod query_windows;
mod real_work_memory;
mod smoke;
mod trusted_keys;
mod witness;
