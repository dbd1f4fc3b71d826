//! What a read or subscription brings over the wire: any bytes decoded as `ReadReq`, then its
//! stream and its `$all` filter (a regular expression or prefixes, as clients send them) checked
//! as the event store checks them: a filter or a status, never a panic or a runaway regex.
#![no_main]

use event_store::proto::streams::read_req::options::StreamOption;
use event_store::proto::streams::ReadReq;
use event_store::server::{convert, filter::EventFilter};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|input: &[u8]| {
    let Ok(request) = ReadReq::decode(input) else {
        return;
    };
    let Some(options) = request.options else {
        return;
    };
    if let Some(StreamOption::Stream(stream)) = options.stream_option {
        let _ = convert::stream_name(stream.stream_identifier);
    }
    let _ = EventFilter::from_proto(options.filter_option);
});
