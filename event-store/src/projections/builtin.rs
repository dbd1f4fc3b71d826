//! The four built-in projections as plain functions: which events each one looks at, and the
//! one event (if any) it writes for each. Kept free of storage and timing so that the rules the
//! real server follows can be read, and tested, on their own.

use crate::storage::{is_metastream, StoredEvent, DELETED};

/// A system projection this store runs natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Builtin {
    /// `$streams`: the first event of every stream, linked into `$streams`.
    Streams,
    /// `$stream_by_category`: the name of every new stream, into `$category-<category>`.
    StreamByCategory,
    /// `$by_category`: every event, linked into `$ce-<category>`.
    ByCategory,
    /// `$by_event_type`: every event, linked into `$et-<event type>`.
    ByEventType,
}

/// The event type of a link: its data is `<revision>@<stream>`.
pub const LINK: &str = "$>";
/// The event type of a stream reference: its data is a stream name.
pub const STREAM_REFERENCE: &str = "$@";

impl Builtin {
    /// In the order the real server creates them, which is also where their ids come from.
    pub const ALL: [Builtin; 4] = [
        Builtin::Streams,
        Builtin::StreamByCategory,
        Builtin::ByCategory,
        Builtin::ByEventType,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Streams => "$streams",
            Builtin::StreamByCategory => "$stream_by_category",
            Builtin::ByCategory => "$by_category",
            Builtin::ByEventType => "$by_event_type",
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The projection id the real server gives it: its event number in `$projections-$all`,
    /// after `$ProjectionsInitialized` at 0. It is the first part of each link's `$v`.
    pub fn projection_id(self) -> u64 {
        match self {
            Builtin::Streams => 1,
            Builtin::StreamByCategory => 2,
            Builtin::ByCategory => 3,
            Builtin::ByEventType => 4,
        }
    }

    /// Whether link events are among what it reads (all but `$by_event_type`).
    fn includes_links(self) -> bool {
        !matches!(self, Builtin::ByEventType)
    }

    /// Whether it looks at an event at all: links only if it includes them, and no event of a
    /// system stream (`$...`) except the metadata of a user stream (`$$order-1`).
    pub fn reads(self, event: &StoredEvent) -> bool {
        if !self.includes_links() && event.event_type == LINK {
            return false;
        }
        let stream = event.stream.as_str();
        !is_system(stream) || (is_metastream(stream) && !is_system(&stream[2..]))
    }

    /// What it writes for an event it reads, if anything.
    pub fn emit(self, event: &StoredEvent) -> Option<Emitted> {
        match self {
            Builtin::Streams => (event.revision == 0).then(|| Emitted {
                stream: "$streams".into(),
                event_type: LINK,
                data: format!("0@{}", event.stream),
                original_stream: None,
                deleted: false,
            }),
            Builtin::StreamByCategory => {
                if event.revision != 0 {
                    return None;
                }
                let category = category(&event.stream)?;
                Some(Emitted {
                    stream: format!("$category-{category}"),
                    event_type: STREAM_REFERENCE,
                    data: event.stream.clone(),
                    original_stream: None,
                    deleted: false,
                })
            }
            Builtin::ByCategory => {
                let deleted = deleted_stream(event);
                let original = deleted.unwrap_or(&event.stream);
                let category = category(original)?;
                // A link in a user stream is linked again to its own target.
                let data = if event.event_type == LINK {
                    String::from_utf8_lossy(&event.data).into_owned()
                } else {
                    format!("{}@{}", event.revision, event.stream)
                };
                Some(Emitted {
                    stream: format!("$ce-{category}"),
                    event_type: LINK,
                    data,
                    original_stream: Some(original.to_string()),
                    deleted: deleted.is_some(),
                })
            }
            Builtin::ByEventType => {
                if event.event_type == LINK {
                    return None;
                }
                // A deletion is indexed as `$deleted`, pointing at the deleted stream with the
                // revision of the deletion's own event, as the real server writes it.
                let deleted = deleted_stream(event);
                let (event_type, stream) = match deleted {
                    Some(deleted) => ("$deleted", deleted),
                    None => (event.event_type.as_str(), event.stream.as_str()),
                };
                Some(Emitted {
                    stream: format!("$et-{event_type}"),
                    event_type: LINK,
                    data: format!("{}@{stream}", event.revision),
                    original_stream: None,
                    deleted: deleted.is_some(),
                })
            }
        }
    }
}

/// One event a projection writes for a source event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emitted {
    pub stream: String,
    pub event_type: &'static str,
    pub data: String,
    /// `$o` in the metadata: the stream the source belongs to (`$by_category` only).
    pub original_stream: Option<String>,
    /// `$deleted: -1` in the metadata: the source marks its stream deleted.
    pub deleted: bool,
}

fn is_system(stream: &str) -> bool {
    stream.starts_with('$')
}

/// The category of a stream: what comes before its first `-`, for a stream that is not a
/// system stream and has something before that `-`.
pub fn category(stream: &str) -> Option<&str> {
    if is_system(stream) {
        return None;
    }
    match stream.find('-') {
        Some(at) if at > 0 => Some(&stream[..at]),
        _ => None,
    }
}

