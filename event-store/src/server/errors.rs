//! Error statuses shaped as the real server shapes them: the client reads the `exception`
//! trailer to tell a deleted stream from other failures.

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::storage::{ExpectedRevision, StoreError};

fn with_trailers(code: Code, message: String, trailers: &[(&'static str, String)]) -> Status {
    let mut metadata = MetadataMap::new();
    for (key, value) in trailers {
        // Stream names may hold characters a header cannot; such a trailer is left out.
        if let Ok(value) = MetadataValue::try_from(value.as_str()) {
            metadata.insert(*key, value);
        }
    }
    Status::with_metadata(code, message, metadata)
}

pub fn stream_deleted(stream: &str) -> Status {
    with_trailers(
        Code::FailedPrecondition,
        format!("Event stream '{stream}' is deleted."),
        &[
            ("exception", "stream-deleted".into()),
            ("stream-name", stream.into()),
        ],
    )
}

/// The protocol's numbers for an expectation: -2 any, -1 no stream, -4 stream exists.
pub fn expected_version_number(expected: ExpectedRevision) -> i64 {
    match expected {
        ExpectedRevision::Any => -2,
        ExpectedRevision::NoStream => -1,
        ExpectedRevision::StreamExists => -4,
        ExpectedRevision::Exact(r) => r as i64,
    }
}

/// How Delete and Tombstone report a failed concurrency check (Append answers in its body).
pub fn wrong_expected_version(
    stream: &str,
    expected: ExpectedRevision,
    current: Option<u64>,
) -> Status {
    let expected = expected_version_number(expected);
    let actual = current.map_or(-1, |c| c as i64);
    with_trailers(
        Code::FailedPrecondition,
        format!(
            "Delete failed due to WrongExpectedVersion. Stream: {stream}, Expected version: {expected}, Actual version: {actual}"
        ),
        &[
            ("exception", "wrong-expected-version".into()),
            ("stream-name", stream.into()),
            ("expected-version", expected.to_string()),
            ("actual-version", actual.to_string()),
        ],
    )
}

pub fn missing_metadata(property: &str) -> Status {
    with_trailers(
        Code::InvalidArgument,
        format!("Required Metadata Property '{property}' is missing"),
        &[
            ("exception", "missing-required-metadata-property".into()),
            ("required-metadata-properties", "type,content-type".into()),
        ],
    )
}

pub fn event_too_large(event_id: &str, size: usize, max: usize) -> Status {
    with_trailers(
        Code::InvalidArgument,
        format!(
            "Event with Id: {event_id}, Size: {size}, exceeds Maximum Append Event Size of {max}."
        ),
        &[
            ("exception", "maximum-append-event-size-exceeded".into()),
            ("maximum-append-event-size", max.to_string()),
            ("event-id", event_id.into()),
            ("proposed-append-event-size", size.to_string()),
        ],
    )
}

pub fn append_too_large(max: usize) -> Status {
    with_trailers(
        Code::InvalidArgument,
        format!("Maximum Append Size of {max} Exceeded."),
        &[
            ("exception", "maximum-append-size-exceeded".into()),
            ("maximum-append-size", max.to_string()),
        ],
    )
}

pub fn access_denied() -> Status {
    with_trailers(
        Code::PermissionDenied,
        "Access Denied".into(),
        &[("exception", "access-denied".into())],
    )
}

pub fn required(name: &str) -> Status {
    Status::invalid_argument(format!("'{name}' is a required argument"))
}

/// Failures of the store itself, after the concurrency checks have been handled by the caller.
pub fn from_store(error: StoreError) -> Status {
    match error {
        StoreError::StreamDeleted(stream) => stream_deleted(&stream),
        StoreError::WrongExpectedVersion { expected, current } => {
            // Callers answer this in their own shape; this is the fallback.
            wrong_expected_version("", expected, current)
        }
        StoreError::Closed => Status::unavailable("Server Is Not Ready"),
        StoreError::DiskFull => Status::resource_exhausted(
            "the event store's disk is full: appends are refused until there is space; reads go on",
        ),
        StoreError::Io(message) => {
            tracing::error!(%message, "storage I/O failure");
            Status::unavailable("storage I/O failure; try again")
        }
        StoreError::Storage(message) => {
            tracing::error!(%message, "storage failure");
            Status::internal("storage failure")
        }
    }
}
