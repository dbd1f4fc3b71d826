//! The events a projection writes, shaped as the real server writes them: not JSON, the link
//! text as data, and JSON metadata naming the projection version, the source's position, the
//! source event and its correlation id, keys in the real server's order.

use std::fmt::Write as _;

use bytes::Bytes;

use super::builtin::Emitted;
use crate::storage::{ProposedEvent, StoredEvent};

/// The content type the real server gives events written as not JSON.
const BINARY: &str = "application/octet-stream";

/// The event to append for `emitted`, caused by `source` at `position`.
pub fn proposed(
    emitted: Emitted,
    source: &StoredEvent,
    position: u64,
    link_version: &str,
) -> ProposedEvent {
    ProposedEvent {
        id: uuid::Uuid::new_v4().as_u128(),
        event_type: emitted.event_type.to_string(),
        content_type: BINARY.into(),
        custom_metadata: Bytes::from(metadata(&emitted, source, position, link_version)),
        data: Bytes::from(emitted.data),
    }
}

fn metadata(emitted: &Emitted, source: &StoredEvent, position: u64, link_version: &str) -> String {
    let mut out = String::with_capacity(160);
    out.push('{');
    let _ = write!(
        out,
        "\"$v\":{},\"$c\":{position},\"$p\":{position}",
        json_string(link_version)
    );
    if let Some(original) = &emitted.original_stream {
        let _ = write!(out, ",\"$o\":{}", json_string(original));
    }
    if emitted.deleted {
        out.push_str(",\"$deleted\":-1");
    }
    let caused_by = uuid::Uuid::from_u128(source.id_u128()).hyphenated();
    let _ = write!(out, ",\"$causedBy\":\"{caused_by}\"");
    if let Some(correlation) = correlation_id(source) {
        let _ = write!(out, ",\"$correlationId\":{}", json_string(&correlation));
    }
    out.push('}');
    out
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// `$correlationId` from a JSON source event's metadata, as text.
fn correlation_id(source: &StoredEvent) -> Option<String> {
    if source.content_type != "application/json" {
        return None;
    }
    let metadata: serde_json::Value = serde_json::from_slice(&source.custom_metadata).ok()?;
    match metadata.get("$correlationId")? {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projections::builtin::Builtin;

    fn source(metadata: &str) -> StoredEvent {
        StoredEvent {
            stream: "order-1".into(),
            revision: 0,
            id: Bytes::copy_from_slice(&0x11u128.to_be_bytes()),
            event_type: "Placed".into(),
            content_type: "application/json".into(),
            created: 0,
            custom_metadata: Bytes::copy_from_slice(metadata.as_bytes()),
            data: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn link_metadata_follows_the_real_servers_keys_and_order() {
        let event = source("{\"$correlationId\":\"c-1\"}");
        let emitted = Builtin::ByCategory.emit(&event).unwrap();
        let link = proposed(emitted, &event, 42, "3:-1:1:4");
        assert_eq!(link.event_type, "$>");
        assert_eq!(link.content_type, "application/octet-stream");
        assert_eq!(&link.data[..], b"0@order-1");
        assert_eq!(
            std::str::from_utf8(&link.custom_metadata).unwrap(),
            "{\"$v\":\"3:-1:1:4\",\"$c\":42,\"$p\":42,\"$o\":\"order-1\",\
             \"$causedBy\":\"00000000-0000-0000-0000-000000000011\",\"$correlationId\":\"c-1\"}"
        );
        // No correlation id without one, or from metadata that is not JSON.
        let plain = source("not json");
        let link = proposed(
            Builtin::Streams.emit(&plain).unwrap(),
            &plain,
            7,
            "1:-1:1:4",
        );
        assert_eq!(
            std::str::from_utf8(&link.custom_metadata).unwrap(),
            "{\"$v\":\"1:-1:1:4\",\"$c\":7,\"$p\":7,\
             \"$causedBy\":\"00000000-0000-0000-0000-000000000011\"}"
        );
    }
}