/// The stream an event marks as deleted: a tombstone, or the metadata a soft delete writes
/// (`$tb` at the deleted mark) in the stream's metastream.
fn deleted_stream(event: &StoredEvent) -> Option<&str> {
    match event.stream.strip_prefix("$$") {
        Some(original) => {
            if event.event_type != "$metadata" {
                return None;
            }
            let metadata: serde_json::Value = serde_json::from_slice(&event.data).ok()?;
            (metadata.get("$tb")?.as_u64()? == DELETED).then_some(original)
        }
        None => (event.event_type == "$streamDeleted").then_some(event.stream.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(stream: &str, revision: u64, event_type: &str, data: &str) -> StoredEvent {
        StoredEvent {
            stream: stream.into(),
            revision,
            id: Bytes::from_static(&[0; 16]),
            event_type: event_type.into(),
            content_type: "application/json".into(),
            created: 0,
            custom_metadata: Bytes::new(),
            data: Bytes::copy_from_slice(data.as_bytes()),
        }
    }

    #[test]
    fn the_category_is_what_comes_before_the_first_dash() {
        assert_eq!(category("order-1"), Some("order"));
        assert_eq!(category("shopping-cart-1"), Some("shopping"));
        assert_eq!(category("order-"), Some("order"));
        assert_eq!(category("order"), None);
        assert_eq!(category("-1"), None);
        assert_eq!(category("$ce-order"), None);
    }

    #[test]
    fn system_streams_are_skipped_but_user_metadata_is_read() {
        let b = Builtin::ByEventType;
        assert!(b.reads(&event("order-1", 0, "Placed", "{}")));
        assert!(!b.reads(&event("$ce-order", 0, "$>", "0@order-1")));
        assert!(!b.reads(&event("$persistentsubscription-x", 0, "E", "")));
        assert!(b.reads(&event("$$order-1", 0, "$metadata", "{}")));
        assert!(!b.reads(&event("$$$ce-order", 0, "$metadata", "{}")));
        // Links in a user stream: only the projections that include links read them.
        assert!(!b.reads(&event("mine-1", 0, "$>", "0@order-1")));
        assert!(Builtin::ByCategory.reads(&event("mine-1", 0, "$>", "0@order-1")));
    }

    #[test]
    fn by_category_links_every_event_of_a_categorised_stream() {
        let emitted = Builtin::ByCategory
            .emit(&event("order-1", 3, "Placed", "{}"))
            .unwrap();
        assert_eq!(emitted.stream, "$ce-order");
        assert_eq!(emitted.event_type, "$>");
        assert_eq!(emitted.data, "3@order-1");
        assert_eq!(emitted.original_stream.as_deref(), Some("order-1"));
        assert!(!emitted.deleted);
        assert_eq!(
            Builtin::ByCategory.emit(&event("order", 0, "Placed", "{}")),
            None
        );
        // A link is linked again to its target.
        let relinked = Builtin::ByCategory
            .emit(&event("mine-1", 0, "$>", "7@order-1"))
            .unwrap();
        assert_eq!(
            (relinked.stream.as_str(), relinked.data.as_str()),
            ("$ce-mine", "7@order-1")
        );
    }

    #[test]
    fn deletions_are_linked_as_the_real_server_links_them() {
        let soft = event(
            "$$order-1",
            2,
            "$metadata",
            &format!("{{\"$tb\":{}}}", i64::MAX),
        );
        let by_category = Builtin::ByCategory.emit(&soft).unwrap();
        assert_eq!(by_category.stream, "$ce-order");
        assert_eq!(by_category.data, "2@$$order-1");
        assert_eq!(by_category.original_stream.as_deref(), Some("order-1"));
        assert!(by_category.deleted);
        let by_type = Builtin::ByEventType.emit(&soft).unwrap();
        assert_eq!(by_type.stream, "$et-$deleted");
        assert_eq!(by_type.data, "2@order-1");
        assert!(by_type.deleted);

        let tombstone = event("order-1", TOMBSTONE, "$streamDeleted", "");
        let by_type = Builtin::ByEventType.emit(&tombstone).unwrap();
        assert_eq!(by_type.stream, "$et-$deleted");
        assert_eq!(by_type.data, format!("{TOMBSTONE}@order-1"));
        // Ordinary metadata is indexed under its type, and has no category.
        let metadata = event("$$order-1", 0, "$metadata", "{\"$maxCount\":3}");
        assert_eq!(
            Builtin::ByEventType.emit(&metadata).unwrap().stream,
            "$et-$metadata"
        );
        assert_eq!(Builtin::ByCategory.emit(&metadata), None);
    }

    const TOMBSTONE: u64 = i64::MAX as u64;

    #[test]
    fn streams_and_stream_by_category_take_first_events_only() {
        let first = event("order-1", 0, "Placed", "{}");
        let later = event("order-1", 1, "Shipped", "{}");
        let streams = Builtin::Streams.emit(&first).unwrap();
        assert_eq!(
            (
                streams.stream.as_str(),
                streams.event_type,
                streams.data.as_str()
            ),
            ("$streams", "$>", "0@order-1")
        );
        assert_eq!(Builtin::Streams.emit(&later), None);
        let by_category = Builtin::StreamByCategory.emit(&first).unwrap();
        assert_eq!(
            (
                by_category.stream.as_str(),
                by_category.event_type,
                by_category.data.as_str()
            ),
            ("$category-order", "$@", "order-1")
        );
        assert_eq!(Builtin::StreamByCategory.emit(&later), None);
        // The first metadata of a user stream is a stream of its own for `$streams`.
        let metadata = event("$$order-1", 0, "$metadata", "{}");
        assert_eq!(
            Builtin::Streams.emit(&metadata).unwrap().data,
            "0@$$order-1"
        );
        assert_eq!(Builtin::StreamByCategory.emit(&metadata), None);
    }
}
