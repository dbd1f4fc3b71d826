//! Hostile requests: any bytes decoded as an append or a read, then checked as the server
//! checks them (stream names, expected revisions, event ids and sizes, `$all` filters with
//! their regular expressions), answer a value or a status, never a panic. The seeded, short
//! version of the `append_request` and `read_request` fuzz targets (`fuzz/`; RELIABILITY.md
//! has their long runs).

use event_store::proto::streams::read_req::options::StreamOption;
use event_store::proto::streams::{append_req, AppendReq, ReadReq};
use event_store::server::{convert, filter::EventFilter, AppendLimits};
use proptest::prelude::*;
use prost::Message;

fn append_anything(input: &[u8]) {
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
}

fn read_anything(input: &[u8]) {
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
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4_000,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0057_07e5),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_append_bytes_are_checked_without_panicking(input: Vec<u8>) {
        append_anything(&input);
    }

    #[test]
    fn any_read_bytes_are_checked_without_panicking(input: Vec<u8>) {
        read_anything(&input);
    }
}
