//! A corrupt or hostile event in the log: whatever its bytes, decoding answers an error or an
//! event, never a panic. The seeded, short version of the `stored_event` fuzz target (`fuzz/`,
//! run with cargo fuzz; RELIABILITY.md has its long runs).

use proptest::prelude::*;

fn decode_anything(selector: u8, data: &[u8]) {
    let event_type = events::EVENT_TYPES[selector as usize % events::EVENT_TYPES.len()];
    let key = events::CustomerKey::from_bytes("customer-fuzz".into(), [7; 32]);
    let _ = events::decode(event_type, u32::from(selector >> 4), data, None);
    let _ = events::decode(event_type, events::SCHEMA_VERSION, data, Some(&key));
    let _ = events::sealing_key_id(event_type, data);
}

/// JSON-shaped text: what a corrupt event most often looks like.
fn jsonish() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[{}\[\]":,0-9a-z_\-. ]{0,200}"#).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xbad_e7e7),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_bytes_decode_or_fail_without_panicking(selector: u8, data: Vec<u8>) {
        decode_anything(selector, &data);
    }

    #[test]
    fn any_json_shaped_text_decodes_or_fails_without_panicking(selector: u8, text in jsonish()) {
        decode_anything(selector, text.as_bytes());
    }
}
