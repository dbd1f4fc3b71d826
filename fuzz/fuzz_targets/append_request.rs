//! What an append brings over the wire: any bytes decoded as the protocol's `AppendReq`, then
//! checked as the event store checks them (stream name, expected revision, event id, type and
//! size), answer an event to store or a status, never a panic.
#![no_main]

use event_store::proto::streams::{append_req, AppendReq};
use event_store::server::{convert, AppendLimits};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|input: &[u8]| {
    let Ok(request) = AppendReq::decode(input) else {
        return;
    };
    match request.content {
        Some(append_req::Content::Options(options)) => {
            let _ = convert::stream_name(options.stream_identifier);
            let _ = convert::expected(options.expected_stream_revision);
        }
        Some(append_req::Content::ProposedMessage(message)) => {
            let _ = convert::proposed_event(
                message.id,
                message.metadata,
                message.custom_metadata,
                message.data,
                &AppendLimits::default(),
            );
        }
        None => {}
    }
});
