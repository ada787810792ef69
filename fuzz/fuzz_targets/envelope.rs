//! Envelope decoding and verification on arbitrary bytes: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_proto::{ChainVerifier, SecretKey, SignedEvent, TrustedKeys};

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = SignedEvent::decode(data) {
        let mut keys = TrustedKeys::default();
        keys.add(SecretKey::from_seed(&[42; 32]).public().clone(), None);
        let _ = ChainVerifier::new(keys).verify(&event);
        let _ = event.decode_body();
    }
});
