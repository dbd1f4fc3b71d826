//! A corrupt or hostile event in the log: whatever its bytes, decoding answers an error or an
//! event, never a panic; with and without the customer's key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let event_type = events::EVENT_TYPES[selector as usize % events::EVENT_TYPES.len()];
    let version = u32::from(selector >> 4);
    let key = events::CustomerKey::from_bytes("customer-fuzz".into(), [7; 32]);
    let _ = events::decode(event_type, version, data, None);
    let _ = events::decode(event_type, events::SCHEMA_VERSION, data, Some(&key));
    let _ = events::sealing_key_id(event_type, data);
});
