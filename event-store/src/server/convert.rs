//! Between protocol messages and storage types.

use std::collections::HashMap;

use tonic::Status;

use super::errors;
use crate::proto::shared::{uuid as proto_uuid, StreamIdentifier, Uuid};
use crate::proto::streams::{self, read_resp::read_event::RecordedEvent};
use crate::storage::{ExpectedRevision, ProposedEvent, Recorded};

/// Limits on what one append may carry (the real server's defaults).
#[derive(Clone, Copy, Debug)]
pub struct AppendLimits {
    pub max_event_size: usize,
    pub max_append_size: usize,
}

impl Default for AppendLimits {
    fn default() -> Self {
        AppendLimits {
            max_event_size: 16 * 1024 * 1024,
            max_append_size: 256 * 1024 * 1024,
        }
    }
}

/// Longest stream name accepted; the real server's index keys are bounded too.
const MAX_STREAM_NAME: usize = 2048;

pub fn stream_name(identifier: Option<StreamIdentifier>) -> Result<String, Status> {
    let identifier = identifier.ok_or_else(|| errors::required("streamIdentifier"))?;
    let name = String::from_utf8(identifier.stream_name.to_vec())
        .map_err(|_| Status::invalid_argument("the stream name is not valid UTF-8"))?;
    if name.is_empty() {
        return Err(Status::invalid_argument("the stream name is empty"));
    }
    if name.len() > MAX_STREAM_NAME {
        return Err(Status::invalid_argument(format!(
            "the stream name is longer than {MAX_STREAM_NAME} bytes"
        )));
    }
    if name == "$all" {
        return Err(Status::invalid_argument(
            "'$all' is not a stream that can be written",
        ));
    }
    Ok(name)
}

pub fn identifier(name: &str) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: name.as_bytes().to_vec().into(),
    }
}

pub fn uuid_from_proto(id: Option<Uuid>) -> Result<u128, Status> {
    match id.and_then(|id| id.value) {
        Some(proto_uuid::Value::Structured(s)) => Ok(((s.most_significant_bits as u64 as u128)
            << 64)
            | s.least_significant_bits as u64 as u128),
        Some(proto_uuid::Value::String(s)) => ::uuid::Uuid::parse_str(&s)
            .map(|u| u.as_u128())
            .map_err(|_| Status::invalid_argument(format!("'{s}' is not a valid event id"))),
        None => Err(errors::required("id")),
    }
}

/// How ids are written back: structured or as a lower-case hyphenated string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UuidFormat {
    Structured,
    String,
}

pub fn uuid_to_proto(id: u128, format: UuidFormat) -> Uuid {
    let value = match format {
        UuidFormat::Structured => proto_uuid::Value::Structured(proto_uuid::Structured {
            most_significant_bits: (id >> 64) as u64 as i64,
            least_significant_bits: id as u64 as i64,
        }),
        UuidFormat::String => {
            proto_uuid::Value::String(::uuid::Uuid::from_u128(id).hyphenated().to_string())
        }
    };
    Uuid { value: Some(value) }
}

/// Checks one proposed event the way the real server does and turns it into a storage event.
pub fn proposed_event(
    id: Option<Uuid>,
    mut metadata: HashMap<String, String>,
    custom_metadata: bytes::Bytes,
    data: bytes::Bytes,
    limits: &AppendLimits,
) -> Result<ProposedEvent, Status> {
    let id = uuid_from_proto(id)?;
    let event_type = metadata
        .remove("type")
        .ok_or_else(|| errors::missing_metadata("type"))?;
    let content_type = metadata
        .remove("content-type")
        .ok_or_else(|| errors::missing_metadata("content-type"))?;
    let event = ProposedEvent {
        id,
        event_type,
        content_type,
        custom_metadata,
        data,
    };
    let size = event.size();
    if size > limits.max_event_size {
        return Err(errors::event_too_large(
            &::uuid::Uuid::from_u128(id).hyphenated().to_string(),
            size,
            limits.max_event_size,
        ));
    }
    Ok(event)
}

/// The protocol's representation of a stored event.
pub fn recorded_event(recorded: &Recorded, format: UuidFormat) -> RecordedEvent {
    let event = &recorded.event;
    let mut metadata = HashMap::with_capacity(3);
    metadata.insert("type".to_string(), event.event_type.clone());
    metadata.insert("content-type".to_string(), event.content_type.clone());
    metadata.insert("created".to_string(), event.created.to_string());
    RecordedEvent {
        id: Some(uuid_to_proto(event.id_u128(), format)),
        stream_identifier: Some(identifier(&event.stream)),
        stream_revision: event.revision,
        prepare_position: recorded.position,
        commit_position: recorded.position,
        metadata,
        custom_metadata: event.custom_metadata.clone(),
        data: event.data.clone(),
    }
}

/// Expected revisions arrive in four oneofs of the same shape; each converts here.
macro_rules! expected_revision_from {
    ($($oneof:ty => $exact:ident),* $(,)?) => {$(
        impl From<$oneof> for ExpectedRevision {
            fn from(value: $oneof) -> Self {
                type E = $oneof;
                match value {
                    E::$exact(r) => ExpectedRevision::Exact(r),
                    E::NoStream(_) => ExpectedRevision::NoStream,
                    E::Any(_) => ExpectedRevision::Any,
                    E::StreamExists(_) => ExpectedRevision::StreamExists,
                }
            }
        }
    )*};
}

expected_revision_from!(
    streams::append_req::options::ExpectedStreamRevision => Revision,
    streams::delete_req::options::ExpectedStreamRevision => Revision,
    streams::tombstone_req::options::ExpectedStreamRevision => Revision,
    streams::batch_append_req::options::ExpectedStreamPosition => StreamPosition,
);

/// The expected revision a request must carry.
pub fn expected(value: Option<impl Into<ExpectedRevision>>) -> Result<ExpectedRevision, Status> {
    value
        .map(Into::into)
        .ok_or_else(|| errors::required("expectedStreamRevision"))
}
