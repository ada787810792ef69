//! JSON-RPC framing on arbitrary bytes: classification must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = verdict_gateway::jsonrpc::parse_body(data);
});
