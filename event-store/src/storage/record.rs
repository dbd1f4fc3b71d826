//! What the store keeps on disk: events and per-stream state, encoded with protobuf so that
//! fields can be added later without rewriting the log.

use bytes::Bytes;

/// One event as written to the log. Its global position is the key it is stored under.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEvent {
    #[prost(string, tag = "1")]
    pub stream: String,
    #[prost(uint64, tag = "2")]
    pub revision: u64,
    /// The client's event id, 16 bytes big-endian.
    #[prost(bytes = "bytes", tag = "3")]
    pub id: Bytes,
    #[prost(string, tag = "4")]
    pub event_type: String,
    #[prost(string, tag = "5")]
    pub content_type: String,
    /// When it was written, in 100 ns ticks since the Unix epoch (the protocol's unit).
    #[prost(int64, tag = "6")]
    pub created: i64,
    #[prost(bytes = "bytes", tag = "7")]
    pub custom_metadata: Bytes,
    #[prost(bytes = "bytes", tag = "8")]
    pub data: Bytes,
}

impl StoredEvent {
    pub fn id_u128(&self) -> u128 {
        let mut buf = [0u8; 16];
        if self.id.len() == 16 {
            buf.copy_from_slice(&self.id);
        }
        u128::from_be_bytes(buf)
    }
}

/// What is stored of a stream besides its events. It changes only when the stream is created,
/// deleted or given metadata, so that an ordinary append writes nothing here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamRecord {
    /// Short numeric id used in the index keys instead of the name.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(bool, tag = "3")]
    pub tombstoned: bool,
    #[prost(uint64, optional, tag = "4")]
    pub truncate_before: Option<u64>,
    #[prost(uint64, optional, tag = "5")]
    pub max_count: Option<u64>,
    #[prost(uint64, optional, tag = "6")]
    pub max_age: Option<u64>,
}

/// A stream's state: its record plus its newest revision, which the index gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamInfo {
    pub id: u64,
    /// The revision of the newest event, absent while the stream has none.
    pub last_revision: Option<u64>,
    /// A tombstoned stream can never be written or read again.
    pub tombstoned: bool,
    /// `$tb` from the stream's metadata: events before it are hidden. `DELETED` marks a soft delete.
    pub truncate_before: Option<u64>,
    /// `$maxCount` from the stream's metadata: only that many newest events are visible.
    pub max_count: Option<u64>,
    /// `$maxAge` from the stream's metadata, in seconds: older events are not visible.
    pub max_age: Option<u64>,
}

impl StreamInfo {
    pub fn from_record(record: StreamRecord, last_revision: Option<u64>) -> StreamInfo {
        StreamInfo {
            id: record.id,
            last_revision,
            tombstoned: record.tombstoned,
            truncate_before: record.truncate_before,
            max_count: record.max_count,
            max_age: record.max_age,
        }
    }

    pub fn record(&self) -> StreamRecord {
        StreamRecord {
            id: self.id,
            tombstoned: self.tombstoned,
            truncate_before: self.truncate_before,
            max_count: self.max_count,
            max_age: self.max_age,
        }
    }
}

/// The `$tb` value a soft delete writes (the protocol's `long.MaxValue`).
pub const DELETED: u64 = i64::MAX as u64;

/// The revision a tombstone event is written at (also `long.MaxValue`).
pub const TOMBSTONE_REVISION: u64 = i64::MAX as u64;

impl StreamInfo {
    pub fn is_soft_deleted(&self) -> bool {
        self.truncate_before == Some(DELETED)
    }

    /// The first revision a reader may see, given `$tb` and `$maxCount` (metastreams keep one).
    pub fn first_visible(&self, stream: &str) -> u64 {
        let tb = self.truncate_before.unwrap_or(0);
        let max_count = self
            .max_count
            .or_else(|| is_metastream(stream).then_some(1));
        let by_count = match (max_count, self.last_revision) {
            (Some(max), Some(last)) => (last + 1).saturating_sub(max),
            _ => 0,
        };
        tb.max(by_count)
    }
}

impl StreamInfo {
    /// Whether `$maxAge` hides this event of the stream at `now` (ticks).
    pub fn is_expired(&self, event: &StoredEvent, now: i64) -> bool {
        self.max_age.is_some_and(|seconds| {
            let age = i64::try_from(seconds.saturating_mul(10_000_000)).unwrap_or(i64::MAX);
            event.created < now.saturating_sub(age)
        })
    }
}

/// `$$name` holds the metadata of stream `name`.
pub fn is_metastream(stream: &str) -> bool {
    stream.starts_with("$$")
}

/// Now, in the protocol's 100 ns ticks since the Unix epoch.
pub fn now_ticks() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (since.as_nanos() / 100) as i64
}
